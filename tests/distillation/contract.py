"""Checks every distillation objective must pass (DESIGN.md "How an objective is proven").

Each helper takes ``fn(student, teacher, target, **kw)``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

Loss = Callable[..., Tensor]


def random_pair(
    n: int = 6,
    c: int = 5,
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Student logits, teacher logits and integer targets."""
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(n, c, generator=g)).to(dtype)
    t = (scale * torch.randn(n, c, generator=g)).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def check_reductions(fn: Loss, s: Tensor, t: Tensor, y: Tensor | None, **kw) -> None:
    none = fn(s, t, y, reduction="none", **kw)
    assert none.shape == (s.shape[0],)
    torch.testing.assert_close(fn(s, t, y, reduction="sum", **kw), none.sum())
    torch.testing.assert_close(fn(s, t, y, reduction="mean", **kw), none.mean())


def check_gradcheck(fn: Loss, s: Tensor, t: Tensor, y: Tensor | None, **kw) -> None:
    sg = s.detach().to(torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fn(z, t, y, reduction="sum", **kw), (sg,))


def check_teacher_gets_no_grad(fn: Loss, s: Tensor, t: Tensor, y: Tensor | None, **kw) -> None:
    tg = t.detach().clone().requires_grad_(True)
    sg = s.detach().clone().requires_grad_(True)
    fn(sg, tg, y, **kw).backward()
    assert tg.grad is None and sg.grad is not None


def check_half_precision(
    fn: Loss, y: Tensor | None, *, c: int = 5, magnitude: float = 30.0, rtol: float = 2e-2, **kw
) -> None:
    g = torch.Generator().manual_seed(1)
    n = 6 if y is None else y.shape[0]
    base_s = torch.randn(n, c, generator=g) * magnitude
    base_t = torch.randn(n, c, generator=g) * magnitude
    for dtype in (torch.bfloat16, torch.float16):
        sh = base_s.to(dtype).requires_grad_(True)
        th = base_t.to(dtype)
        out = fn(sh, th, y, reduction="none", **kw)
        assert out.dtype == dtype
        assert torch.isfinite(out).all()
        ref = fn(sh.detach().float(), th.float(), y, reduction="none", **kw)
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=rtol, atol=rtol)
        out.sum().backward()
        assert sh.grad is not None and torch.isfinite(sh.grad).all()


def check_bad_inputs(fn: Loss, *, c: int = 5, needs_target: bool = False, **kw) -> None:
    """Mismatched student/teacher shapes, bad targets, NaN, empty batch, bad teacher
    probabilities, temperature <= 0 (when ``fn`` takes one) and reductions raise ValueError."""
    s, t, y = random_pair(4, c, dtype=torch.float32)
    p = torch.softmax(t, dim=1)
    cases: list[tuple[tuple, dict, str]] = [
        ((s[0], t, y), {}, "student"),
        ((s, t[:, :-1], y), {}, "teacher"),
        ((s, t, y[:3]), {}, "target"),
        ((s, t, torch.tensor([0, 1, c, 0])), {}, "target"),
        ((torch.full_like(s, float("nan")), t, y), {}, "student"),
        ((s, torch.full_like(t, float("inf")), y), {}, "teacher"),
        ((s[:0], t[:0], y[:0]), {}, "student"),
        ((s, p * 2, y), {"teacher_probs": True}, "teacher"),
        ((s, p - 0.3, y), {"teacher_probs": True}, "teacher"),
        ((s, t, y), {"reduction": "avg"}, "reduction"),
    ]
    if needs_target:
        cases.append(((s, t, None), {}, "target"))
    for args, extra, name in cases:
        with pytest.raises(ValueError, match=name):
            fn(*args, **{**kw, **extra})
