import math

import pytest
import torch

from losskit import get
from losskit.multilabel.balanced_head import (
    BranchLogits,
    HeadTailBalancedClassifier,
    branch_sample_weights,
    head_tail_balanced_loss,
)
from losskit.multilabel.bce import binary_cross_entropy
from losskit.multilabel.comic import COMICLoss
from losskit.multilabel.comic_loss import (
    MultiFocalModifierLoss,
    comic_class_weights,
    multi_focal_modifier_loss,
)
from losskit.multilabel.label_corrector import (
    ReflectiveCorrectorLoss,
    reflective_corrector_loss,
    reflective_label_correction,
)
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
)

COUNTS = torch.tensor([400, 90, 25, 6, 2])
OFF = {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0, "weight_power": 0.0}


def cooccurrence():
    """Counts from a structured training set: labels {0, 1, 2} and {3, 4} never co-occur."""
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(60, 5, generator=g) < 0.5).double()
    y[:30, 3:] = 0
    y[30:, :3] = 0
    y[0, :3] = 1
    y[30, 3:] = 1
    return y.T @ y


# ---------------------------------------------------------------- slow references (the code)


def code_weights(counts, power):
    n = counts.double().clamp_min(1)
    prob = n / n.sum()
    return (1 - (prob / prob.max()).log()) ** power


def slow_entries(x, y, mask, counts, gp, gn, clip, power, cooc=None, boost=1.2, detach=True):
    """The released code's formula entry by entry (zeros at unknown entries)."""
    eps = 1e-8
    w = code_weights(counts, power)
    n, num_labels = x.shape
    if cooc is not None:
        norm = cooc / cooc.sum(dim=0)
    rows = []
    for i in range(n):
        a = torch.zeros(num_labels, dtype=x.dtype)
        if cooc is not None:
            pos = [norm[c] for c in range(num_labels) if y[i, c] == 1 and mask[i, c]]
            if pos:
                a = torch.stack(pos).mean(dim=0)
                a = a / a.sum()
        row = []
        for j in range(num_labels):
            if not mask[i, j]:
                row.append(x[i, j] * 0)
                continue
            p = torch.sigmoid(x[i, j])
            xs_pos = p * (1 - a[j])
            xs_neg = torch.clamp(1 - p + clip, max=1)
            if a[j] != 0:
                xs_neg = torch.clamp(xs_neg * boost, max=1)
            if y[i, j] == 1:
                term, pt, gamma = torch.log(xs_pos.clamp(min=eps)), xs_pos, gp
            else:
                term, pt, gamma = torch.log(xs_neg.clamp(min=eps)), xs_neg, gn + w[j]
            term = term * w[j]
            if gp > 0 or gn > 0:
                f = (1 - pt) ** gamma
                term = term * (f.detach() if detach else f)
            row.append(-term)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def per_sample(entries, mask):
    return entries.sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def slow_corrector(x, y, mask, counts, threshold=0.7, margin=1.0, detach=True):
    """The code's corrector on the batch, reduced as documented (per-sample, scaled N / P)."""
    n, num_labels = x.shape
    z = x - margin * y
    p = torch.sigmoid(z).detach()
    t = y.clone()
    for c in range(num_labels):
        known = [i for i in range(n) if mask[i, c]]
        mean_c = sum(p[i, c] for i in known) / max(len(known), 1)
        for i in known:
            if y[i, c] == 0 and p[i, c] > threshold and p[i, c] > mean_c:
                t[i, c] = 1
    positives = sum(int(t[i, c]) for i in range(n) for c in range(num_labels) if mask[i, c])
    active = sum(1 for i in range(n) if mask[i].any())
    entries = slow_entries(z, t, mask, counts, 0.0, 3.0, 0.05, 1 / 6, detach=detach)
    return per_sample(entries, mask) * active / max(positives, 1), t


# ---------------------------------------------------------------- multi-focal modifier


@pytest.mark.parametrize("prior", [False, True])
def test_modifier_matches_slow_reference(prior):
    x, y, mask = random_multilabel(8, 5)
    cooc = cooccurrence() if prior else None
    kw = {"gamma_pos": 1.0, "gamma_neg": 3.0, "clip": 0.05, "weight_power": 1 / 3}
    check_matches_reference(
        lambda z: multi_focal_modifier_loss(
            z, y, class_counts=COUNTS, mask=mask, label_cooccurrence=cooc, reduction="none", **kw
        ),
        lambda z: per_sample(slow_entries(z, y, mask, COUNTS, 1.0, 3.0, 0.05, 1 / 3, cooc), mask),
        x,
    )


