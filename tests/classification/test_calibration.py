"""Temperature scaling and the correctness-aware calibrator of paper 52."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit import get
from losskit.classification.calibration import (
    CorrectnessAwareCalibrator,
    CorrectnessAwareLoss,
    TemperatureScaler,
    calibration_features,
    correctness_aware_loss,
    default_views,
    fit_correctness_aware,
    fit_temperature,
    temperature_scale,
)
from losskit.diagnostics.calibration import expected_calibration_error
from tests.contract import check_bad_inputs, check_half_precision, random_batch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread avoids OpenMP spin on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ca_reference(x, t, y, reduction, ignore_index=-100):
    """Loop form of the CA loss: w_i (conf_i - c_i)^2 with balanced weights."""
    kept = [i for i in range(len(y)) if y[i] != ignore_index]
    correct = {i: int(x[i].argmax()) == int(y[i]) for i in kept}
    acc = sum(correct.values()) / len(kept)
    per, ws = [], []
    for i in range(len(y)):
        if i not in correct:
            per.append(x.new_zeros(()))
            ws.append(0.0)
            continue
        ti = t[i] if t.ndim else t
        conf = torch.softmax(x[i] / ti, dim=0).max()
        w = (1 - acc if correct[i] else acc) if 0 < acc < 1 else 1.0
        per.append(w * (conf - float(correct[i])) ** 2)
        ws.append(w)
    per = torch.stack(per)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / sum(ws)


def _batch(n=9, c=4, seed=0):
    x, y, _ = random_batch(n, c, seed=seed)
    y[:3] = x[:3].argmax(dim=1)  # at least three correct
    y[3] = (x[3].argmax() + 1) % c  # at least one wrong
    t = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 0.3
    return x, t, y


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("per_sample", [True, False])
def test_ca_loss_matches_loop_value_and_gradient(reduction, per_sample):
    x, t, y = _batch()
    t = t if per_sample else t[0]
    y[5] = -100
    xa, ta = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    xb, tb = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    ours = correctness_aware_loss(xa, ta, y, reduction=reduction)
    ref = _ca_reference(xb, tb, y, reduction)
    torch.testing.assert_close(ours, ref)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(ta.grad, tb.grad)


def test_ca_weights_equalise_mass():
    x, t, y = _batch(40, 5, seed=2)
    per = correctness_aware_loss(x, t, y, reduction="none")
    conf = torch.softmax(x / t[:, None], dim=1).amax(dim=1)
    correct = x.argmax(dim=1) == y
    w = per / (conf - correct.double()) ** 2
    acc = correct.double().mean()
    mass = acc * (1 - acc) * len(y)
    torch.testing.assert_close(w[correct].sum(), mass)
    torch.testing.assert_close(w[~correct].sum(), mass)
    torch.testing.assert_close(w[correct], (1 - acc).expand(int(correct.sum())))
    # mean divides by the total weight 2 acc (1 - acc) N
    torch.testing.assert_close(
        correctness_aware_loss(x, t, y),
        correctness_aware_loss(x, t, y, reduction="sum") / (2 * mass),
    )


def test_ca_loss_is_zero_only_in_the_impossible_limit():
    c = 4
    x, t, y = _batch(30, c, seed=1)
    bound = 1 / (2 * c**2)  # conf >= 1/C on the wrong half of the weight
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        t_rand = torch.exp(4 * torch.randn(30, generator=g, dtype=torch.float64))
        assert correctness_aware_loss(x, t_rand, y) >= bound
    correct = x.argmax(dim=1) == y
    t_limit = torch.where(correct, 1e-4, 1e8).double()
    torch.testing.assert_close(
        correctness_aware_loss(x, t_limit, y), torch.tensor(bound).double(), rtol=1e-6, atol=1e-7
    )


def test_ca_loss_single_outcome_batches_use_unit_weights():
    x, t, _ = _batch()
    right = x.argmax(dim=1)
    for y in (right, (right + 1) % x.shape[1]):
        per = correctness_aware_loss(x, t, y, reduction="none")
        conf = torch.softmax(x / t[:, None], dim=1).amax(dim=1)
        c = (x.argmax(dim=1) == y).double()
        torch.testing.assert_close(per, (conf - c) ** 2)
        torch.testing.assert_close(correctness_aware_loss(x, t, y), ((conf - c) ** 2).mean())


def test_ca_gradcheck_and_module():
    x, t, y = _batch(6, 3)
    xg, tg = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda a, b, r=reduction: correctness_aware_loss(a, b, y, reduction=r), (xg, tg)
        )
    m = CorrectnessAwareLoss(reduction="sum")
    torch.testing.assert_close(m(x, t, y), correctness_aware_loss(x, t, y, reduction="sum"))


def test_ca_half_precision_and_bad_inputs():
    _, y, _ = random_batch(8, 5)

    def fn(z, target, **kw):
        return correctness_aware_loss(z, 1.5, target, **kw)

    check_half_precision(fn, y)
    check_bad_inputs(fn, soft=False)
    x, t, y = _batch(4, 3)
    with pytest.raises(ValueError, match="target"):
        correctness_aware_loss(x, t, torch.softmax(x, dim=1))
    bad_t = [
        0.0,
        -1.0,
        float("nan"),
        t[:3],
        t.abs().long(),
        torch.full_like(t, -1.0),
        t[:, None, None],
    ]
    for temperature in bad_t:
        with pytest.raises(ValueError, match="temperature"):
            correctness_aware_loss(x, temperature, y)


def test_temperature_scale_shapes_and_dtype():
    x, t, _ = _batch(5, 3)
    torch.testing.assert_close(temperature_scale(x, 2.0), x / 2)
    torch.testing.assert_close(temperature_scale(x, t), x / t[:, None])
    torch.testing.assert_close(temperature_scale(x, t[:, None]), x / t[:, None])
    torch.testing.assert_close(temperature_scale(x, torch.tensor(0.5)), x * 2)
    xb = x.to(torch.bfloat16)
    assert temperature_scale(xb, torch.tensor([2.0])).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="temperature"):
        temperature_scale(x, 0.0)
    with pytest.raises(ValueError, match="logits"):
        temperature_scale(x[0], 1.0)


def _tempered_data(t_star, n=4000, c=5, seed=0):
    """A calibrated model's logits ``z`` and labels drawn from softmax(z); the observed
    logits are ``z * t_star``, so the temperature that calibrates them is ``t_star``."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return (z * t_star).float(), y, torch.softmax(z, dim=1).float()


