import math
import random

import pytest
import torch

from losskit import get
from losskit.multilabel.bce import binary_cross_entropy
from losskit.multilabel.pu_mlc import (
    PUMLCLoss,
    pu_mixup_batch,
    pu_mixup_loss,
    pu_mixup_targets,
    pu_mlc_loss,
)
from tests.contract import check_gradcheck, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
)


def slow_pu_mlc(x, y, mask, alpha, gamma):
    """Per-sample values of the documented split, by loops over classes and samples."""
    n, num_labels = x.shape
    per = [x.new_zeros(()) for _ in range(n)]
    counted = sum(1 for i in range(n) if mask[i].any())
    for c in range(num_labels):
        unl = [i for i in range(n) if mask[i, c]]
        pos = [i for i in unl if y[i, c] == 1]
        if not unl:
            continue
        vals = [float(x[i, c].detach()) for i in unl]
        mu = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        temp = 1.0 if std == 0 else min(alpha * std, 1.0)
        p = {i: torch.sigmoid(x[i, c] / temp) for i in unl}
        mean_p = sum(p[i] for i in unl) / len(unl)
        w = float(mean_p.detach()) ** gamma
        for i in unl:
            per[i] = per[i] + w * torch.log(mean_p) / len(unl)
        for i in pos:
            per[i] = per[i] - torch.log(p[i]) / len(pos)
    return torch.stack(per) * counted


@pytest.mark.parametrize(("alpha", "gamma"), [(0.2, 0.55), (1.0, 0.0), (1.0, 0.55), (2.0, 0.85)])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_slow_reference(alpha, gamma, masked):
    x, y, mask = random_multilabel(7, 5, seed=3)
    y[:, 4] = 0  # a class without positives: only its unlabeled term
    mask = mask if masked else torch.ones_like(mask)
    xg = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    kw = {"alpha": alpha, "gamma": gamma}
    out = pu_mlc_loss(xg, y, mask=mask if masked else None, reduction="none", **kw)
    ref = slow_pu_mlc(xr, y, mask, alpha, gamma)
    torch.testing.assert_close(out, ref)
    coef = torch.linspace(0.5, 2.0, x.shape[0], dtype=x.dtype)
    (out * coef).sum().backward()
    (ref * coef).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_mean_is_the_sum_of_per_class_losses_over_known_entries():
    x, y, mask = random_multilabel(8, 5, seed=4)
    total = sum(
        pu_mlc_loss(x[mask[:, c], c : c + 1], y[mask[:, c], c : c + 1])
        for c in range(5)
        if mask[:, c].any()
    )
    torch.testing.assert_close(pu_mlc_loss(x, y, mask=mask), total)


def test_jensen_bound_with_gamma_zero_and_unit_temperature():
    kw = {"alpha": 1e6, "gamma": 0.0}  # T = 1 whenever a column's std is not 0
    for seed in range(5):
        x, y, _ = random_multilabel(9, 4, seed=seed, scale=3.0)
        for c in range(4):
            n_pos = int(y[:, c].sum())
            if n_pos == 0:
                continue
            value = pu_mlc_loss(x[:, c : c + 1], y[:, c : c + 1], **kw)
            assert value > math.log(n_pos / 9)
    # equality: non-positives at p = 0, positives sharing one p
    y = torch.tensor([[1.0], [1.0], [0.0], [1.0], [0.0], [0.0]], dtype=torch.float64)
    x = torch.where(y > 0, 40.0, -40.0).to(torch.float64)
    bound = torch.tensor(math.log(3 / 6), dtype=torch.float64)
    torch.testing.assert_close(pu_mlc_loss(x, y, **kw), bound, rtol=0, atol=1e-12)
    x[0] = -2.0  # positives with different p: strictly above the bound
    assert pu_mlc_loss(x, y, **kw) > bound + 0.1


