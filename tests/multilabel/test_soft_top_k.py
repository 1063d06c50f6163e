import math

import pytest
import torch

from losskit._core.registry import get
from losskit.multilabel.decoupled_softmax import sample_positive_entries
from losskit.multilabel.soft_top_k import (
    SoftTopKLoss,
    _Shift,
    _solve_shift,
    soft_top_k,
    soft_top_k_loss,
)
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
)


def slow_shift(x, mask, k, alpha):
    """Row thresholds by plain float bisection to convergence, one row at a time."""
    out = []
    for i in range(x.shape[0]):
        s = [float(v) for v, m in zip(x[i], mask[i], strict=True) if m]
        lo, hi = -max(s) - 50.0, -min(s) + 50.0
        for _ in range(200):
            mid = (lo + hi) / 2
            total = sum(1 / (1 + math.exp(-alpha * (v + mid))) for v in s)
            lo, hi = (mid, hi) if total < k else (lo, mid)
        out.append((lo + hi) / 2)
    return torch.tensor(out, dtype=x.dtype)


def newton_shift(x, mask, k, alpha, steps=3):
    """Differentiable: Newton steps from the converged root (autograd through them)."""
    t = slow_shift(x.detach(), mask, k, alpha)
    for _ in range(steps):
        p = torch.sigmoid(alpha * (x + t[:, None])) * mask
        t = t - (p.sum(1) - k) / (alpha * (p * (1 - p)).sum(1))
    return t


def slow_loss(x, y, mask, k, alpha):
    t = newton_shift(x, mask, k, alpha)
    out = []
    for i in range(x.shape[0]):
        pos = [j for j in range(x.shape[1]) if mask[i, j] and y[i, j] == 1]
        out.append(-sum(torch.nn.functional.logsigmoid(alpha * (x[i, j] + t[i])) for j in pos))
        out[-1] = out[-1] / len(pos)
    return torch.stack(out)


def known_mask(y, seed=0, keep=6):
    """A random mask with each row's first positive and ``keep`` labels known."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(y.shape, generator=g) < 0.7
    mask[:, :keep] = True
    mask[torch.arange(y.shape[0]), y.argmax(dim=1)] = True
    return mask


@pytest.mark.parametrize("num_labels", [12, 300])  # 300 > 4k: the moment path
def test_matches_slow_reference(num_labels):
    x, y, _ = random_multilabel(5, num_labels, seed=2)
    mask = known_mask(y)
    check_matches_reference(
        lambda z: soft_top_k_loss(z, y, k=3, alpha=1.5, n_iter=64, mask=mask, reduction="none"),
        lambda z: slow_loss(z, y, mask, 3, 1.5),
        x,
    )


@pytest.mark.parametrize("num_labels", [40, 3000])
@pytest.mark.parametrize("k", [1, 5, 7.5])
def test_memberships_sum_to_k(num_labels, k):
    x = 3 * torch.randn(6, num_labels, dtype=torch.float64)
    mask = torch.rand(6, num_labels) < 0.8
    p = soft_top_k(x, k, 2.0, 64, mask=mask)
    torch.testing.assert_close(p.sum(1), torch.full((6,), float(k), dtype=x.dtype))
    assert (p[~mask] == 0).all()
    p32 = soft_top_k(x.float(), k, 2.0, 32)
    torch.testing.assert_close(p32.sum(1), torch.full((6,), float(k)), rtol=1e-5, atol=1e-5)


def test_moment_path_equals_full_bisection():
    for dtype in (torch.float64, torch.float32):
        x = (2 * torch.randn(8, 5000)).to(dtype)
        x[0, :50] += 8.0  # a row whose top labels saturate
        mask = torch.rand(8, 5000) < 0.9
        n = mask.sum(1).to(dtype)
        fast = _solve_shift(x, (~mask, None), n, 5.0, 2.0, 64)[0]
        full = _solve_shift(x, (~mask, None), n, 5.0, 2.0, 64, top=5000)[0]
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(fast, full, rtol=0, atol=tol)


def test_threshold_of_equal_scores_and_hard_limit():
    x = torch.full((2, 10), 0.3, dtype=torch.float64)
    torch.testing.assert_close(soft_top_k(x, 4, 2.0, 64), torch.full_like(x, 0.4))
    x = torch.randn(3, 10, dtype=torch.float64)
    hard = torch.zeros_like(x).scatter_(1, x.topk(4, dim=1).indices, 1.0)
    torch.testing.assert_close(soft_top_k(x, 4, 1e4, 64), hard, atol=1e-3, rtol=0)


def test_gradcheck_of_memberships_and_loss():
    x, y, _ = random_multilabel(3, 9, seed=4)
    mask = known_mask(y, keep=5)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: soft_top_k(z, 2, 2.0, 64, mask=mask), (xg,))
    check_gradcheck(soft_top_k_loss, x, y, k=2, n_iter=64, mask=mask)
    x, y, _ = random_multilabel(2, 60, seed=5)  # the moment path (60 > 4k)
    check_gradcheck(soft_top_k_loss, x, y, k=3, n_iter=64)
    x, y, _ = random_multilabel(3, 6, seed=6)  # every label kept exactly (6 <= 4k)
    check_gradcheck(soft_top_k_loss, x, y, k=2, n_iter=64)


def test_float32_threshold_gradient_is_accurate_in_both_tails():
    """dt/ds = -sigma' / sum sigma' keeps its relative accuracy in float32 on saturated labels
    (sigma' ~ e^-13), which ``w - w^2`` with ``w = sigmoid(z)`` alone would not (spread
    2e-2). The rounding of the float32 threshold itself moves the ratios by a few 1e-4."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5000, dtype=torch.float64, generator=g)
    x[:, :3] += 14.0
    grads = []
    for dtype in (torch.float64, torch.float32):
        xg = x.to(dtype).clone().requires_grad_(True)
        n = torch.full((4,), 5000.0, dtype=dtype)
        _Shift.apply(xg, (None, None), n, (3.0, 2.0, 64)).sum().backward()
        grads.append(xg.grad.double())
    ratio = grads[1] / grads[0]
    assert (ratio.amax(dim=1) - ratio.amin(dim=1) < 3e-3).all()


