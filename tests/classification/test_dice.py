"""Dice and self-adjusting Dice (paper 17): slow reference, exact properties, gradcheck,
half precision, bad inputs, per-example and batch-level reductions."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from losskit.classification.dice import (
    DiceLoss,
    SelfAdjustingDiceLoss,
    _HardDiceRows,
    _SelfAdjustedSoftmax,
    dice_loss,
    self_adjusting_dice_loss,
)
from tests.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_weight_and_ignore,
    random_batch,
)


def _binary(n=9, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    y[0], y[1] = 0, 1
    return x, y


def _reference(x, t, *, gamma, square, alpha, batch, weight=None):
    """Naive Dice: per-class matrices, loops over samples and classes.

    Returns the per-example losses [N] (``batch=False``) or the per-class Dice [C']."""
    if x.ndim == 1:
        p = torch.sigmoid(x)[:, None]
        y = (t.double() if t.is_floating_point() else (t == 1).double())[:, None]
    else:
        p = torch.softmax(x, dim=1)
        y = t if t.is_floating_point() else torch.eye(x.shape[1], dtype=x.dtype)[t]
    pt = (1 - p) ** alpha * p
    k = 2 if square else 1
    n, c = pt.shape
    if batch:
        out = []
        for j in range(c):
            inter = sum(pt[i, j] * y[i, j] for i in range(n))
            den = sum(pt[i, j] ** k + y[i, j] ** k for i in range(n))
            out.append(1 - (2 * inter + gamma) / (den + gamma))
        return torch.stack(out)
    rows = []
    for i in range(n):
        terms = [
            (1 - (2 * pt[i, j] * y[i, j] + gamma) / (pt[i, j] ** k + y[i, j] ** k + gamma))
            * (1.0 if weight is None else weight[j])
            for j in range(c)
        ]
        rows.append(sum(terms) / c)
    return torch.stack(rows)


SETTINGS = [
    {"gamma": 1.0, "square": False, "alpha": 0.0},
    {"gamma": 1e-4, "square": True, "alpha": 0.0},
    {"gamma": 1.0, "square": True, "alpha": 0.01},
    {"gamma": 0.5, "square": False, "alpha": 0.7},
]


def _ours(x, t, s, **kw):
    return self_adjusting_dice_loss(
        x, t, gamma=s["gamma"], square_denominator=s["square"], alpha=s["alpha"], **kw
    )


def _assert_value_and_grad(ours_fn, ref_fn, x):
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    a, b = ours_fn(xa), ref_fn(xb)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("s", SETTINGS)
def test_matches_reference_per_example(s):
    x, y, p = random_batch(7, 4)
    w = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)
    ref = partial(_reference, gamma=s["gamma"], square=s["square"], alpha=s["alpha"], batch=False)
    _assert_value_and_grad(lambda z: _ours(z, y, s, reduction="sum"), lambda z: ref(z, y).sum(), x)
    _assert_value_and_grad(lambda z: _ours(z, p, s), lambda z: ref(z, p).mean(), x)
    # soft targets: the class weight scales each class term, "mean" divides by N
    _assert_value_and_grad(
        lambda z: _ours(z, p, s, weight=w), lambda z: ref(z, p, weight=w).mean(), x
    )
    xb, yb = _binary(8)
    _assert_value_and_grad(
        lambda z: _ours(z, yb, s, reduction="sum"), lambda z: ref(z, yb).sum(), xb
    )
    pb = torch.sigmoid(torch.randn(8, dtype=torch.float64))
    _assert_value_and_grad(lambda z: _ours(z[:, None], pb, s), lambda z: ref(z, pb).mean(), xb)


@pytest.mark.parametrize("s", SETTINGS)
def test_matches_reference_batch(s):
    x, y, p = random_batch(9, 3)
    w = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    ref = partial(_reference, gamma=s["gamma"], square=s["square"], alpha=s["alpha"], batch=True)
    for t in (y, p):
        _assert_value_and_grad(
            lambda z, t=t: _ours(z, t, s, batch_dice=True), lambda z, t=t: ref(z, t).mean(), x
        )
        _assert_value_and_grad(
            lambda z, t=t: _ours(z, t, s, batch_dice=True, weight=w, reduction="sum"),
            lambda z, t=t: (w * ref(z, t)).sum(),
            x,
        )
        _assert_value_and_grad(
            lambda z, t=t: _ours(z, t, s, batch_dice=True, weight=w),
            lambda z, t=t: (w * ref(z, t)).sum() / w.sum(),
            x,
        )
    xb, yb = _binary(10)
    _assert_value_and_grad(lambda z: _ours(z, yb, s, batch_dice=True), lambda z: ref(z, yb)[0], xb)


