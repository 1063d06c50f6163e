"""The one input contract of ``losskit.classification``.

``logits[N, C]`` (floating) and ``target``: either class indices ``[N]`` (integer dtype,
``ignore_index`` entries skipped) or class distributions ``[N, C]`` (floating dtype, rows
non-negative and summing to one). Class ``weight[C]`` weights sample ``i`` by ``weight[y_i]``
for hard targets; for soft targets it weights each class term inside the sum and ``"mean"``
divides by N, as ``torch.nn.functional.cross_entropy`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import (
    check_class_target,
    check_class_weight,
    check_reduction,
    check_scores,
    is_soft,
)
from losskit._core.precision import upcast
from losskit._core.reduction import reduce_loss, safe_target, sample_weights


@dataclass
class Batch:
    """Validated, upcast inputs: ``x`` logits in compute dtype, ``y`` safe class indices
    (hard) or distributions (soft), per-sample weights ``w`` and mask ``keep``."""

    x: Tensor
    y: Tensor
    soft: bool
    w: Tensor | None
    keep: Tensor | None
    weight: Tensor | None
    dtype: object


def prepare(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
    allow_soft: bool = True,
) -> Batch:
    """Validate the classification contract and upcast to the compute dtype."""
    check_reduction(reduction)
    check_scores(logits)
    check_class_target(target, logits, ignore_index=ignore_index, allow_soft=allow_soft)
    check_class_weight(weight, logits.shape[1])
    x = upcast(logits)
    wt = None if weight is None else weight.to(x.dtype)
    if is_soft(target):
        return Batch(x, target.to(x.dtype), True, None, None, wt, logits.dtype)
    w, keep = sample_weights(target, wt, ignore_index)
    return Batch(x, safe_target(target, keep), False, w, keep, wt, logits.dtype)


def per_class_expectation(per_class: Tensor, b: Batch) -> Tensor:
    """``sum_c weight_c * p_c * l_c`` for a soft target ``p``; the hard-target case gathers
    ``l_y`` (its weight goes through :func:`finish`)."""
    if not b.soft:
        return per_class.gather(1, b.y[:, None]).squeeze(1)
    p = b.y if b.weight is None else b.y * b.weight
    return (p * per_class).sum(dim=1)


def target_nll(b: Batch) -> Tensor:
    """``-log p_y = logsumexp(z) - z_y`` per sample for hard targets (ignored samples read
    class 0; :func:`finish` masks them): the cross-entropy, for losses that are a function of
    ``p_y`` alone.

    Computed with torch's fused cross-entropy kernel, which keeps only the log-softmax for the
    backward pass: such a loss costs the forward and backward of ``F.cross_entropy`` plus O(N)
    work. (An explicit ``log_softmax`` followed by a negation or a gather, or ``logsumexp``
    minus a gather, adds one or two passes over the ``[N, C]`` logits.)
    """
    if b.soft:
        raise ValueError("target_nll needs class-index targets")
    return F.cross_entropy(b.x, b.y, reduction="none")


def row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``sum_k a_ik b_ik`` per row of two ``[N, C]`` tensors, as a batched matrix product (no
    ``[N, C]`` temporary, unlike ``(a * b).sum(1)``). For hand-written backward passes."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(1).transpose(1, 2)).view(a.shape[0])


def finish(per_sample: Tensor, b: Batch, reduction: str, *, weighted: bool = False) -> Tensor:
    """Reduce per-sample losses with the batch's weights and return the input dtype.

    ``weighted=True``: the losses already carry their class weights (see ``reduce_loss``).
    """
    return reduce_loss(per_sample, reduction, b.w, weighted=weighted).to(b.dtype)


class ClassLossModule(nn.Module):
    """Base of the module forms: the class ``weight`` (a buffer, so it moves and saves with
    the module), ``ignore_index`` and ``reduction``; :meth:`common` gives them as keyword
    arguments for the function the module wraps."""

    def __init__(self, weight: Tensor | None, ignore_index: int, reduction: str) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", weight)

    def common(self) -> dict:
        return {"weight": self.weight, "ignore_index": self.ignore_index,
                "reduction": self.reduction}  # fmt: skip
