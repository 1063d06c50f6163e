"""Checks every multi-label objective must pass (DESIGN.md "How an objective is proven").

Each helper takes ``fn(scores, target, **kw)``; a test module supplies its objective. The
reduction and gradcheck checks are those of ``tests.contract``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from tests.contract import check_gradcheck, check_half_precision_at, check_reductions

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


def mask_with_positives(y: Tensor, mask: Tensor) -> Tensor:
    """The random mask, with each row's first positive known."""
    mask = mask.clone()
    mask[torch.arange(y.shape[0]), y.argmax(dim=1)] = True
    return mask


def slow_known_mean(term: Callable[[int, int], Tensor], mask: Tensor) -> Tensor:
    """The per-sample reduction of the package, entry by entry: for each row ``i`` of
    ``mask`` the mean of ``term(i, j)`` over its known entries ``j`` (every row needs one)."""
    out = []
    for i in range(mask.shape[0]):
        terms = [term(i, j) for j in range(mask.shape[1]) if mask[i, j]]
        out.append(sum(terms) / len(terms))
    return torch.stack(out)


def check_positive_averaged(fn: Loss, module: Callable[..., nn.Module]) -> None:
    """The contract of a loss averaged over each row's known positives, with ``empty`` for
    rows without one: reductions, gradcheck and masking, half precision, bad inputs, a bad
    ``empty`` in the function and the ``module`` form, which equals the function."""
    x, y, mask = random_multilabel()
    known = mask_with_positives(y, mask)
    check_reductions(fn, x, y)
    check_reductions(fn, x, y, mask=known)
    check_gradcheck(fn, x, y, mask=known)
    check_mask_zero_grad(fn, x, y, mask, empty="skip")
    check_half_precision(fn, y.float())
    check_bad_inputs(fn)
    with pytest.raises(ValueError, match="empty"):
        fn(x, y, empty="zero")
    with pytest.raises(ValueError, match="empty"):
        module(empty="zero")
    torch.testing.assert_close(
        module(reduction="sum")(x, y, known), fn(x, y, mask=known, reduction="sum")
    )


def check_row_without_positives(fn: Loss, x: Tensor, y: Tensor, row: int) -> tuple[Tensor, Tensor]:
    """Row ``row`` of ``y`` has no positive: by default ``fn`` raises naming it; with
    ``empty="skip"`` it gives the row 0 and zero gradient and drops it from the mean. Returns
    the per-sample values and the gradient of their sum."""
    with pytest.raises(ValueError, match=f"row {row} has none"):
        fn(x, y)
    xg = x.clone().requires_grad_(True)
    none = fn(xg, y, empty="skip", reduction="none")
    assert none[row] == 0
    keep = torch.arange(x.shape[0]) != row
    torch.testing.assert_close(fn(x, y, empty="skip"), none[keep].mean())
    none.sum().backward()
    assert torch.isfinite(xg.grad).all() and (xg.grad[row] == 0).all()
    return none.detach(), xg.grad


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
    """bfloat16/float16 scores of magnitude ``magnitude``: see
    :func:`tests.contract.check_half_precision_at`."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(*y.shape, generator=g) * magnitude
    check_half_precision_at(fn, base, y, rtol=rtol, **kw)


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