@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_easy_negatives_leave_batch_dice_unchanged(square, alpha):
    x, y = _binary(12, seed=3)
    kw = {"square_denominator": square, "alpha": alpha}
    # sigmoid(-1e4) is exactly 0 in float64: easy negatives with p = 0 and y = 0
    xe = torch.cat([x, torch.full((50,), -1e4, dtype=torch.float64)])
    ye = torch.cat([y, torch.zeros(50, dtype=y.dtype)])
    assert (torch.sigmoid(xe[12:]) == 0).all()
    base = self_adjusting_dice_loss(x, y, batch_dice=True, **kw)
    torch.testing.assert_close(self_adjusting_dice_loss(xe, ye, batch_dice=True, **kw), base)
    # per example they contribute exactly 0: the sum is unchanged, the mean shrinks
    torch.testing.assert_close(
        self_adjusting_dice_loss(xe, ye, reduction="sum", **kw),
        self_adjusting_dice_loss(x, y, reduction="sum", **kw),
    )
    # cross-entropy-like per-sample averages do change (the paper's point)
    assert self_adjusting_dice_loss(xe, ye, **kw) < self_adjusting_dice_loss(x, y, **kw)


@pytest.mark.parametrize("gamma", [1e-4, 1.0, 10.0])
def test_perfect_prediction_is_zero_in_square_form(gamma):
    x, _, _ = random_batch(6, 4)
    p = torch.softmax(x, dim=1)
    for batch in (False, True):
        red = "mean" if batch else "none"
        out = dice_loss(x, p, smooth=gamma, square_denominator=True, batch_dice=batch,
                        reduction=red)  # fmt: skip
        torch.testing.assert_close(out, torch.zeros_like(out), rtol=0, atol=1e-15)
        xb = x[:, 0]
        out = dice_loss(xb, torch.sigmoid(xb), smooth=gamma, square_denominator=True,
                        batch_dice=batch, reduction=red)  # fmt: skip
        torch.testing.assert_close(out, torch.zeros_like(out), rtol=0, atol=1e-15)


def test_alpha_zero_is_plain_dice_and_values_in_unit_interval():
    x, y, p = random_batch(8, 5, scale=6.0)
    for square in (False, True):
        for t in (y, p):
            torch.testing.assert_close(
                self_adjusting_dice_loss(x, t, alpha=0.0, gamma=1.0, square_denominator=square),
                dice_loss(x, t, smooth=1.0, square_denominator=square),
            )
    for alpha in (0.0, 0.01, 2.0):
        for batch in (False, True):
            for t in (y, p):
                red = "sum" if batch else "none"
                out = dice_loss(x, t, alpha=alpha, batch_dice=batch, reduction=red, smooth=1e-3)
                assert (out >= 0).all() and (out <= (5 if batch else 1)).all()
            out = dice_loss(x, y, alpha=alpha, batch_dice=batch, smooth=1e-3)
            assert 0 <= out <= 1
    # the self-adjusting factor only lowers p~, so confident correct examples cost more
    conf = torch.tensor([[8.0, -8.0]], dtype=torch.float64)
    tgt = torch.tensor([0])
    assert self_adjusting_dice_loss(conf, tgt, alpha=0.5) > dice_loss(
        conf, tgt, square_denominator=True
    )


