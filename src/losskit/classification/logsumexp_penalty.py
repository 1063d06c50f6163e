"""The squared-logsumexp penalty (no paper in the catalog).

``R(z) = coef * logsumexp(z)^2`` per sample: it keeps the softmax normaliser near one and is
added to cross-entropy in large-vocabulary training. Some libraries call it "z-loss"; it is
not the spherical Z-loss of paper 2 (see :func:`losskit.classification.spherical_z_loss`),
which is a classification loss in its own right and is shift and scale invariant, while this
penalty is neither.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losskit._core.checks import check_class_target, check_number, check_reduction, check_scores
from losskit._core.precision import upcast
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register


def logsumexp_penalty(
    logits: Tensor,
    target: Tensor | None = None,
    *,
    coef: float = 1e-4,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """``coef * logsumexp(logits)^2`` per sample. ``target`` is optional and only used to
    skip samples whose class is ``ignore_index`` (as the cross-entropy next to it does)."""
    c = check_number("coef", coef, low=0.0)
    check_reduction(reduction)
    check_scores(logits)
    x = upcast(logits)
    loss = c * torch.logsumexp(x, dim=1) ** 2
    keep = None
    if target is not None:
        check_class_target(target, logits, ignore_index=ignore_index, allow_soft=False)
        keep = (target != ignore_index).to(x.dtype)
    return reduce_loss(loss, reduction, keep).to(logits.dtype)


class LogSumExpPenalty(nn.Module):
    """Module form of :func:`logsumexp_penalty`."""

    def __init__(
        self, *, coef: float = 1e-4, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.coef = check_number("coef", coef, low=0.0)
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor | None = None) -> Tensor:
        return logsumexp_penalty(
            logits,
            target,
            coef=self.coef,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


register(
    "logsumexp_penalty",
    kind="loss",
    family="classification",
    summary="coef * logsumexp(z)^2 regulariser (the 'z-loss' of some libraries, not paper 2).",
    defaults={"coef": 1e-4},
    function=logsumexp_penalty,
    module=LogSumExpPenalty,
)
