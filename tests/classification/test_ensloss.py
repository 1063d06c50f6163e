"""EnsLoss (paper 16): slow reference, consistency conditions, exact gradient, determinism.

``torch.autograd.gradcheck`` is not meaningful here: the loss is ``g.detach() * z`` with a
derivative ``g`` that depends on the ranks of ``z`` and on ``1 / z`` for ``z > 1`` but is
detached on purpose, so finite differences see ``d(g z)/dz = g + z dg/dz`` while autograd
(by design of the method) returns ``g``. We check the gradient formula ``g y / N`` exactly
against a slow reference instead.
"""

from __future__ import annotations

import math

import pytest
import torch

from losskit.classification.ensloss import EnsLoss, ens_loss
from tests.contract import check_half_precision, check_reductions


def _batch(n=9, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    f = scale * torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    return f, y


def _gen(seed=123):
    return torch.Generator().manual_seed(seed)


def _reference_g(z, lam, seed):
    """The paper's recipe, one Python float at a time."""
    n = len(z)
    eps = torch.randn(n, generator=_gen(seed), dtype=torch.float32).double().tolist()
    draws = []
    for e in eps:
        if lam == 0:
            b = math.exp(e)
        else:
            base = max(1.0 + lam * e, 0.0)
            b = math.inf if (base == 0.0 and lam < 0) else base ** (1.0 / lam)
        draws.append(max(-b, -1.0))
    draws.sort()
    g = [0.0] * n
    for rank, i in enumerate(sorted(range(n), key=lambda k: z[k])):
        g[i] = draws[rank]
    return [(gi / zi if zi > 1 else gi) - 1e-6 for gi, zi in zip(g, z, strict=True)]


@pytest.mark.parametrize("lam", [0.0, 0.5, -0.5])
@pytest.mark.parametrize("pm_one", [False, True])
def test_matches_slow_reference_value_and_gradient(lam, pm_one):
    f, y01 = _batch(11, seed=1)
    target = y01 * 2 - 1 if pm_one else y01
    ysign = (y01 * 2 - 1).double()
    z = (ysign * f).tolist()
    g = torch.tensor(_reference_g(z, lam, seed=7), dtype=torch.float64)
    fg = f.clone().requires_grad_(True)
    loss = ens_loss(fg, target, lam=lam, generator=_gen(7))
    torch.testing.assert_close(loss, (g * ysign * f).mean())
    loss.backward()
    # the gradient is exactly g * y / N
    torch.testing.assert_close(fg.grad, g * ysign / len(z), rtol=0, atol=1e-15)
    none = ens_loss(f, target, lam=lam, generator=_gen(7), reduction="none")
    torch.testing.assert_close(none, g * ysign * f)


@pytest.mark.parametrize("lam", [0.0, 0.5, -0.5, 2.0])
def test_consistency_conditions_and_range(lam):
    f, y = _batch(300, seed=2, scale=3.0)
    fg = f.clone().requires_grad_(True)
    ens_loss(fg, y, lam=lam, generator=_gen(3), reduction="sum").backward()
    ysign = (y * 2 - 1).double()
    g, z = fg.grad * ysign, ysign * f
    order = torch.argsort(z)
    # convexity: the derivative is non-decreasing in the margin
    assert (torch.diff(g[order]) >= 0).all()
    # calibration: strictly negative everywhere, in particular at z = 0
    assert (g >= -1 - 1e-6).all() and (g <= -1e-6).all()
    if lam <= 0:
        assert (g < -1e-6).all()
    # bounded tail: g z = g~ - 1e-6 z with g~ in [-1, 0] for z > 1 (g~ < 0 when lam <= 0)
    tail = z > 1
    assert tail.any()
    assert ((g[tail] + 1e-6) * z[tail] >= -1 - 1e-12).all()
    assert ((g[tail] + 1e-6) * z[tail] <= 1e-12).all()


def test_determinism_and_conventions():
    f, y = _batch(20, seed=4)
    a = ens_loss(f, y, generator=_gen(5))
    torch.testing.assert_close(a, ens_loss(f, y, generator=_gen(5)), rtol=0, atol=0)
    assert not torch.equal(a, ens_loss(f, y, generator=_gen(6)))
    # {0,1} and {-1,+1} targets, [N] and [N, 1] scores give the same loss
    torch.testing.assert_close(a, ens_loss(f[:, None], y * 2 - 1, generator=_gen(5)))
    # the global generator is used when none is given
    torch.manual_seed(11)
    b = ens_loss(f, y)
    torch.manual_seed(11)
    torch.testing.assert_close(b, ens_loss(f, y))


def test_weight_and_reductions():
    f, y = _batch(10, seed=8)
    fn = lambda s, t, **kw: ens_loss(s, t, generator=_gen(9), **kw)  # noqa: E731
    check_reductions(fn, f, y)
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    none = fn(f, y, reduction="none")
    torch.testing.assert_close(fn(f, y, weight=w, reduction="none"), none * w[y])
    torch.testing.assert_close(fn(f, y, weight=w), (none * w[y]).sum() / w[y].sum())
    # the weight scales the per-sample gradient, the ranks are unchanged
    fg = f.clone().requires_grad_(True)
    fn(fg, y, weight=w, reduction="sum").backward()
    fh = f.clone().requires_grad_(True)
    fn(fh, y, reduction="sum").backward()
    torch.testing.assert_close(fg.grad, fh.grad * w[y])


def test_module_seed_state_dict_and_half_precision():
    f, y = _batch(12, seed=10)
    m = EnsLoss(lam=0.0, seed=3)
    torch.testing.assert_close(m(f, y), ens_loss(f, y, generator=_gen(3)))
    state = m.state_dict()
    nxt = m(f, y)
    m2 = EnsLoss(seed=99)
    m2.load_state_dict(state)
    torch.testing.assert_close(m2(f, y), nxt, rtol=0, atol=0)
    assert EnsLoss().state_dict().keys() == EnsLoss(seed=1).state_dict().keys()
    # magnitude 1e4: for z < -1 the loss is |g| |z| <= 1e4, which fp16 holds
    check_half_precision(lambda s, t, **kw: ens_loss(s, t, generator=_gen(2), **kw), y, c=1)


def test_bad_inputs():
    f, y = _batch(4)
    cases = [
        ((f[:, None].expand(4, 2), y), {}, "scores"),
        ((f[None, None], y), {}, "scores"),
        ((y, y), {}, "scores"),
        ((torch.full_like(f, float("nan")), y), {}, "scores"),
        ((f[:0], y[:0]), {}, "scores"),
        ((f, y.double()), {}, "target"),
        ((f, y.bool()), {}, "target"),
        ((f, y[:3]), {}, "target"),
        ((f, torch.tensor([0, 1, 2, 0])), {}, "target"),
        ((f, torch.tensor([0, 1, -1, 0])), {}, "target"),
        ((f, y), {"weight": torch.ones(3, dtype=torch.float64)}, "weight"),
        ((f, y), {"reduction": "avg"}, "reduction"),
        ((f, y), {"lam": float("nan")}, "lam"),
        ((f, y), {"lam": float("inf")}, "lam"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            ens_loss(*args, **kw)
    for kw, name in [({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"lam": "a"}, "lam")]:
        with pytest.raises(ValueError, match=name):
            EnsLoss(**kw)
    with pytest.raises(ValueError, match="reduction"):
        EnsLoss(reduction="avg")