def test_undetached_focus_matches_reference_and_differs_from_detached():
    x, y, mask = random_multilabel(6, 5)
    grads = {}
    for detach in (True, False):
        xg = x.clone().requires_grad_(True)
        xr = x.clone().requires_grad_(True)
        kw = {"class_counts": COUNTS, "mask": mask, "detach_focal": detach, "reduction": "sum"}
        multi_focal_modifier_loss(xg, y, **kw).backward()
        slow = slow_entries(xr, y, mask, COUNTS, 0.0, 4.0, 0.05, 1 / 6, detach=detach)
        per_sample(slow, mask).sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad)
        grads[detach] = xg.grad
    assert not torch.allclose(grads[True], grads[False])


def test_code_sums_over_the_batch():
    x, y, _ = random_multilabel(6, 5)
    full = torch.ones_like(y, dtype=torch.bool)
    code_value = slow_entries(x, y, full, COUNTS, 0.0, 4.0, 0.05, 1 / 6).sum()
    ours = multi_focal_modifier_loss(x, y, class_counts=COUNTS)
    torch.testing.assert_close(ours * x.numel(), code_value)


def test_class_weights():
    w = comic_class_weights(COUNTS, 1 / 6)
    torch.testing.assert_close(w, code_weights(COUNTS, 1 / 6))
    assert (w >= 1).all() and w[0] == 1 and (w.diff() > 0).all()
    zero = comic_class_weights(torch.tensor([10, 0, 1]), 1 / 6)
    assert torch.isfinite(zero).all() and zero[1] == zero[2]  # a count of 0 counts as 1
    torch.testing.assert_close(comic_class_weights(COUNTS, 0.0), torch.ones(5, dtype=w.dtype))


def test_modifiers_off_is_bce():
    x, y, mask = random_multilabel()
    for reduction in ("none", "sum", "mean"):
        bce = binary_cross_entropy(x, y, mask=mask, reduction=reduction)
        off = multi_focal_modifier_loss(
            x, y, class_counts=COUNTS, mask=mask, reduction=reduction, **OFF
        )
        torch.testing.assert_close(off, bce)
        comic = COMICLoss(COUNTS, corrector_weight=0.0, reduction=reduction, **OFF).double()
        comic.set_epoch(5)
        torch.testing.assert_close(comic(x, y, mask), bce)


def test_focusing_needs_a_positive_exponent_as_in_the_code():
    # gamma_pos = gamma_neg = 0: no focusing at all, not even the w_c part of the exponent
    x, y, mask = random_multilabel()
    kw = {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.05, "weight_power": 1 / 6}
    ref = per_sample(slow_entries(x, y, mask, COUNTS, 0.0, 0.0, 0.05, 1 / 6), mask)
    out = multi_focal_modifier_loss(x, y, class_counts=COUNTS, mask=mask, reduction="none", **kw)
    torch.testing.assert_close(out, ref)


def test_prior_handles_unseen_labels_and_rows_without_positives():
    x, y, _ = random_multilabel(4, 5)
    cooc = cooccurrence()
    cooc[4, :] = 0
    cooc[:, 4] = 0  # label 4 never seen
    y[0] = 0  # a row without positives
    out = multi_focal_modifier_loss(x, y, class_counts=COUNTS, label_cooccurrence=cooc)
    assert torch.isfinite(out)


def check_contract(fn, x, y, mask, **kw):
    """The contract checks of the COMIC losses (gradcheck through the focusing factor)."""
    check_reductions(fn, x, y, **kw)
    check_reductions(fn, x, y, mask=mask, **kw)
    check_gradcheck(fn, x, y, mask=mask, detach_focal=False, **kw)
    check_mask_zero_grad(fn, x, y, mask, **kw)
    # bounded per entry by w_c * |logit|; 30 puts half-precision logits far in both tails
    check_half_precision(fn, y.float(), **kw)
    check_bad_inputs(fn, **kw)