def test_contract_reductions_weight_ignore_gradcheck():
    x, y, p = random_batch()
    xs, ys, ps = random_batch(4, 3)
    for fn in (dice_loss, self_adjusting_dice_loss):
        check_reductions(fn, x, y)
        check_reductions(fn, x, p)
        check_weight_and_ignore(fn, x, y)
        check_gradcheck(fn, xs, ys)
        check_gradcheck(fn, xs, ps, alpha=0.3)
        check_gradcheck(fn, xs, ys, batch_dice=True)
    xb, yb = _binary(5)
    check_gradcheck(self_adjusting_dice_loss, xb, yb, alpha=0.3)
    check_gradcheck(dice_loss, xb, yb, batch_dice=True)
    # binary: weight[y_i] per sample, ignore_index drops tokens
    w = torch.tensor([0.25, 2.0], dtype=torch.float64)
    none = dice_loss(xb, yb, reduction="none")
    torch.testing.assert_close(dice_loss(xb, yb, weight=w, reduction="none"), none * w[yb])
    yi = yb.clone()
    yi[2] = -100
    torch.testing.assert_close(dice_loss(xb, yi), none[yi != -100].mean())


def test_batch_dice_ignore_index_drops_tokens():
    x, y, _ = random_batch(10, 4)
    xb, yb = _binary(10)
    keep = torch.ones(10, dtype=torch.bool)
    keep[[1, 4]] = False
    for xx, yy in ((x, y), (xb, yb)):
        yi = torch.where(keep, yy, torch.full_like(yy, -1))
        for red in ("mean", "sum"):
            torch.testing.assert_close(
                dice_loss(xx, yi, batch_dice=True, ignore_index=-1, reduction=red),
                dice_loss(xx[keep], yy[keep], batch_dice=True, reduction=red),
            )


def test_half_precision():
    _, y, _ = random_batch(6, 5)
    check_half_precision(self_adjusting_dice_loss, y)
    check_half_precision(dice_loss, y)
    check_half_precision(self_adjusting_dice_loss, y.remainder(2), c=1)
    for dtype in (torch.bfloat16, torch.float16):
        xh = (torch.randn(6, 5) * 1e4).to(dtype).requires_grad_(True)
        out = self_adjusting_dice_loss(xh, y, batch_dice=True)
        assert out.dtype == dtype and torch.isfinite(out)
        ref = self_adjusting_dice_loss(xh.detach().float(), y, batch_dice=True)
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
        out.backward()
        assert torch.isfinite(xh.grad).all()
    # p rounds to 1: (1 - p)^alpha is taken in log space, the gradient stays finite
    x = torch.tensor([[50.0, -50.0, 0.0], [0.0, 200.0, 1.0]], requires_grad=True)
    self_adjusting_dice_loss(x, torch.tensor([0, 2]), alpha=0.01).backward()
    assert torch.isfinite(x.grad).all()


def test_modules():
    x, y, _ = random_batch(dtype=torch.float32)
    w = torch.linspace(0.5, 1.5, 5)
    m = SelfAdjustingDiceLoss(weight=w)
    assert "weight" in m.state_dict()
    torch.testing.assert_close(m(x, y), self_adjusting_dice_loss(x, y, weight=w))
    m = DiceLoss(smooth=0.5, batch_dice=True, reduction="sum")
    torch.testing.assert_close(m(x, y), dice_loss(x, y, smooth=0.5, batch_dice=True,
                                                  reduction="sum"))  # fmt: skip