def test_sampling_keeps_floor_k_positives():
    x, y, _ = random_multilabel(6, 40, seed=6, min_pos=4)
    kw = {"k": 2.5, "n_iter": 64, "sample_positives": True, "reduction": "none"}
    out = soft_top_k_loss(x, y, generator=torch.Generator().manual_seed(3), **kw)
    again = soft_top_k_loss(x, y, generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(out, again)
    rows, cols = y.nonzero(as_tuple=True)
    count = torch.bincount(rows, minlength=6).double()
    keep = sample_positive_entries(rows, count, 2, torch.Generator().manual_seed(3))
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[rows[~keep], cols[~keep]] = False  # the positives not drawn leave the row
    xg = x.clone().requires_grad_(True)
    ref = soft_top_k_loss(xg, y, k=2.5, n_iter=64, mask=mask, reduction="none")
    torch.testing.assert_close(out, ref)
    xs = x.clone().requires_grad_(True)
    soft_top_k_loss(xs, y, generator=torch.Generator().manual_seed(3), **kw).sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xs.grad, xg.grad)


def test_contract():
    x, y, mask = random_multilabel(6, 12)
    kw = {"k": 2, "n_iter": 48}
    known = known_mask(y)
    check_reductions(soft_top_k_loss, x, y, **kw)
    check_reductions(soft_top_k_loss, x, y, mask=known, **kw)
    check_mask_zero_grad(soft_top_k_loss, x, y, known_mask(y, 1, keep=3), empty="skip", **kw)
    check_mask_zero_grad(soft_top_k_loss, x, y, known, **kw)
    # not scale-free: magnitude 4 keeps alpha * s in the range of the paper's cos / 0.05 scores
    check_half_precision(soft_top_k_loss, y.float(), magnitude=4.0, **kw)
    check_bad_inputs(soft_top_k_loss, num_labels=5, **kw)
    module = SoftTopKLoss(reduction="sum", **kw)
    torch.testing.assert_close(
        module(x, y, known), soft_top_k_loss(x, y, mask=known, reduction="sum", **kw)
    )
    entry = get("soft_top_k")
    assert entry.papers == (3,) and entry.defaults["k"] == 5 and entry.defaults["alpha"] == 2.0


def test_bad_hyperparameters():
    x, y, _ = random_multilabel(4, 6)
    for kw, name in [
        ({"k": 6}, "k"),
        ({"k": 0}, "k"),
        ({"k": 2, "alpha": 0.0}, "alpha"),
        ({"k": 2, "n_iter": 0}, "n_iter"),
        ({"k": 2, "n_iter": 2.5}, "n_iter"),
        ({"k": 2, "empty": "none"}, "empty"),
    ]:
        with pytest.raises(ValueError, match=name):
            soft_top_k_loss(x, y, **kw)
    few = torch.ones_like(y, dtype=torch.bool)
    few[0, 2:] = False
    with pytest.raises(ValueError, match="row 0 has 2"):
        soft_top_k_loss(x, y, k=2, mask=few, empty="skip")
    with pytest.raises(ValueError, match="k"):
        soft_top_k(x, k=6)
    with pytest.raises(ValueError, match="k"):
        SoftTopKLoss(k=-1)
    y[1] = 0
    with pytest.raises(ValueError, match="row 1 has none"):
        soft_top_k_loss(x, y, k=2)


def test_second_backward_with_retained_graph():
    """The backward writes into the forward's scratch buffer once; a second one allocates."""
    x, y, _ = random_multilabel(4, 40, seed=7)
    for fn in (lambda z: soft_top_k_loss(z, y, k=3), lambda z: soft_top_k(z, 3)[:, :5].sum()):
        xg = x.clone().requires_grad_(True)
        out = fn(xg)
        out.backward(retain_graph=True)
        first = xg.grad.clone()
        out.backward()
        torch.testing.assert_close(xg.grad, 2 * first)