def test_invariant_to_permuting_the_batch():
    x, y, mask = random_multilabel(8, 5, seed=5)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(
            pu_mlc_loss(x[perm], y[perm], mask=mask[perm], reduction=reduction),
            pu_mlc_loss(x, y, mask=mask, reduction=reduction),
        )
    torch.testing.assert_close(
        pu_mlc_loss(x[perm], y[perm], mask=mask[perm], reduction="none"),
        pu_mlc_loss(x, y, mask=mask, reduction="none")[perm],
    )


def test_class_without_positives_pushes_all_its_logits_down():
    x, _, _ = random_multilabel(6, 3, seed=6)
    y = torch.zeros_like(x)
    xg = x.clone().requires_grad_(True)
    out = pu_mlc_loss(xg, y, alpha=1e6, gamma=0.0)
    torch.testing.assert_close(out, torch.log(torch.sigmoid(x).mean(dim=0)).sum())
    out.backward()
    assert (xg.grad > 0).all()


def test_temperature_makes_small_logits_scale_free_and_is_one_for_constant_logits():
    x, y, mask = random_multilabel(8, 4, seed=7, scale=0.3)
    assert (0.5 * x.std(dim=0) < 1).all()  # alpha * std < 1: T_c = alpha * std_c
    for m in (None, mask):
        torch.testing.assert_close(
            pu_mlc_loss(0.5 * x, y, mask=m, alpha=0.5), pu_mlc_loss(x, y, mask=m, alpha=0.5)
        )
    # all logits equal (e.g. a zero-initialised head): T = 1, L_c = (0.5^gamma - 1) log 0.5
    zeros = torch.zeros_like(x).requires_grad_(True)
    out = pu_mlc_loss(zeros, y, gamma=0.55)
    torch.testing.assert_close(out, torch.tensor(4 * (0.5**0.55 - 1) * math.log(0.5)).double())
    out.backward()
    assert torch.isfinite(zeros.grad).all()


def test_contract():
    x, y, mask = random_multilabel()
    check_reductions(pu_mlc_loss, x, y)
    check_reductions(pu_mlc_loss, x, y, mask=mask)
    # T and w are detached, so gradcheck (finite differences of the full function) applies
    # where they are locally constant: gamma = 0 and alpha * std >= 1 (T = 1)
    check_gradcheck(pu_mlc_loss, x, y, mask=mask, alpha=1e3, gamma=0.0)
    check_mask_zero_grad(pu_mlc_loss, x, y, mask)
    check_mask_zero_grad(pu_mlc_loss, x, y, mask, alpha=0.3)
    # large logits (T = 1, logits used as they are) and small ones (T < 1 rescales them)
    check_half_precision(pu_mlc_loss, y.float(), magnitude=30.0)
    check_half_precision(pu_mlc_loss, y.float(), magnitude=0.1)
    check_bad_inputs(pu_mlc_loss)
    for kw, name in [({"alpha": 0.0}, "alpha"), ({"gamma": -0.1}, "gamma")]:
        with pytest.raises(ValueError, match=name):
            pu_mlc_loss(x, y, **kw)
    for kw, name in [
        ({"alpha": -1.0}, "alpha"),
        ({"gamma": float("nan")}, "gamma"),
        ({"mixup_beta": 0.0}, "mixup_beta"),
        ({"mixup_weight": -1.0}, "mixup_weight"),
        ({"reduction": "avg"}, "reduction"),
    ]:
        with pytest.raises(ValueError, match=name):
            PUMLCLoss(**kw)
    module = PUMLCLoss(alpha=0.5, gamma=0.3, reduction="sum")
    torch.testing.assert_close(
        module(x, y, mask), pu_mlc_loss(x, y, mask=mask, alpha=0.5, gamma=0.3, reduction="sum")
    )
    entry = get("pu_mlc")
    assert entry.papers == (43,) and entry.function is pu_mlc_loss
    built = entry.build()
    assert (built.alpha, built.gamma, built.mixup) == (1.0, 0.55, True)


