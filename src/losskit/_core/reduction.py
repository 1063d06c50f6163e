"""Reduction shared by every loss.

Semantics follow ``torch.nn.functional.cross_entropy``:

- ``"none"``: one value per sample, ``w_i * l_i``; ignored samples give 0.
- ``"sum"``:  ``sum_i w_i * l_i``.
- ``"mean"``: ``sum_i w_i * l_i / sum_i w_i`` over the samples that are not ignored, where
  ``w_i = weight[y_i]`` for hard targets (1 without class weights). A batch whose samples are
  all ignored gives NaN, as in torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_reduction


def sample_weights(
    target: Tensor, weight: Tensor | None, ignore_index: int | None
) -> tuple[Tensor | None, Tensor | None]:
    """Per-sample weights ``weight[y_i]`` and the mask of samples that are not ignored.

    Returns ``(w, keep)``, each ``None`` when it would be all ones; for hard targets only.
    """
    keep = None if ignore_index is None else target != ignore_index
    if keep is not None and bool(keep.all()):
        keep = None
    w = None
    if weight is not None:
        safe = target if keep is None else torch.where(keep, target, torch.zeros_like(target))
        w = weight[safe]
        if keep is not None:
            w = w * keep
    elif keep is not None:
        w = keep.to(torch.float32)
    return w, keep


def safe_target(target: Tensor, keep: Tensor | None) -> Tensor:
    """Class indices with ignored entries replaced by 0, so they can index safely."""
    return target if keep is None else torch.where(keep, target, torch.zeros_like(target))


def reduce_loss(
    loss: Tensor, reduction: str, w: Tensor | None = None, *, weighted: bool = False
) -> Tensor:
    """Reduce per-sample losses ``loss[N]`` with optional per-sample weights ``w[N]``.

    ``w`` carries class weights and zeros for ignored samples (see :func:`sample_weights`).
    With ``weighted=True`` the losses already carry their weights and ``w`` only masks ignored
    samples and forms the ``"mean"`` denominator.
    """
    check_reduction(reduction)
    if w is not None:
        w = w.to(loss.dtype)
        scaled = loss if weighted else loss * w
        loss = torch.where(w > 0, scaled, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    denom = loss.new_tensor(float(loss.numel())) if w is None else w.sum()
    return total / denom