@pytest.mark.parametrize("t_star", [0.4, 1.0, 3.0])
def test_fit_temperature_recovers_known_temperature(t_star):
    logits, y, p = _tempered_data(t_star)
    t_soft = fit_temperature(logits, p)  # soft targets: the optimum is exactly t_star
    assert isinstance(t_soft, float)
    assert abs(t_soft - t_star) < 1e-4 * t_star
    t_hard = fit_temperature(logits, y)
    assert abs(t_hard - t_star) < 0.08 * t_star

    def nll(t):
        return F.cross_entropy(logits.double() / t, y)

    assert nll(t_hard) <= min(nll(0.9 * t_hard), nll(1.1 * t_hard))


def test_fit_temperature_bounds_and_errors():
    logits = 3 * F.one_hot(torch.arange(6) % 3, 3).float()
    t = fit_temperature(logits, torch.arange(6) % 3)  # separable: NLL keeps falling as T -> 0
    assert 0.01 <= t < 0.5
    y = torch.arange(6) % 3
    y[0] = -100
    assert fit_temperature(logits + 0.1 * torch.randn(6, 3), y) > 0
    with pytest.raises(ValueError, match="max_iter"):
        fit_temperature(logits, y, max_iter=0)
    with pytest.raises(ValueError, match="target"):
        fit_temperature(logits, torch.full((6,), 3))
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(logits.long(), y)


def test_temperature_scaler_module():
    logits, y, _ = _tempered_data(2.0, n=1000)
    m = TemperatureScaler().fit(logits, y)
    assert "temperature" in m.state_dict()
    assert abs(float(m.temperature) - fit_temperature(logits, y)) < 1e-6
    torch.testing.assert_close(m(logits), logits / m.temperature)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaler(-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        TemperatureScaler(max_iter=0)


def _slow_features(views, k):
    rows = []
    for i in range(views[0].shape[0]):
        top = sorted(range(views[0].shape[1]), key=lambda j: -float(views[0][i, j]))[:k]
        rows.append([float(torch.softmax(v[i], 0)[j]) for v in views[1:] for j in top])
    return torch.tensor(rows, dtype=torch.float64)


def test_calibration_features_match_loop_and_validate():
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(6, 7, generator=g, dtype=torch.float64) for _ in range(4)]
    feats = calibration_features(views, top_k=4)
    assert feats.shape == (6, 12)
    torch.testing.assert_close(feats, _slow_features(views, 4))
    torch.testing.assert_close(
        calibration_features(views[:2], top_k=2), _slow_features(views[:2], 2)
    )
    with pytest.raises(ValueError, match="view_logits"):
        calibration_features(views[:1])
    with pytest.raises(ValueError, match=r"view_logits\[2\]"):
        calibration_features([views[0], views[1], views[2][:, :5]])
    with pytest.raises(ValueError, match=r"view_logits\[1\]"):
        calibration_features([views[0], torch.full_like(views[1], float("nan"))])
    with pytest.raises(ValueError, match="top_k"):
        calibration_features(views, top_k=8)