def test_bad_inputs():
    check_bad_inputs(dice_loss)
    check_bad_inputs(self_adjusting_dice_loss)
    xb, yb = _binary(4)
    pb = torch.full((4,), 0.5, dtype=torch.float64)
    cases = [
        ((xb[None, None], yb), {}, "logits"),
        ((xb, yb[:3]), {}, "target"),
        ((xb, yb[:, None]), {}, "target"),
        ((xb, torch.tensor([0, 1, 2, 0])), {}, "target"),
        ((xb, pb + 0.7), {}, "target"),
        ((xb, pb[:3]), {}, "target"),
        ((xb, pb), {"weight": torch.ones(2, dtype=torch.float64)}, "weight"),
        ((xb, yb), {"weight": torch.ones(3, dtype=torch.float64)}, "weight"),
        ((xb, yb), {"batch_dice": True, "weight": torch.ones(2, dtype=torch.float64)}, "weight"),
        ((xb, yb), {"batch_dice": True, "reduction": "none"}, "reduction"),
        ((xb, yb), {"smooth": 0.0}, "smooth"),
        ((xb, yb), {"alpha": -1.0}, "alpha"),
        ((xb, yb), {"alpha": float("inf")}, "alpha"),
        ((xb, yb), {"smooth": float("inf")}, "smooth"),
        ((xb[:0], yb[:0]), {}, "logits"),
        ((torch.full_like(xb, float("inf")), yb), {}, "logits"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            dice_loss(*args, **kw)
    with pytest.raises(ValueError, match="gamma"):
        self_adjusting_dice_loss(xb, yb, gamma=-1.0)
    for cls, kw, name in [
        (DiceLoss, {"smooth": 0}, "smooth"),
        (DiceLoss, {"batch_dice": True, "reduction": "none"}, "reduction"),
        (SelfAdjustingDiceLoss, {"gamma": 0}, "gamma"),
        (SelfAdjustingDiceLoss, {"alpha": -0.1}, "alpha"),
    ]:
        with pytest.raises(ValueError, match=name):
            cls(**kw)


def _adjusted_softmax_autograd(x, alpha):
    """p (1 - p)^alpha through autograd, 1 - p of the top class as the mass of the others."""
    logp = torch.log_softmax(x, dim=1)
    is_top = torch.zeros_like(x, dtype=torch.bool).scatter_(1, x.argmax(1, keepdim=True), True)
    rest = torch.logsumexp(x.masked_fill(is_top, float("-inf")), dim=1, keepdim=True)
    log1m_top = rest - torch.logsumexp(x, dim=1, keepdim=True)
    p_low = torch.where(is_top, torch.zeros_like(logp), logp.exp())
    log1m = torch.where(is_top, log1m_top, torch.log1p(-p_low))
    return torch.exp(logp + alpha * log1m)


@pytest.mark.parametrize("alpha", [0.01, 0.7, 2.0])
def test_self_adjusted_softmax_function(alpha):
    """Values and gradients of the hand-written p (1 - p)^alpha: gradcheck, and agreement
    with autograd on rows with ties, a dominant class and 1 - p_top below float64's range."""
    x, _, _ = random_batch(6, 5, seed=31)
    x[0] = torch.tensor([50.0, -50.0, 0.0, 1.0, 2.0])
    x[1] = torch.tensor([3.0, 3.0, 0.0, 1.0, 2.0])
    x[2] = torch.tensor([800.0, -50.0, 0.0, 1.0, 2.0])
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: _SelfAdjustedSoftmax.apply(z, alpha), (xg,))
    cot = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = _SelfAdjustedSoftmax.apply(xa, alpha)
    ref = _adjusted_softmax_autograd(xb, alpha)
    torch.testing.assert_close(out, ref)
    (out * cot).sum().backward()
    (ref * cot).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    if alpha < 0.5:  # (1 - p)^alpha of the top class, with 1 - p = exp(-798), is kept
        assert out[2, 0] > 0
    with pytest.raises(RuntimeError):
        (g,) = torch.autograd.grad(_SelfAdjustedSoftmax.apply(xg, alpha).sum(), xg,
                                   create_graph=True)  # fmt: skip
        g.sum().backward()


@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("gamma", [1e-4, 1.0])
def test_hard_dice_rows_function(square, gamma):
    g = torch.Generator().manual_seed(2)
    pt = torch.rand(6, 5, generator=g, dtype=torch.float64)
    pt[0, 1] = 0.0  # t = 0: the class term is exactly 0
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    k = 2 if square else 1
    onehot = torch.eye(5, dtype=pt.dtype)[y]
    gap = (pt - onehot) ** 2 if square else pt * (1 - onehot) + onehot * (1 - pt)
    ref = (gap / (pt**k + onehot**k + gamma)).mean(1)
    torch.testing.assert_close(_HardDiceRows.apply(pt, y, gamma, square), ref)
    ptg = torch.rand(6, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: _HardDiceRows.apply(t, y, gamma, square), (ptg,))


def test_float32_extreme_rows_match_float64():
    """Scores whose 1 - p_top underflows in float32 still give float64's loss and gradient."""
    x = torch.tensor([[120.0, -5.0, 0.0, 3.0], [0.5, 0.2, -0.1, 0.0], [-3.0, 90.0, 1.0, 2.0]])
    y = torch.tensor([0, 2, 3])
    for fn in (dice_loss, self_adjusting_dice_loss):
        outs = []
        for dtype in (torch.float32, torch.float64):
            xg = x.clone().to(dtype).requires_grad_(True)
            out = fn(xg, y, reduction="sum")
            out.backward()
            outs.append((out.double(), xg.grad.double()))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
