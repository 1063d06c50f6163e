"""Precision helpers: objectives compute in at least float32 and answer in the input dtype."""

from __future__ import annotations

import torch
from torch import Tensor

_LOW = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 compute in float32; float32 and float64 are kept."""
    return torch.float32 if dtype in _LOW else dtype


def upcast(x: Tensor) -> Tensor:
    """``x`` in its compute dtype (a no-op for float32 and float64)."""
    return x.to(compute_dtype(x.dtype)) if x.is_floating_point() else x


def upcast_all(*xs: Tensor | None) -> tuple[Tensor | None, ...]:
    """Upcast each floating tensor to the widest compute dtype among them."""
    floats = [x.dtype for x in xs if x is not None and x.is_floating_point()]
    dtype = torch.float64 if torch.float64 in floats else torch.float32
    return tuple(x.to(dtype) if x is not None and x.is_floating_point() else x for x in xs)