def test_modifier_contract():
    x, y, mask = random_multilabel()
    cooc = cooccurrence()
    fn = multi_focal_modifier_loss
    for kw in ({"class_counts": COUNTS}, {"class_counts": COUNTS, "label_cooccurrence": cooc}):
        check_contract(fn, x, y, mask, **kw)
    module = MultiFocalModifierLoss(COUNTS, gamma_neg=2.0, reduction="sum")
    xf, yf, mf = random_multilabel(dtype=torch.float32)
    torch.testing.assert_close(
        module(xf, yf, mf),
        fn(xf, yf, class_counts=COUNTS, gamma_neg=2.0, mask=mf, reduction="sum"),
    )


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"gamma_pos": -1.0}, "gamma_pos"),
        ({"gamma_neg": math.nan}, "gamma_neg"),
        ({"clip": 1.5}, "clip"),
        ({"weight_power": -0.1}, "weight_power"),
        ({"class_counts": torch.tensor([1, 2])}, "class_counts"),
        ({"class_counts": torch.tensor([1, -2, 3, 4, 5])}, "class_counts"),
        ({"label_cooccurrence": torch.ones(5, 4)}, "label_cooccurrence"),
        ({"label_cooccurrence": -torch.ones(5, 5)}, "label_cooccurrence"),
        ({"label_cooccurrence": torch.ones(5, 5), "cooccurrence_boost": 0.0}, "boost"),
    ],
)
def test_modifier_bad_hyperparameters(kw, name):
    x, y, _ = random_multilabel(dtype=torch.float32)
    with pytest.raises(ValueError, match=name):
        multi_focal_modifier_loss(x, y, **{"class_counts": COUNTS, **kw})


# ---------------------------------------------------------------- reflective label corrector


