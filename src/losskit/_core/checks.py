"""Input validation shared by every objective.

Every check raises ``ValueError`` naming the argument, what was expected and what came.
Checks that need a device synchronisation (value checks on tensors: NaN/Inf, class
index range, probability sums) can be switched off with :func:`set_checks`; shape, dtype
and hyperparameter checks are always on because they cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")
_CHECKS = {"enabled": True}


def set_checks(enabled: bool) -> None:
    """Turn the value checks that synchronise with the device on (default) or off."""
    _CHECKS["enabled"] = bool(enabled)


def checks_enabled() -> bool:
    """Whether value checks that need a device synchronisation are on."""
    return _CHECKS["enabled"]


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_finite(name: str, x: Tensor) -> None:
    if checks_enabled() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf values")


def check_scores(logits: Tensor, name: str = "logits", *, min_classes: int = 2) -> Tensor:
    """Validate a floating [N, C] score matrix with N >= 1 and C >= ``min_classes``."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {logits.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape [N, C], got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(logits.shape)})")
    if logits.shape[1] < min_classes:
        raise ValueError(
            f"{name} must have at least {min_classes} classes, got shape {tuple(logits.shape)}"
        )
    check_finite(name, logits)
    return logits


def is_soft(target: Tensor) -> bool:
    """Hard and soft targets are told apart by dtype: floating means a distribution."""
    return target.is_floating_point()


def check_class_target(
    target: Tensor,
    logits: Tensor,
    *,
    ignore_index: int | None = None,
    allow_soft: bool = True,
    name: str = "target",
) -> None:
    """Validate integer class indices [N] in [0, C) (or ``ignore_index``) or
    probability rows [N, C] that are non-negative and sum to one."""
    n, c = logits.shape
    if not isinstance(target, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if is_soft(target):
        if not allow_soft:
            raise ValueError(f"{name} must hold integer class indices, got dtype {target.dtype}")
        if tuple(target.shape) != (n, c):
            raise ValueError(
                f"{name} with probabilities must have shape {(n, c)} like logits, "
                f"got {tuple(target.shape)}"
            )
        if checks_enabled():
            check_finite(name, target)
            if bool((target < 0).any()):
                raise ValueError(f"{name} probabilities must be non-negative")
            sums = target.sum(dim=1)
            tol = 1e-3 if target.dtype in (torch.float16, torch.bfloat16) else 1e-5
            if not bool(torch.allclose(sums, torch.ones_like(sums), atol=tol * c, rtol=0)):
                raise ValueError(f"{name} probability rows must sum to 1, got sums {sums[:4]}")
        return
    if target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {target.dtype}")
    if tuple(target.shape) != (n,):
        raise ValueError(
            f"{name} with class indices must have shape ({n},) to match logits {(n, c)}, "
            f"got {tuple(target.shape)}"
        )
    if checks_enabled():
        valid = target if ignore_index is None else target[target != ignore_index]
        if valid.numel() and (bool((valid < 0).any()) or bool((valid >= c).any())):
            bad = valid[(valid < 0) | (valid >= c)][0].item()
            raise ValueError(f"{name} holds class index {bad}, outside [0, {c})")


def check_class_weight(weight: Tensor | None, num_classes: int, name: str = "weight") -> None:
    if weight is None:
        return
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape ({num_classes},)")
    if tuple(weight.shape) != (num_classes,):
        raise ValueError(f"{name} must have shape ({num_classes},), got {tuple(weight.shape)}")
    if checks_enabled() and (bool((weight < 0).any()) or not bool(torch.isfinite(weight).all())):
        raise ValueError(f"{name} must be finite and non-negative")


def check_number(
    name: str,
    value: float,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check a scalar hyperparameter lies in [low, high] (open ends where asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return v


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