def test_mixup_targets_and_batch():
    x, y, mask = random_multilabel(6, 5, seed=8)
    inputs = torch.randn(6, 3, dtype=torch.float64)
    probs = torch.sigmoid(x)
    t = pu_mixup_targets(y, probs)
    assert (t[y > 0] == 1).all()
    assert torch.equal(t[y == 0], probs[y == 0])
    tm = pu_mixup_targets(y, probs, mask=mask)
    assert torch.equal(tm[(y > 0) & ~mask], probs[(y > 0) & ~mask])
    # lam = 1 gives back the batch and its targets
    same = pu_mixup_batch(inputs, y, probs, 1.0, torch.arange(6).flip(0), mask=mask)
    assert torch.equal(same.inputs, inputs) and torch.equal(same.target, tm)
    assert torch.equal(same.mask, mask)
    # general lam: row k mixes k and perm[k]; entries positive in both sources stay 1
    perm = torch.tensor([5, 3, 4])
    mixed = pu_mixup_batch(inputs, y, probs, 0.3, perm, mask=mask)
    for k in range(3):
        j = int(perm[k])
        torch.testing.assert_close(mixed.inputs[k], 0.3 * inputs[k] + 0.7 * inputs[j])
        torch.testing.assert_close(mixed.target[k], 0.3 * tm[k] + 0.7 * tm[j])
        assert torch.equal(mixed.mask[k], mask[k] & mask[j])
        both = (y[k] > 0) & (y[j] > 0) & mask[k] & mask[j]
        assert (mixed.target[k][both] == 1).all()
    bad = [
        ({"lam": 1.5}, "lam"),
        ({"perm": torch.tensor([0, 9])}, "perm"),
        ({"perm": torch.tensor([0.0])}, "perm"),
        ({"probs": probs + 1}, "probs"),
        ({"inputs": inputs[:3]}, "inputs"),
    ]
    for kw, name in bad:
        args = {"inputs": inputs, "target": y, "probs": probs, "lam": 0.5, "perm": perm, **kw}
        with pytest.raises(ValueError, match=name):
            pu_mixup_batch(**args)


def test_mixup_target_gradient_follows_detach():
    x, y, _ = random_multilabel(4, 3, seed=9)
    inputs, perm = torch.randn(4, 2, dtype=x.dtype), torch.tensor([2, 3])
    logits = x.clone().requires_grad_(True)
    kept = pu_mixup_batch(inputs, y, torch.sigmoid(logits), 0.4, perm)
    pu_mixup_loss(torch.zeros(2, 3, dtype=x.dtype), kept.target).backward()
    assert logits.grad.abs().sum() > 0  # the code's behaviour: the target carries gradient
    cut = pu_mixup_batch(inputs, y, torch.sigmoid(logits), 0.4, perm, detach=True)
    assert not cut.target.requires_grad


def slow_mixup_loss(z, t, mask):
    rows = []
    for k in range(z.shape[0]):
        if not mask[k].any():
            continue
        terms = [
            (torch.log(t[k, c]) - torch.log(torch.sigmoid(z[k, c]))) ** 2
            for c in range(z.shape[1])
            if mask[k, c]
        ]
        rows.append(sum(terms))
    return sum(rows) / len(rows)


