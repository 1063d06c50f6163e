"""Checks every classification objective must pass (DESIGN.md "How an objective is proven").

Each helper takes ``fn(logits, target, **kw)`` so a test module only supplies its objective.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

Loss = Callable[..., Tensor]


def random_batch(
    n: int = 7, c: int = 5, *, dtype: torch.dtype = torch.float64, seed: int = 0, scale: float = 2.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, integer targets and soft targets for tests."""
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(n, c, generator=g)).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    p = torch.softmax(torch.randn(n, c, generator=g), dim=1).to(dtype)
    return x, y, p


def check_matches_reference(
    loss: Callable[..., Tensor], ref: Callable[..., Tensor], *inputs: Tensor
) -> None:
    """``loss(*inputs)`` and the slow ``ref(*inputs)`` agree, per sample, and so do the
    gradients of their sums with respect to every input."""
    fast = [x.clone().requires_grad_(True) for x in inputs]
    slow = [x.clone().requires_grad_(True) for x in inputs]
    out = loss(*fast)
    expected = ref(*slow)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


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


def check_half_precision(
    fn: Loss, y: Tensor, *, c: int = 5, magnitude: float = 1e4, rtol: float = 2e-2, **kw
) -> None:
    """bfloat16/float16 logits of magnitude ``magnitude``: see :func:`check_half_precision_at`."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(y.shape[0], c, generator=g) * magnitude
    check_half_precision_at(fn, base, y, rtol=rtol, **kw)


def check_half_precision_at(fn: Loss, base: Tensor, y: Tensor, *, rtol: float, **kw) -> None:
    """``base`` rounded to bfloat16/float16 gives finite results of the input dtype, close to
    the float32 result computed on the same (rounded) inputs, and finite gradients."""
    for dtype in (torch.bfloat16, torch.float16):
        xh = base.to(dtype).requires_grad_(True)
        out = fn(xh, y, reduction="none", **kw)
        assert out.dtype == dtype
        assert torch.isfinite(out).all()
        ref = fn(xh.detach().float(), y, reduction="none", **kw)
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=rtol, atol=rtol)
        out.sum().backward()
        assert xh.grad is not None and torch.isfinite(xh.grad).all()


def check_bad_inputs(fn: Loss, *, c: int = 5, soft: bool = True, **kw) -> None:
    """Shape, range, distribution, NaN, empty batch and reduction errors name the argument."""
    x, y, p = random_batch(4, c, dtype=torch.float32)
    cases: list[tuple[tuple, dict, str]] = [
        ((x[0], y), {}, "logits"),
        ((x, y[:3]), {}, "target"),
        ((x, torch.tensor([0, 1, c, 0])), {}, "target"),
        ((x, torch.tensor([0, -3, 1, 0])), {}, "target"),
        ((torch.full_like(x, float("nan")), y), {}, "logits"),
        ((x.clone().fill_(float("inf")), y), {}, "logits"),
        ((x[:0], y[:0]), {}, "logits"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    if soft:
        cases += [((x, p * 2), {}, "target"), ((x, p - 0.5), {}, "target")]
    for args, extra, name in cases:
        with pytest.raises(ValueError, match=name):
            fn(*args, **kw, **extra)


def check_weight_and_ignore(fn: Loss, x: Tensor, y: Tensor, **kw) -> None:
    """Class weights scale samples and form the ``mean`` denominator; ignored samples drop out."""
    c = x.shape[1]
    w = torch.linspace(0.5, 2.0, c, dtype=x.dtype)
    none = fn(x, y, reduction="none", **kw)
    torch.testing.assert_close(fn(x, y, weight=w, reduction="none", **kw), none * w[y])
    torch.testing.assert_close(
        fn(x, y, weight=w, reduction="mean", **kw), (none * w[y]).sum() / w[y].sum()
    )
    y_ign = y.clone()
    y_ign[0] = -100
    out = fn(x, y_ign, reduction="none", ignore_index=-100, **kw)
    assert out[0] == 0
    torch.testing.assert_close(out[1:], none[1:])
    torch.testing.assert_close(
        fn(x, y_ign, reduction="mean", ignore_index=-100, **kw), none[1:].mean()
    )
