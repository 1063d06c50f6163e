"""LDR-KL and ALDR-KL (paper 4) against slow references and the paper's exact properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.classification.ldr import (
    TRANSFORMS,
    ALDRKLLoss,
    LDRKLLoss,
    _L1MeanScaled,
    _log_softplus,
    _transform,
    aldr_kl_lambda,
    aldr_kl_loss,
    ldr_kl_loss,
)
from tests.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_weight_and_ignore,
    random_batch,
)


def _transform_ref(f, transform):
    if transform == "softplus_mean":
        s = torch.log1p(torch.exp(f))
        return s / s.mean()
    if transform == "l1_mean":
        return f / f.abs().mean()
    return f


def _psi_ref(f, c, lam, margin):
    """lam * log((1/K) sum_k exp((margin 1[k != c] + f_k - f_c) / lam)), term by term."""
    terms = [(margin * (k != c) + f[k] - f[c]) / lam for k in range(len(f))]
    return lam * torch.log(torch.stack([torch.exp(t) for t in terms]).mean())


def _ldr_ref(x, target, lam, margin, transform=None, weight=None):
    out = []
    for i in range(x.shape[0]):
        f = _transform_ref(x[i], transform)
        if target.is_floating_point():
            w = torch.ones(len(f), dtype=x.dtype) if weight is None else weight
            out.append(
                sum(target[i, c] * w[c] * _psi_ref(f, c, lam, margin) for c in range(len(f)))
            )
        else:
            out.append(_psi_ref(f, int(target[i]), lam, margin))
    return torch.stack(out)


def _value_and_grad(fn, x):
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg)
    out.sum().backward()
    return out.detach(), xg.grad


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(("lam", "margin"), [(1.0, 0.0), (0.3, 0.1), (10.0, 1.0)])
def test_ldr_matches_reference(transform, lam, margin):
    x, y, p = random_batch(6, 5, seed=3)
    w = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    kw = {"lam": lam, "margin": margin, "transform": transform}
    for target, weight in ((y, None), (p, None), (p, w)):
        ours = _value_and_grad(
            lambda z, t=target, wt=weight: ldr_kl_loss(z, t, weight=wt, reduction="none", **kw), x
        )
        ref = _value_and_grad(
            lambda z, t=target, wt=weight: _ldr_ref(z, t, lam, margin, transform, wt), x
        )
        torch.testing.assert_close(ours, ref)


def test_ldr_is_ce_minus_log_k():
    x, y, p = random_batch(8, 6)
    p = p / p.sum(dim=1, keepdim=True)  # rows summing to one in float64
    for target in (y, p):
        torch.testing.assert_close(
            ldr_kl_loss(x, target, lam=1.0, margin=0.0, reduction="none"),
            F.cross_entropy(x, target, reduction="none") - math.log(6),
        )


def test_ldr_small_lam_tends_to_crammer_singer_hinge():
    x, y, _ = random_batch(8, 6, seed=1)
    onehot = F.one_hot(y, 6).to(x.dtype)
    v = 0.2 * (1 - onehot) + x - x.gather(1, y[:, None])
    hinge = v.max(dim=1).values
    errors = []
    for lam in (1e-1, 1e-2, 1e-3, 1e-6):
        psi = ldr_kl_loss(x, y, lam=lam, margin=0.2, reduction="none")
        assert (psi <= hinge + 1e-12).all()
        assert (psi >= hinge - lam * math.log(6) - 1e-12).all()
        errors.append((hinge - psi).max().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-5


def test_ldr_large_lam_tends_to_mean_and_decreases_in_lam():
    x, y, _ = random_batch(8, 6, seed=2)
    onehot = F.one_hot(y, 6).to(x.dtype)
    v = 0.2 * (1 - onehot) + x - x.gather(1, y[:, None])
    torch.testing.assert_close(
        ldr_kl_loss(x, y, lam=1e6, margin=0.2, reduction="none"), v.mean(1), rtol=0, atol=1e-4
    )
    # max_p <p, v> - lam KL(p || u) is non-increasing in lam
    lams = [0.01, 0.1, 1.0, 10.0, 100.0]
    vals = torch.stack([ldr_kl_loss(x, y, lam=t, margin=0.2, reduction="none") for t in lams])
    assert (vals[1:] <= vals[:-1] + 1e-12).all()


def test_soft_one_hot_equals_hard_at_extreme_logits():
    # the soft path uses a leave-one-out logsumexp; it must stay exact for confident rows
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x, y, _ = random_batch(32, 7, dtype=dtype, seed=4, scale=100.0)
        onehot = F.one_hot(y, 7).to(dtype)
        for lam, margin in ((1e-3, 0.1), (1.0, 0.0), (10.0, 5.0)):
            hard = ldr_kl_loss(x, y, lam=lam, margin=margin, reduction="none")
            soft = ldr_kl_loss(x, onehot, lam=lam, margin=margin, reduction="none")
            torch.testing.assert_close(soft, hard, rtol=tol, atol=tol)


def test_transforms_are_the_reference_score_maps():
    x, y, _ = random_batch(6, 5, seed=5)
    # l1_mean makes the loss invariant to positive rescaling of the logits
    a = ldr_kl_loss(x, y, transform="l1_mean", reduction="none")
    torch.testing.assert_close(ldr_kl_loss(7.5 * x, y, transform="l1_mean", reduction="none"), a)
    # an all-zero row stays finite (scores stay zero): psi = lam * log(mean_k exp(c 1[k!=y]/lam))
    z = torch.zeros(2, 5, dtype=torch.float64)
    out = ldr_kl_loss(z, y[:2], margin=0.5, transform="l1_mean", reduction="none")
    expected = math.log((1 + 4 * math.exp(0.5)) / 5)
    torch.testing.assert_close(out, torch.full((2,), expected, dtype=torch.float64))
    # log(softplus) stays exact where softplus underflows
    t = torch.linspace(-700.0, 50.0, 2001, dtype=torch.float64)
    torch.testing.assert_close(_log_softplus(t), torch.log(torch.log1p(torch.exp(t))))
    very_negative = torch.full((3, 5), -1e4).requires_grad_(True)
    very_negative.data[:, 0] = -2e4
    out = ldr_kl_loss(very_negative, y[:3], transform="softplus_mean", reduction="sum")
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(very_negative.grad).all()


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_ldr_contract(transform):
    x, y, p = random_batch()
    kw = {"lam": 0.7, "margin": 0.1, "transform": transform}
    check_reductions(ldr_kl_loss, x, y, **kw)
    check_reductions(ldr_kl_loss, x, p, **kw)
    check_weight_and_ignore(ldr_kl_loss, x, y, **kw)
    check_gradcheck(ldr_kl_loss, x, y, **kw)
    check_gradcheck(ldr_kl_loss, x, p, **kw)
    check_half_precision(ldr_kl_loss, y, **kw)
    check_bad_inputs(ldr_kl_loss, **kw)


def test_ldr_hyperparameters_and_module():
    x, y, _ = random_batch(dtype=torch.float32)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="lam"):
            ldr_kl_loss(x, y, lam=bad)
        with pytest.raises(ValueError, match="lam"):
            LDRKLLoss(lam=bad)
    with pytest.raises(ValueError, match="margin"):
        ldr_kl_loss(x, y, margin=-0.1)
    with pytest.raises(ValueError, match="transform"):
        ldr_kl_loss(x, y, transform="softmax")
    w = torch.rand(5)
    m = LDRKLLoss(lam=2.0, margin=0.3, transform="softplus_mean", weight=w)
    assert "weight" in m.state_dict()
    ref = ldr_kl_loss(x, y, lam=2.0, margin=0.3, transform="softplus_mean", weight=w)
    torch.testing.assert_close(m(x, y), ref)
    entry = get("ldr_kl")
    assert entry.papers == (4,) and entry.defaults["lam"] == 10.0
    assert entry.defaults["margin"] == 0.1 and entry.defaults["transform"] == "softplus_mean"
    assert isinstance(entry.build(), LDRKLLoss)


# ----------------------------------------------------------------------------- ALDR-KL


def _aldr_step_ref(x, y, ids, lambdas, lam0, alpha, margin, transform):
    """One ALDRLoss_V1 step, sample by sample: update lambda from KL(softmax(f / lambda_old)
    || uniform) on the transformed scores (no margin), then loss at the new lambda."""
    k = x.shape[1]
    lambdas = lambdas.clone()
    losses = []
    for i in range(x.shape[0]):
        f = _transform_ref(x[i], transform)
        p = torch.softmax(f.detach() / lambdas[ids[i]], dim=0)
        kl = (p * torch.log(k * p)).sum()
        lam = lam0 - lam0 * kl / (alpha * math.log(k))
        lambdas[ids[i]] = lam
        extra = -alpha * math.log(k) / (2 * lam0) * (lam - lam0) ** 2
        losses.append(_psi_ref(f, int(y[i]), lam, margin) + extra)
    return torch.stack(losses).mean(), lambdas


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_aldr_module_matches_reference_over_steps(transform):
    n_data, lam0, alpha, margin = 12, 3.0, 2.0, 0.1
    module = ALDRKLLoss(n_data, lam0=lam0, alpha=alpha, margin=margin, transform=transform)
    module = module.to(torch.float64)
    ref_lambdas = torch.full((n_data,), lam0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x, y, _ = random_batch(5, 4, seed=10 + step, scale=4.0)
        ids = torch.randperm(n_data, generator=g)[:5]
        ours, grad = _value_and_grad(lambda z, t=y, i=ids: module(z, t, i), x)
        ref_fn = lambda z, t=y, i=ids, lam=ref_lambdas: _aldr_step_ref(  # noqa: E731
            z, t, i, lam, lam0, alpha, margin, transform
        )[0]
        ref, ref_grad = _value_and_grad(ref_fn, x)
        ref_lambdas = _aldr_step_ref(x, y, ids, ref_lambdas, lam0, alpha, margin, transform)[1]
        torch.testing.assert_close((ours, grad), (ref, ref_grad))
        torch.testing.assert_close(module.lambdas, ref_lambdas)
    assert (module.lambdas < lam0).sum() > 5  # the updates did move lambda


def test_aldr_matches_smoothed_reference_kl_closely():
    # ALDRLoss_V1 adds 1e-5 to p before its log (p <- (p + 1e-5) / (1 + 1e-5 K)); the exact
    # KL used here is larger by at most the gap at a one-hot p, about 1.3e-4 (K - 1)
    x, _, _ = random_batch(16, 6, seed=6, scale=30.0)
    lam0, alpha = 10.0, 2.0
    prev = torch.full((16,), 2.0, dtype=torch.float64)
    ours = aldr_kl_lambda(x, prev, lam0=lam0, alpha=alpha, transform=None)
    p = torch.softmax(x / prev[:, None], dim=1) + 1e-5
    p = p / p.sum(dim=1, keepdim=True)
    kl = (p * torch.log(6 * p)).sum(dim=1)
    ref = lam0 - lam0 * kl / (alpha * math.log(6))
    one_hot = (F.one_hot(torch.tensor(0), 6).double() + 1e-5) / (1 + 6e-5)
    gap = math.log(6) - (one_hot * torch.log(6 * one_hot)).sum()
    assert gap < 1.3e-4 * 5
    assert (ours - ref).abs().max() <= lam0 * gap / (alpha * math.log(6)) * (1 + 1e-9)
    assert (ours - ref).abs().max() > 0  # the reference's smoothing is visible, not ignored


def test_aldr_lambda_bounds():
    lam0, alpha = 10.0, 2.0
    # uniform scores: KL = 0, lambda stays at lam0
    flat = torch.zeros(3, 5, dtype=torch.float64)
    lam = aldr_kl_lambda(flat, torch.full((3,), 4.0, dtype=torch.float64), transform=None)
    torch.testing.assert_close(lam, torch.full((3,), lam0, dtype=torch.float64))
    # confident scores: KL -> log K, lambda -> lam0 (1 - 1/alpha), never below it
    x, y, _ = random_batch(40, 5, seed=7, scale=1e4)
    module = ALDRKLLoss(40, lam0=lam0, alpha=alpha, transform=None).double()
    for _ in range(3):
        module(x, y, torch.arange(40))
    low = lam0 * (1 - 1 / alpha)
    assert (module.lambdas >= low).all() and (module.lambdas <= lam0).all()
    assert torch.isclose(module.lambdas.min(), torch.tensor(low, dtype=torch.float64))
    # random scores with the paper's transform stay strictly inside
    xr, yr, _ = random_batch(40, 5, seed=8)
    module = ALDRKLLoss(40, alpha=1.5)
    for _ in range(3):
        module(xr.float(), yr, torch.arange(40))
    assert (module.lambdas > 10.0 * (1 - 1 / 1.5)).all() and (module.lambdas <= 10.0).all()


def test_aldr_function_properties_and_contract():
    x, y, p = random_batch()
    lam = torch.linspace(2.0, 10.0, 7, dtype=torch.float64)
    kw = {"lam0": 10.0, "alpha": 2.0, "margin": 0.1, "transform": "l1_mean"}
    # at lam_i = lam0 the regulariser vanishes: ALDR-KL is LDR-KL at lam0
    torch.testing.assert_close(
        aldr_kl_loss(x, y, torch.full((7,), 10.0, dtype=torch.float64), **kw),
        ldr_kl_loss(x, y, lam=10.0, margin=0.1, transform="l1_mean"),
    )
    # elsewhere it is LDR-KL at lam_i minus (alpha log K / (2 lam0)) (lam_i - lam0)^2
    per = torch.stack(
        [
            ldr_kl_loss(
                x[i : i + 1], y[i : i + 1], lam=float(lam[i]), margin=0.1, transform="l1_mean"
            )
            for i in range(7)
        ]
    )
    torch.testing.assert_close(
        aldr_kl_loss(x, y, lam, reduction="none", **kw),
        per - 2.0 * math.log(5) / 20.0 * (lam - 10.0) ** 2,
    )
    for target in (y, p):
        check_reductions(aldr_kl_loss, x, target, lam=lam, **kw)
        check_gradcheck(aldr_kl_loss, x, target, lam=lam, **kw)
    check_weight_and_ignore(aldr_kl_loss, x, y, lam=lam, **kw)
    check_half_precision(aldr_kl_loss, y, lam=lam.float(), **kw)
    check_bad_inputs(aldr_kl_loss, lam=torch.full((4,), 5.0), **kw)
    for bad in (
        torch.full((7,), -1.0),
        torch.ones(6),
        torch.ones(7, dtype=torch.long),
        torch.full((7,), math.nan),
    ):
        with pytest.raises(ValueError, match="lam"):
            aldr_kl_loss(x, y, bad)
    for name, value in (("alpha", 1.0), ("alpha", 0.5), ("lam0", 0.0), ("margin", -1.0)):
        with pytest.raises(ValueError, match=name):
            aldr_kl_loss(x, y, lam, **{name: value})
        with pytest.raises(ValueError, match=name):
            ALDRKLLoss(10, **{name: value})
    with pytest.raises(ValueError, match="lam_prev"):
        aldr_kl_lambda(x, torch.zeros(7, dtype=torch.float64))


def test_aldr_module_state_and_index_checks():
    module = ALDRKLLoss(10, weight=torch.ones(5))
    assert set(module.state_dict()) == {"lambdas", "weight"}
    x, y, _ = random_batch(4, 5, dtype=torch.float32, seed=9)
    ids = torch.tensor([1, 3, 5, 7])
    module.eval()
    out_eval = module(x, y, ids)
    assert (module.lambdas == 10.0).all()  # eval mode does not store
    module.train()
    out_train = module(x, y, ids)
    torch.testing.assert_close(out_eval, out_train)
    assert (module.lambdas[ids] < 10.0).all() and (module.lambdas[[0, 2, 4]] == 10.0).all()
    fresh = ALDRKLLoss(10, weight=torch.ones(5))
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh.lambdas, module.lambdas)
    assert module.to(torch.float64).lambdas.dtype == torch.float64
    for bad in (ids.float(), ids[:3], torch.tensor([0, 1, 2, 10]), torch.tensor([0, -1, 2, 3])):
        with pytest.raises(ValueError, match="index"):
            module(x.double(), y, bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_samples"):
            ALDRKLLoss(bad)
    entry = get("aldr_kl")
    assert entry.papers == (4,)
    assert dict(entry.defaults) == {
        "lam0": 10.0,
        "alpha": 2.0,
        "margin": 0.1,
        "transform": "l1_mean",
    }
    assert isinstance(entry.build(num_samples=5), ALDRKLLoss)


def test_l1_mean_scaled_function_gradients():
    """The hand-written backward of f / (mean|f| * lam): gradcheck in f and a per-row lam,
    the all-zero-row convention of the autograd form, and first derivatives only."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    lam = (torch.rand(5, 1, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    fn = lambda z, t: _L1MeanScaled.apply(z, _transform(z, "l1_mean")[1], t)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f, lam))
    assert torch.autograd.gradcheck(lambda z: fn(z, torch.tensor(2.0, dtype=z.dtype)), (f,))
    # a zero row: scale 1 and the plain 1/lam gradient, as autograd through the where gives
    z = torch.randn(3, 4, generator=g, dtype=torch.float64)
    z[1] = 0.0
    cot = torch.randn(3, 4, generator=g, dtype=torch.float64)
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    (fn(za, torch.tensor(2.0, dtype=z.dtype)) * cot).sum().backward()
    s = zb.abs().mean(1, keepdim=True)
    ((zb / torch.where(s > 0, s, torch.ones_like(s)) / 2.0) * cot).sum().backward()
    torch.testing.assert_close(za.grad, zb.grad)
    with pytest.raises(RuntimeError):
        (gf,) = torch.autograd.grad(fn(f, lam).sum(), f, create_graph=True)
        gf.sum().backward()


def test_aldr_loss_gradient_in_lam():
    """aldr_kl_loss is differentiable in the temperatures it is given (all transforms)."""
    x, y, p = random_batch(5, 4, seed=12)
    lam = torch.linspace(1.0, 3.0, 5, dtype=torch.float64).requires_grad_(True)
    for transform in TRANSFORMS:
        for target in (y, p):
            fn = lambda z, t, tg=target, tr=transform: aldr_kl_loss(  # noqa: E731
                z, tg, t, lam0=3.0, transform=tr, reduction="sum"
            )
            assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(True), lam))