def test_correction_rule():
    # label 0: p = .95 .73 .94 and .82 (a positive, shifted by the margin): batch mean .86
    # label 1: p = .27 (a positive, shifted) .88 .62 .05: batch mean .45
    x = torch.tensor([[3.0, 0.0], [1.0, 2.0], [2.8, 0.5], [2.5, -3.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    p = torch.sigmoid(x - y)
    corrected = reflective_label_correction(x, y)
    expect = y.clone()
    for i in range(4):
        for c in range(2):
            if y[i, c] == 0 and p[i, c] > 0.7 and p[i, c] > p[:, c].mean():
                expect[i, c] = 1
    torch.testing.assert_close(corrected, expect)
    assert corrected[0, 0] == corrected[2, 0] == corrected[1, 1] == 1  # both conditions hold
    assert corrected[1, 0] == 0  # p = .73 > .7, but below its label's batch mean
    assert corrected[2, 1] == 0  # above its label's batch mean, but p = .62 < .7
    # never positive -> negative, and a threshold of 1 recalls nothing
    assert (corrected >= y).all()
    torch.testing.assert_close(reflective_label_correction(x, y, threshold=1.0), y)
    # unknown entries are never recalled, and do not enter the batch mean
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[0, 0] = False
    masked = reflective_label_correction(x, y, mask=mask)
    assert masked[0, 0] == 0
    # dtype of the target is kept
    assert reflective_label_correction(x, y.bool()).dtype == torch.bool


def test_corrector_matches_slow_reference_and_code_scale():
    x, y, mask = random_multilabel(8, 5, scale=3.0)
    xg = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    out = reflective_corrector_loss(xg, y, class_counts=COUNTS, mask=mask, reduction="none")
    ref, t = slow_corrector(xr, y, mask, COUNTS)
    assert (t != y).any()  # the example recalls labels
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    # the code: sum over the batch times batch_size / P (batch_size = N here)
    full = torch.ones_like(mask)
    _, t_full = slow_corrector(x, y, full, COUNTS)
    code = slow_entries(x - y, t_full, full, COUNTS, 0.0, 3.0, 0.05, 1 / 6).sum()
    code = code * x.shape[0] / t_full.sum()
    ours = reflective_corrector_loss(x, y, class_counts=COUNTS)
    torch.testing.assert_close(ours * x.numel(), code)


def test_corrector_contract():
    x, y, mask = random_multilabel(scale=3.0)
    fn = reflective_corrector_loss
    kw = {"class_counts": COUNTS}
    check_contract(fn, x, y, mask, **kw)
    for bad, name in (({"threshold": 1.5}, "threshold"), ({"margin": math.inf}, "margin")):
        with pytest.raises(ValueError, match=name):
            fn(x, y, **kw, **bad)
    with pytest.raises(ValueError, match="start_epoch"):
        ReflectiveCorrectorLoss(COUNTS, start_epoch=-1)


def test_corrector_module_state():
    x, y, mask = random_multilabel(8, 5, scale=3.0)
    module = ReflectiveCorrectorLoss(COUNTS, start_epoch=1).double()
    assert module(x, y, mask) == 0  # inactive at epoch 0
    module.set_epoch(1)
    recalled = reflective_label_correction(x, y, mask=mask) - y
    first = module(x, y, mask)
    torch.testing.assert_close(module.recalled_counts, recalled.sum(dim=0))
    counts = COUNTS.double() + recalled.sum(dim=0)
    torch.testing.assert_close(
        first, reflective_corrector_loss(x, y, class_counts=counts, mask=mask)
    )
    module(x, y, mask)
    torch.testing.assert_close(module.recalled_counts, 2 * recalled.sum(dim=0))
    module.eval()
    module(x, y, mask)  # evaluation does not count
    torch.testing.assert_close(module.recalled_counts, 2 * recalled.sum(dim=0))
    module.set_epoch(2)
    assert (module.recalled_counts == 0).all()


# ---------------------------------------------------------------- COMIC


def comic_fn(x, y, mask=None, reduction="mean", epoch=1, **kw):
    module = COMICLoss(COUNTS, cooccurrence(), reduction=reduction, **kw).to(x.dtype)
    module.set_epoch(epoch)
    return module(x, y, mask)


def test_comic_is_modifier_plus_weighted_corrector_from_start_epoch():
    x, y, mask = random_multilabel(8, 5, scale=3.0, dtype=torch.float32)
    cooc = cooccurrence()
    module = COMICLoss(COUNTS, cooc).eval()  # eval: the corrector's counts stay fixed
    mfm = multi_focal_modifier_loss(
        x,
        y,
        class_counts=COUNTS,
        label_cooccurrence=cooc,
        gamma_neg=3.0,
        weight_power=1 / 3,
        mask=mask,
    )
    torch.testing.assert_close(module(x, y, mask), mfm)  # epoch 0: no corrector
    module.set_epoch(1)
    rlc = reflective_corrector_loss(x, y, class_counts=COUNTS, mask=mask)
    torch.testing.assert_close(module(x, y, mask), mfm + 0.2 * rlc)


def test_comic_contract_and_registry():
    x, y, mask = random_multilabel(scale=3.0)
    check_reductions(comic_fn, x, y)
    check_reductions(comic_fn, x, y, mask=mask)
    check_gradcheck(comic_fn, x, y, mask=mask, detach_focal=False)
    check_mask_zero_grad(comic_fn, x, y, mask)
    check_half_precision(comic_fn, y.float())
    check_bad_inputs(comic_fn)
    for bad, name in (
        ({"corrector_weight": -1.0}, "corrector_weight"),
        ({"corrector_start_epoch": 0.5}, "start_epoch"),
        ({"gamma_neg": -2.0}, "gamma_neg"),
        ({"threshold": 2.0}, "threshold"),
    ):
        with pytest.raises(ValueError, match=name):
            COMICLoss(COUNTS, **bad)
    with pytest.raises(ValueError, match="label_cooccurrence"):
        COMICLoss(COUNTS, torch.ones(4, 4))
    comic, mfm = get("comic"), get("multi_focal_modifier")
    assert comic.papers == mfm.papers == (19,)
    assert comic.defaults["gamma_neg"] == 3.0 and mfm.defaults["gamma_neg"] == 4.0
    built = comic.build(class_counts=COUNTS, label_cooccurrence=cooccurrence())
    xf, yf, _ = random_multilabel(dtype=torch.float32)
    built.set_epoch(0)
    assert torch.isfinite(built(xf, yf))
    assert torch.isfinite(mfm.build(class_counts=COUNTS)(xf, yf))


# ---------------------------------------------------------------- balanced classifier


def test_classifier_branches_match_the_code():
    torch.manual_seed(0)
    clf = HeadTailBalancedClassifier(6, 5, COUNTS).double()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 6, generator=g, dtype=torch.float64) + 0.5 for _ in range(3)]
    running = torch.zeros(6, dtype=torch.float64)
    for feats in batches:
        running = 0.9 * running + feats.mean(dim=0)  # the code's running sum
        out = clf(feats)
    nx = feats / feats.norm(dim=1, keepdim=True)
    nc = running / running.norm()
    cos = (nx @ nc)[:, None]
    normed = [w / (w.norm(dim=1, keepdim=True) + 1 / 32) for w in clf.weight]
    torch.testing.assert_close(out.head, 16 * nx @ normed[0].T)
    torch.testing.assert_close(out.tail, 16 * nx @ normed[1].T)
    torch.testing.assert_close(out.balanced, 16 * nx @ normed[2].T)
    torch.testing.assert_close(out.head_effect, 16 * (nx - cos * nc) @ normed[0].T)
    torch.testing.assert_close(out.tail_effect, 16 * (nx + 2.0 * cos * nc) @ normed[1].T)
    clf.eval()
    before = clf.feature_mean.clone()
    clf(batches[0])
    torch.testing.assert_close(clf.feature_mean, before)


def test_sample_weights_are_the_samplers_importance_weights():
    x, y, _ = random_multilabel(7, 5)
    counts = y.sum(dim=0)  # the batch is the whole training set
    head, tail, balanced = branch_sample_weights(y, counts)
    n, num_labels = y.shape
    q_rev = (1 / counts) / (1 / counts).sum()
    for w, q in ((tail, q_rev), (balanced, torch.full((num_labels,), 1 / num_labels))):
        prob = torch.zeros(n, dtype=y.dtype)
        for i in range(n):
            for c in range(num_labels):
                if y[i, c] == 1:
                    prob[i] += q[c] / counts[c]  # draw label c, then sample i among its positives
        torch.testing.assert_close(w, n * prob)
    torch.testing.assert_close(head, torch.ones(n, dtype=y.dtype))
    # rarer labels weigh more in the tail branch than in the balanced one
    rare = y[:, counts.argmin()] == 1
    assert (tail[rare] / balanced[rare] >= tail[~rare].min() / balanced[~rare].max()).all()


def test_head_tail_balanced_loss_composition_and_gradients():
    torch.manual_seed(0)
    clf = HeadTailBalancedClassifier(6, 5, COUNTS)
    feats = torch.randn(8, 6) * 3
    _, y, mask = random_multilabel(8, 5, dtype=torch.float32)
    branches = clf(feats)
    crit = [COMICLoss(COUNTS, cooccurrence()).eval() for _ in range(3)]
    for c in crit:
        c.set_epoch(1)
    weights = clf.sample_weights(y, mask)
    loss = head_tail_balanced_loss(
        branches, y, criterion=crit, mask=mask, sample_weights=weights, reduction="none"
    )
    perf = [
        crit[0].modifier(z, y, mask) * w
        for z, w in zip((branches.head, branches.tail, branches.balanced), weights, strict=True)
    ]
    rlc = [
        crit[0].corrector.loss(z, y, mask) * w
        for z, w in zip(
            (branches.head_effect, branches.tail_effect, branches.balanced), weights, strict=True
        )
    ]
    manual = sum(p + 0.2 * r for p, r in zip(perf, rlc, strict=True)) + sum(perf) / 3
    torch.testing.assert_close(loss, manual)
    mean = head_tail_balanced_loss(branches, y, criterion=crit[0], mask=mask)
    torch.testing.assert_close(
        mean, head_tail_balanced_loss(branches, y, criterion=crit, mask=mask)
    )
    mean.backward()
    assert all(g.abs().sum() > 0 for g in clf.weight.grad)


def test_head_tail_balanced_loss_mask_and_bad_inputs():
    x, y, mask = random_multilabel(6, 5)
    g = torch.Generator().manual_seed(4)
    parts = [x.clone().requires_grad_(True)] + [
        torch.randn(6, 5, generator=g, dtype=x.dtype).requires_grad_(True) for _ in range(4)
    ]
    crit = COMICLoss(COUNTS).double().eval()
    crit.set_epoch(1)
    head_tail_balanced_loss(BranchLogits(*parts), y, criterion=crit, mask=mask).backward()
    assert all((p.grad[~mask] == 0).all() for p in parts)
    branches = BranchLogits(*[p.detach() for p in parts])
    with pytest.raises(ValueError, match="sample_weights"):
        head_tail_balanced_loss(branches, y, criterion=crit, sample_weights=[torch.ones(5)] * 3)
    with pytest.raises(ValueError, match="criterion"):
        head_tail_balanced_loss(branches, y, criterion=[crit, crit])
    with pytest.raises(ValueError, match="target"):
        head_tail_balanced_loss(branches, y[:3], criterion=crit)
    clf = HeadTailBalancedClassifier(4, 5, COUNTS)
    with pytest.raises(ValueError, match="features"):
        clf(torch.randn(3, 5))
    for kw, name in (
        ({"scale": 0.0}, "scale"),
        ({"momentum": 1.0}, "momentum"),
        ({"class_counts": torch.tensor([1, 2])}, "class_counts"),
        ({"num_labels": 0}, "num_labels"),
    ):
        with pytest.raises(ValueError, match=name):
            HeadTailBalancedClassifier(
                **{"in_features": 4, "num_labels": 5, "class_counts": COUNTS, **kw}
            )
    with pytest.raises(ValueError, match="class_counts"):
        branch_sample_weights(y, torch.tensor([1, 2]))