def test_calibrator_temperature_is_clamped():
    g = torch.Generator().manual_seed(0)
    views = [5 * torch.randn(50, 6, generator=g) for _ in range(4)]
    cal = CorrectnessAwareCalibrator(4)
    torch.testing.assert_close(cal(views), torch.ones(50))  # starts at T = 1
    for seed in range(5):
        torch.manual_seed(seed)
        raw = CorrectnessAwareCalibrator(4, init_temperature=None)
        with torch.no_grad():
            for p in raw.parameters():
                p.mul_(40)
        t = raw(views)
        assert (t >= 0.1).all() and (t <= 10).all()
        assert ((t == 0.1) | (t == 10)).any()  # the clamp was reached
    torch.testing.assert_close(cal.calibrate(views), temperature_scale(views[0], cal(views)))
    for kw, name in (
        ({"num_views": 1}, "num_views"),
        ({"top_k": 0}, "top_k"),
        ({"hidden": 0}, "hidden"),
        ({"min_temperature": 0.0}, "min_temperature"),
        ({"max_temperature": 0.05}, "max_temperature"),
        ({"init_temperature": 20.0}, "init_temperature"),
    ):
        with pytest.raises(ValueError, match=name):
            CorrectnessAwareCalibrator(**kw)
    with pytest.raises(ValueError, match="view_logits"):
        cal(views[:3])


def test_fit_correctness_aware_paper_defaults_and_errors():
    g = torch.Generator().manual_seed(0)
    views = [3 * torch.randn(64, 5, generator=g) for _ in range(4)]
    y = torch.randint(0, 5, (64,), generator=g)
    cal = CorrectnessAwareCalibrator(4)
    before = [p.detach().clone() for p in cal.parameters()]
    out = fit_correctness_aware(cal, views, y, generator=g)  # Adam 1e-4, batch 1000, 10 epochs
    assert out is cal and not cal.training
    assert any(not torch.equal(a, b) for a, b in zip(before, cal.parameters(), strict=True))
    for kw, name in (
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(ValueError, match=name):
            fit_correctness_aware(cal, views, y, **kw)
    with pytest.raises(ValueError, match="view_logits"):
        fit_correctness_aware(cal, views[:3], y)
    with pytest.raises(ValueError, match="target"):
        fit_correctness_aware(cal, views, y[:5])
    with pytest.raises(ValueError, match="calibrator"):
        fit_correctness_aware(torch.nn.Linear(2, 2), views, y)


def test_default_views():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 6, generator=g)
    ident, grey, flip, rot = default_views(x, degrees=90.0)
    assert ident is x and all(v.shape == x.shape for v in (grey, flip, rot))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        torch.testing.assert_close(grey[:, ch], luma)
    torch.testing.assert_close(flip, x.flip(-1))
    quarter = torch.rot90(x, 1, dims=(2, 3))
    assert min((rot - quarter).abs().max(), (rot - x.rot90(-1, dims=(2, 3))).abs().max()) < 1e-5
    torch.testing.assert_close(default_views(x, degrees=0.0)[3], x)
    assert default_views(x.to(torch.bfloat16))[3].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="x"):
        default_views(x[0])
    with pytest.raises(ValueError, match="degrees"):
        default_views(x, degrees=400.0)


def test_registered_entries_build():
    assert get("temperature_scaling").kind == "procedure"
    assert get("temperature_scaling").function is fit_temperature
    assert isinstance(get("temperature_scaling").build(), TemperatureScaler)
    ca = get("correctness_aware")
    assert ca.kind == "loss" and ca.papers == (52,) and ca.function is correctness_aware_loss
    fit = get("fit_correctness_aware")
    assert fit.kind == "procedure" and fit.papers == (52,) and fit.function is fit_correctness_aware
    cal = fit.build()
    assert cal.in_features == 12 and cal.embed.out_features == 5
    assert (cal.min_temperature, cal.max_temperature) == (0.1, 10.0)


def test_digits_smoke_temperature_scaling_lowers_ece_and_ca_lowers_ca_loss():
    """Qualitative: an MLP overfitted on 150 digits is overconfident; temperature scaling
    fitted on a validation split lowers test ECE, and the CA calibrator (lr and epochs raised
    from the paper's ImageNet setting so it trains in a second) lowers the held-out CA loss
    below both the uncalibrated model and temperature scaling."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val, test = perm[:150], perm[150:900], perm[900:]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net(x[train]), y[train]).backward()
        opt.step()
    with torch.no_grad():
        views = {
            k: [net(v.flatten(1)) for v in default_views(x[idx].view(-1, 1, 8, 8))]
            for k, idx in (("val", val), ("test", test))
        }
    logits = views["test"][0]
    assert (logits.argmax(1) == y[test]).float().mean() > 0.85
    t = fit_temperature(views["val"][0], y[val])
    assert t > 1.2  # overconfident
    ece_raw = expected_calibration_error(logits, y[test], from_logits=True)
    ece_ts = expected_calibration_error(logits / t, y[test], from_logits=True)
    assert ece_ts < 0.8 * ece_raw

    cal = CorrectnessAwareCalibrator(4)
    g = torch.Generator().manual_seed(0)
    fit_correctness_aware(cal, views["val"], y[val], epochs=150, lr=1e-2, generator=g)
    with torch.no_grad():
        t_ca = cal(views["test"])
    assert (t_ca >= 0.1).all() and (t_ca <= 10).all()
    ca_raw = correctness_aware_loss(logits, 1.0, y[test])
    ca_ts = correctness_aware_loss(logits, t, y[test])
    ca_ca = correctness_aware_loss(logits, t_ca, y[test])
    assert ca_ca < 0.8 * ca_ts < 0.8 * ca_raw
