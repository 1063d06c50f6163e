"""Focal binary cross-entropy for multi-label targets (a baseline; no paper in the catalog).

The binary focal loss of Lin et al. (2017) applied to every label independently:

``l_ij = -[a * y (1 - p)^gamma log p + (1 - a) (1 - y) p^gamma log(1 - p)] * w_j``

with ``p = sigmoid(x_ij)`` and the positive/negative balance ``a = alpha`` (no factor when
``alpha`` is ``None``). Everything is formed from ``logsigmoid``: ``log p = logsigmoid(x)``,
``log(1 - p) = logsigmoid(-x)``, ``(1 - p)^gamma = exp(gamma * logsigmoid(-x))`` and
``p^gamma = exp(gamma * logsigmoid(x))``, so the loss and its gradient stay finite for any
logit and any ``gamma >= 0``.

Defaults: ``gamma = 2``, ``alpha = None``. With ``gamma = 0`` and ``alpha = None`` this is
:func:`losskit.multilabel.bce.binary_cross_entropy`; ``alpha = 0.5`` halves it. The reduction
is the one of ``losskit.multilabel._common`` (per-sample mean over known entries).
Siblings: :mod:`losskit.multilabel.asymmetric` (ASL) focuses positives and negatives with
different exponents and shifts the negative probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.multilabel._common import (
    MultiLabelLossModule,
    check_label_vector,
    prepare_multilabel,
    reduce_entries,
)


def focal_binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-label focal BCE over known entries; ``weight[L]`` scales labels."""
    g = check_number("gamma", gamma, low=0.0)
    a = None if alpha is None else check_number("alpha", alpha, low=0.0, high=1.0)
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    check_label_vector(weight, b.x.shape[1], "weight")
    log_p = F.logsigmoid(b.x)
    log_q = F.logsigmoid(-b.x)
    pos = b.y * log_p
    neg = (1 - b.y) * log_q
    if g != 0:
        pos = pos * torch.exp(g * log_q)
        neg = neg * torch.exp(g * log_p)
    if a is not None:
        pos, neg = a * pos, (1 - a) * neg
    return reduce_entries(-(pos + neg), b, reduction, weight)


class FocalBinaryCrossEntropyLoss(MultiLabelLossModule):
    """Module form of :func:`focal_binary_cross_entropy`; ``weight`` is a buffer."""

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | None = None,
        weight: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, reduction)
        self.gamma = check_number("gamma", gamma, low=0.0)
        self.alpha = None if alpha is None else check_number("alpha", alpha, low=0.0, high=1.0)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return focal_binary_cross_entropy(
            logits,
            target,
            mask=mask,
            gamma=self.gamma,
            alpha=self.alpha,
            weight=self.weight,
            reduction=self.reduction,
        )


register(
    "multilabel_focal",
    kind="loss",
    family="multilabel",
    summary="Focal binary cross-entropy per label (Lin et al.), with a mask of known entries.",
    defaults={"gamma": 2.0, "alpha": None},
    function=focal_binary_cross_entropy,
    module=FocalBinaryCrossEntropyLoss,
)