def test_mixup_loss_matches_slow_reference_and_vanishes_at_its_target():
    z, _, mask = random_multilabel(5, 4, seed=10)
    mask[1] = False
    t = torch.rand(5, 4, dtype=z.dtype, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    zg, zr = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = pu_mixup_loss(zg, t, mask=mask)
    ref = slow_mixup_loss(zr, t, mask)
    torch.testing.assert_close(out, ref)
    out.backward()
    ref.backward()
    torch.testing.assert_close(zg.grad, zr.grad)
    assert (zg.grad[~mask] == 0).all()
    full_rows = mask.clone()
    full_rows[1, 0] = True  # a row without a known entry would drop out of "mean"
    check_reductions(lambda a, b, **kw: pu_mixup_loss(a, b, mask=full_rows, **kw), z, t)
    torch.testing.assert_close(pu_mixup_loss(torch.logit(t), t), torch.zeros((), dtype=z.dtype))
    zh = (3 * z).to(torch.bfloat16)
    out_h = pu_mixup_loss(zh, t.float())
    assert out_h.dtype == torch.bfloat16 and torch.isfinite(out_h)
    with pytest.raises(ValueError, match="mixed_target"):
        pu_mixup_loss(z, t + 1)
    with pytest.raises(ValueError, match="mixed_logits"):
        pu_mixup_loss(z[0], t[0])


def _linear_setup(n=8, seed=11):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(3, 4).double()
    inputs = torch.randn(n, 3, dtype=torch.float64, generator=g)
    y = (torch.rand(n, 4, generator=g) < 0.4).double()
    return model, inputs, y


def test_module_regularizer_is_the_mixup_pipeline_and_deterministic_by_seed():
    model, inputs, y = _linear_setup(9)
    module = PUMLCLoss(seed=3)
    logits = model(inputs)
    reg = module.input_regularizer(model, inputs, logits, y)
    rng = random.Random(3)
    lam = rng.betavariate(0.3, 0.3)
    perm = torch.tensor(rng.sample(range(4), 4)) + 5  # first half with the shuffled last half
    mixed = pu_mixup_batch(inputs, y, torch.sigmoid(logits), lam, perm)
    torch.testing.assert_close(reg, pu_mixup_loss(model(mixed.inputs), mixed.target))
    again = PUMLCLoss(seed=3).input_regularizer(model, inputs, logits, y)
    torch.testing.assert_close(again, reg)
    other = PUMLCLoss(seed=4).input_regularizer(model, inputs, logits, y)
    assert not torch.equal(other, reg)
    summed = PUMLCLoss(seed=3, reduction="sum").input_regularizer(model, inputs, logits, y)
    torch.testing.assert_close(summed, 9 * reg)
    reg.backward()
    assert model.weight.grad.abs().sum() > 0
    assert PUMLCLoss(mixup=False).input_regularizer(model, inputs, logits, y) == 0
    assert PUMLCLoss().input_regularizer(model, inputs[:1], logits[:1], y[:1]) == 0


def _train(xtr, ytr, objective, seed, steps, lr=0.01):
    torch.manual_seed(seed)
    model = torch.nn.Linear(xtr.shape[1], ytr.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (128,), generator=g)
        xb, yb = xtr[idx], ytr[idx]
        z = model(xb)
        if objective is None:
            loss = binary_cross_entropy(z, yb)
        else:
            loss = objective(z, yb) + objective.input_regularizer(model, xb, z, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def map_pu_and_bce(seed, steps=200, n_train=1500):
    """Test mAP of a linear model trained on 20 labels with half the positives hidden (the
    rest unlabeled, i.e. 0) by PU-MLC and by BCE, and the mean label prevalence."""
    from sklearn.datasets import make_multilabel_classification
    from sklearn.metrics import average_precision_score

    x, y = make_multilabel_classification(
        n_samples=n_train + 1000, n_features=30, n_classes=20, length=200, random_state=seed
    )
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-8)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    hide = (torch.rand(y.shape, generator=torch.Generator().manual_seed(seed)) < 0.5) & (y > 0)
    ytr = torch.where(hide, 0.0, y)[:n_train]
    yt = y[n_train:].numpy()
    keep = yt.sum(0) > 0
    out = {}
    for name, objective in (("bce", None), ("pu", PUMLCLoss(seed=seed))):
        model = _train(x[:n_train], ytr, objective, seed, steps)
        with torch.no_grad():
            scores = model(x[n_train:]).numpy()
        out[name] = average_precision_score(yt[:, keep], scores[:, keep])
    return out["pu"], out["bce"], float(yt[:, keep].mean())


def test_positive_unlabeled_training_is_not_worse_than_bce_on_map():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is the fastest
    try:
        pu, bce, chance = map_pu_and_bce(0)
    finally:
        torch.set_num_threads(threads)
    # Measured on seeds 0-19: PU-MLC - BCE = -0.009 mAP on average (std 0.013, min -0.033),
    # PU-MLC >= 6x the chance mAP. Under uniformly hidden positives BCE with unknown-as-
    # negative ranks consistently, so PU-MLC is not expected to beat it here; this asserts
    # non-inferiority within 0.05 and that PU-MLC learns.
    assert pu > bce - 0.05
    assert pu > 3 * chance
