"""Checks every multi-label objective must pass (DESIGN.md "How an objective is proven").

Each helper takes ``fn(scores, target, **kw)``; a test module supplies its objective.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

Loss = Callable[..., Tensor]


def random_multilabel(
    n: int = 6,
    num_labels: int = 5,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 2.0,
    min_pos: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores, 0/1 float targets with at least ``min_pos`` positive and one negative per row,
    and a random bool mask of known entries (every row keeps one known entry)."""
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(n, num_labels, generator=g)).to(dtype)
    y = (torch.rand(n, num_labels, generator=g) < 0.4).to(dtype)
    for i in range(n):
        perm = torch.randperm(num_labels, generator=g)
        y[i, perm[:min_pos]] = 1
        y[i, perm[-1]] = 0
    mask = torch.rand(n, num_labels, generator=g) < 0.7
    mask[:, 0] = True
    return x, y, mask


def check_reductions(fn: Loss, x: Tensor, y: Tensor, **kw) -> None:
    """``none`` has one value per sample; ``sum`` and ``mean`` agree with it."""
    none = fn(x, y, reduction="none", **kw)
    assert none.shape == (x.shape[0],)
    torch.testing.assert_close(fn(x, y, reduction="sum", **kw), none.sum())
    torch.testing.assert_close(fn(x, y, reduction="mean", **kw), none.mean())


def check_gradcheck(fn: Loss, x: Tensor, y: Tensor, **kw) -> None:
    """``torch.autograd.gradcheck`` in float64 on the summed loss."""
    xg = x.detach().to(torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fn(z, y, reduction="sum", **kw), (xg,))


def check_mask_zero_grad(fn: Loss, x: Tensor, y: Tensor, mask: Tensor, **kw) -> None:
    """Unknown entries get exactly zero gradient, and changing their score or target does not
    change the loss."""
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg, y, mask=mask, reduction="sum", **kw)
    out.backward()
    assert (xg.grad[~mask] == 0).all()
    x2, y2 = x.clone(), y.clone()
    x2[~mask] += 3.0
    y2[~mask] = 1 - y2[~mask]
    torch.testing.assert_close(
        fn(x2, y2, mask=mask, reduction="none", **kw), fn(x, y, mask=mask, reduction="none", **kw)
    )


def check_half_precision(
    fn: Loss, y: Tensor, *, magnitude: float = 30.0, rtol: float = 2e-2, **kw
) -> None:
    """bfloat16/float16 scores give finite results of the input dtype, close to the float32
    result on the same rounded inputs, and finite gradients."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(*y.shape, generator=g) * magnitude
    for dtype in (torch.bfloat16, torch.float16):
        xh = base.to(dtype).requires_grad_(True)
        out = fn(xh, y, reduction="none", **kw)
        assert out.dtype == dtype
        assert torch.isfinite(out).all()
        ref = fn(xh.detach().float(), y, reduction="none", **kw)
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=rtol, atol=rtol)
        out.sum().backward()
        assert xh.grad is not None and torch.isfinite(xh.grad).all()


def check_bad_inputs(fn: Loss, *, num_labels: int = 5, **kw) -> None:
    """Shape, value, NaN, empty batch, mask and reduction errors name the argument."""
    x, y, mask = random_multilabel(4, num_labels, dtype=torch.float32)
    bad_y = y.clone()
    bad_y[0, 0] = 2
    cases: list[tuple[tuple, dict, str]] = [
        ((x[0], y), {}, "logits|scores"),
        ((x, y[:3]), {}, "target"),
        ((x, bad_y), {}, "target"),
        ((x, y - 0.5), {}, "target"),
        ((torch.full_like(x, float("nan")), y), {}, "logits|scores"),
        ((x[:0], y[:0]), {}, "logits|scores"),
        ((x, y), {"mask": mask[:, :-1]}, "mask"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, extra, name in cases:
        with pytest.raises(ValueError, match=name):
            fn(*args, **{**kw, **extra})
