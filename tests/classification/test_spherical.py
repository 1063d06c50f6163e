"""The Z-loss (paper 2) and its spherical siblings against slow references and exact properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.classification.spherical import (
    SphericalSoftmaxLoss,
    SphericalZLoss,
    _CentredStats,
    spherical_softmax_loss,
    spherical_softmax_loss_from_stats,
    spherical_squared_error,
    spherical_squared_error_from_stats,
    spherical_z_loss,
    spherical_z_loss_from_stats,
    taylor_softmax_loss,
    taylor_softmax_loss_from_stats,
)
from tests.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_weight_and_ignore,
    random_batch,
)

# ---- slow references: one sample, one class, written from the formulas ----------------------


def _ref_z(row, c, a=1.0, b=0.0):
    d = row.shape[0]
    mu = sum(row[k] for k in range(d)) / d
    sigma = torch.sqrt(sum((row[k] - mu) ** 2 for k in range(d)) / d)
    z = (row[c] - mu) / sigma
    return torch.log(1 + torch.exp(a * (b - z))) / a


def _ref_spherical_softmax(row, c, eps=0.01):
    return -torch.log((row[c] ** 2 + eps) / sum(row[k] ** 2 + eps for k in range(row.shape[0])))


def _ref_taylor(row, c):
    t = [1 + row[k] + row[k] ** 2 / 2 for k in range(row.shape[0])]
    return -torch.log(t[c] / sum(t))


def _ref_squared(row, c):
    return sum((row[k] - (1.0 if k == c else 0.0)) ** 2 for k in range(row.shape[0]))


# (name, function, stats form, reference, hyperparameters away from the defaults)
MEMBERS = [
    ("z", spherical_z_loss, spherical_z_loss_from_stats, _ref_z, {"a": 2.5, "b": 0.7}),
    ("z_default", spherical_z_loss, spherical_z_loss_from_stats, _ref_z, {}),
    (
        "sph",
        spherical_softmax_loss,
        spherical_softmax_loss_from_stats,
        _ref_spherical_softmax,
        {"eps": 0.05},
    ),
    ("taylor", taylor_softmax_loss, taylor_softmax_loss_from_stats, _ref_taylor, {}),
    ("sq", spherical_squared_error, spherical_squared_error_from_stats, _ref_squared, {}),
]
IDS = [m[0] for m in MEMBERS]


def _value_and_grad(fn, x, *args, **kw):
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg, *args, **kw)
    (g,) = torch.autograd.grad(out.sum(), xg)
    return out, g


def _stats(x, y):
    return x.gather(1, y[:, None]).squeeze(1), x.sum(1), (x * x).sum(1)


@pytest.mark.parametrize(("name", "fn", "stats_fn", "ref", "kw"), MEMBERS, ids=IDS)
def test_matches_slow_reference_value_and_gradient(name, fn, stats_fn, ref, kw):
    x, y, p = random_batch(6, 5)
    out, g = _value_and_grad(fn, x, y, reduction="none", **kw)

    def slow(z):
        return torch.stack([ref(z[i], int(y[i]), **kw) for i in range(z.shape[0])])

    ref_out, ref_g = _value_and_grad(slow, x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(g, ref_g)
    # soft targets: the expectation of the hard loss over classes
    soft, soft_g = _value_and_grad(fn, x, p, reduction="none", **kw)

    def slow_soft(z):
        return torch.stack(
            [sum(p[i, k] * ref(z[i], k, **kw) for k in range(5)) for i in range(z.shape[0])]
        )

    ref_soft, ref_soft_g = _value_and_grad(slow_soft, x)
    torch.testing.assert_close(soft, ref_soft)
    torch.testing.assert_close(soft_g, ref_soft_g)
    one_hot = F.one_hot(y, 5).to(x.dtype)
    torch.testing.assert_close(fn(x, one_hot, reduction="none", **kw), out)


@pytest.mark.parametrize(("name", "fn", "stats_fn", "ref", "kw"), MEMBERS, ids=IDS)
def test_stats_form_equals_direct_form(name, fn, stats_fn, ref, kw):
    x, y, _ = random_batch(8, 7, seed=3)
    direct, g = _value_and_grad(fn, x, y, reduction="none", **kw)
    via_stats, g_stats = _value_and_grad(
        lambda z: stats_fn(*_stats(z, y), 7, reduction="none", **kw), x
    )
    torch.testing.assert_close(via_stats, direct)
    torch.testing.assert_close(g_stats, g)
    for red in ("mean", "sum"):
        torch.testing.assert_close(
            stats_fn(*_stats(x, y), 7, reduction=red, **kw), fn(x, y, reduction=red, **kw)
        )
    oc, s1, s2 = (t.detach().requires_grad_(True) for t in _stats(x, y))
    assert torch.autograd.gradcheck(lambda *t: stats_fn(*t, 7, reduction="sum", **kw), (oc, s1, s2))


@pytest.mark.parametrize(("name", "fn", "stats_fn", "ref", "kw"), MEMBERS, ids=IDS)
def test_loss_depends_on_o_c_s1_s2_only(name, fn, stats_fn, ref, kw):
    """A reflection fixing the all-ones vector and e_c keeps o_c, S1, S2 and so the loss."""
    x, y, _ = random_batch(6, 6, seed=5)
    moved = torch.empty_like(x)
    g = torch.Generator().manual_seed(2)
    for i in range(6):
        basis = torch.stack([torch.ones(6, dtype=x.dtype), F.one_hot(y[i], 6).to(x.dtype)])
        q, _ = torch.linalg.qr(basis.T)
        v = torch.randn(6, generator=g, dtype=x.dtype)
        v = v - q @ (q.T @ v)
        moved[i] = x[i] - 2 * v * (v @ x[i]) / (v @ v)
    assert not torch.allclose(moved, x)
    torch.testing.assert_close(
        fn(moved, y, reduction="none", **kw), fn(x, y, reduction="none", **kw)
    )


@pytest.mark.parametrize(("name", "fn", "stats_fn", "ref", "kw"), MEMBERS, ids=IDS)
def test_contract(name, fn, stats_fn, ref, kw):
    x, y, p = random_batch()
    check_reductions(fn, x, y, **kw)
    check_reductions(fn, x, p, **kw)
    check_weight_and_ignore(fn, x, y, **kw)
    check_gradcheck(fn, x, y, **kw)
    check_gradcheck(fn, x, p, **kw)
    check_bad_inputs(fn, **kw)


@pytest.mark.parametrize("kw", [{}, {"a": 3.0, "b": 1.5}])
def test_z_loss_shift_and_scale_invariance_and_gradient_form(kw):
    x, y, p = random_batch(9, 6, seed=7)
    for target in (y, p):
        base = spherical_z_loss(x, target, reduction="none", **kw)
        for alpha, beta in ((0.3, -4.0), (7.0, 9.0), (1e3, 0.5)):
            moved = spherical_z_loss(alpha * x + beta, target, reduction="none", **kw)
            torch.testing.assert_close(moved, base)
        _, g = _value_and_grad(spherical_z_loss, x, target, reduction="sum", **kw)
        assert g.abs().max() > 1e-3
        torch.testing.assert_close(g.sum(dim=1), torch.zeros(9, dtype=x.dtype), atol=1e-12, rtol=0)
        torch.testing.assert_close(
            (g * x).sum(dim=1), torch.zeros(9, dtype=x.dtype), atol=1e-11, rtol=0
        )


def test_z_loss_large_a_tends_to_hinge_on_z_score():
    x, y, _ = random_batch(8, 6, seed=9)
    b = 0.8
    z = (x - x.mean(1, keepdim=True)) / x.std(1, correction=0, keepdim=True)
    hinge = (b - z.gather(1, y[:, None]).squeeze(1)).clamp_min(0)
    assert (hinge > 0).any() and (hinge == 0).any()
    for a in (1e2, 1e6):
        out = spherical_z_loss(x, y, a=a, b=b, reduction="none")
        assert ((out - hinge).abs() <= math.log(2) / a + 1e-12).all()
        assert (out >= hinge - 1e-12).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_z_loss_equal_outputs_are_finite(dtype):
    """sigma = 0: z is 0, the loss is softplus(a*b)/a, gradients stay finite."""
    x = torch.tensor([[3.0] * 5, [0.0] * 5, [0.1] * 5], dtype=dtype)
    y = torch.tensor([0, 2, 4])
    for a, b in ((1.0, 0.0), (2.0, 1.5)):
        out, g = _value_and_grad(spherical_z_loss, x, y, a=a, b=b, reduction="none")
        torch.testing.assert_close(out, torch.full_like(out, math.log1p(math.exp(a * b)) / a))
        assert torch.isfinite(g).all()
        stats = spherical_z_loss_from_stats(*_stats(x, y), 5, a=a, b=b, reduction="none")
        assert torch.isfinite(stats).all()


def test_z_loss_centres_rows_before_forming_stats():
    """A large common offset cancels catastrophically in S2/D - mu^2 in float32."""
    x, y, _ = random_batch(8, 6, seed=11)
    ref = spherical_z_loss(x, y, reduction="none")
    out = spherical_z_loss((x + 1e4).float(), y, reduction="none")
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)


def test_squared_error_soft_target_is_squared_error_to_p_up_to_a_constant():
    x, _, p = random_batch(7, 5, seed=13)
    expected = ((x - p) ** 2).sum(1) + 1 - (p * p).sum(1)
    torch.testing.assert_close(spherical_squared_error(x, p, reduction="none"), expected)


@pytest.mark.parametrize(
    ("fn", "kw"),
    [
        (spherical_z_loss, {}),
        (spherical_z_loss, {"a": 2.0, "b": 1.0}),
        (spherical_softmax_loss, {}),
        (taylor_softmax_loss, {}),
    ],
)
def test_half_precision_at_magnitude_1e4(fn, kw):
    _, y, _ = random_batch()
    check_half_precision(fn, y, **kw)


def test_squared_error_half_precision():
    """Not scale free: float16 holds the loss only for small outputs (documented)."""
    _, y, _ = random_batch()
    check_half_precision(spherical_squared_error, y, magnitude=10.0)
    x = torch.randn(7, 5) * 1e4
    big = spherical_squared_error(x.bfloat16(), y, reduction="none")
    assert big.dtype == torch.bfloat16 and torch.isfinite(big).all()
    torch.testing.assert_close(
        big.float(),
        spherical_squared_error(x.bfloat16().float(), y, reduction="none"),
        rtol=2e-2,
        atol=0,
    )
    assert torch.isinf(spherical_squared_error(x.half(), y, reduction="none")).all()


def test_stats_form_with_half_outputs_and_float32_stats():
    _, y, _ = random_batch()
    xh = (torch.randn(7, 5) * 1e4).half()
    oc, s1, s2 = _stats(xh.float(), y)
    out = spherical_z_loss_from_stats(oc.half(), s1, s2, 5, reduction="none")
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out, spherical_z_loss(xh, y, reduction="none"), rtol=2e-2, atol=2e-2)


def test_bad_hyperparameters_name_the_argument():
    x, y, _ = random_batch()
    for bad, name in (
        ({"a": 0.0}, "a"),
        ({"a": -1.0}, "a"),
        ({"a": math.nan}, "a"),
        ({"a": math.inf}, "a"),
        ({"b": math.inf}, "b"),
        ({"b": math.nan}, "b"),
        ({"eps": 0.0}, "eps"),
    ):
        with pytest.raises(ValueError, match=name):
            spherical_z_loss(x, y, **bad)
        with pytest.raises(ValueError, match=name):
            SphericalZLoss(**bad)
        with pytest.raises(ValueError, match=name):
            spherical_z_loss_from_stats(*_stats(x, y), 5, **bad)
    for eps in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="eps"):
            spherical_softmax_loss(x, y, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            SphericalSoftmaxLoss(eps=eps)
    with pytest.raises(ValueError, match="reduction"):
        SphericalZLoss(reduction="avg")


@pytest.mark.parametrize("stats_fn", [m[2] for m in MEMBERS[1:]])
def test_stats_form_bad_inputs(stats_fn):
    x, y, _ = random_batch()
    oc, s1, s2 = _stats(x, y)
    cases = [
        ((oc[:, None], s1, s2, 5), "o_target"),
        ((oc.long(), s1, s2, 5), "o_target"),
        ((oc[:0], s1[:0], s2[:0], 5), "o_target"),
        ((oc, s1[:3], s2, 5), "s1"),
        ((oc, s1, s2[:, None], 5), "s2"),
        ((oc, s1, -s2, 5), "s2"),
        ((oc, s1, s2.clone().fill_(math.nan), 5), "s2"),
        ((oc.clone().fill_(math.inf), s1, s2, 5), "o_target"),
        ((oc, s1, s2, 1), "num_classes"),
        ((oc, s1, s2, 5.0), "num_classes"),
    ]
    for args, name in cases:
        with pytest.raises(ValueError, match=name):
            stats_fn(*args)
    with pytest.raises(ValueError, match="reduction"):
        stats_fn(oc, s1, s2, 5, reduction="avg")


@pytest.mark.parametrize(
    "name", ["spherical_z_loss", "spherical_softmax", "taylor_softmax", "spherical_squared_error"]
)
def test_registered_with_paper_and_module(name):
    entry = get(name)
    assert entry.papers == (2,) and entry.kind == "loss" and entry.family == "classification"
    x, y, _ = random_batch(dtype=torch.float32)
    w = torch.linspace(0.5, 2.0, 5)
    module = entry.build(weight=w, reduction="sum")
    assert "weight" in module.state_dict()
    expected = entry.function(x, y, weight=w, reduction="sum", **entry.defaults)
    torch.testing.assert_close(module(x, y), expected)
    assert get("spherical_z_loss").defaults == {"a": 1.0, "b": 0.0}


def test_centred_stats_function():
    """(o_c - mu, sum (o - mu)^2) with a hand-written backward: values, gradcheck, and a
    large common offset that the centring absorbs."""
    x, y, _ = random_batch(6, 5, seed=21)
    oc, s2 = _CentredStats.apply(x, y)
    xc = x - x.mean(1, keepdim=True)
    torch.testing.assert_close(oc, xc.gather(1, y[:, None]).squeeze(1))
    torch.testing.assert_close(s2, (xc * xc).sum(1))
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: _CentredStats.apply(z, y), (xg,))
    far = (x + 1e4).float()
    oc32, s232 = _CentredStats.apply(far, y)
    torch.testing.assert_close(s232.double(), s2, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(oc32.double(), oc, rtol=1e-2, atol=1e-2)
