"""Binary cross-entropy for multi-label targets, with ``pos_weight`` and a mask of known
entries (a baseline; no paper in the catalog).

``l_ij = -[pw_j * y_ij * log s(x_ij) + (1 - y_ij) * log(1 - s(x_ij))] * w_j`` with the
sigmoid ``s``, computed as ``pw_j * y * softplus(-x) + (1 - y) * softplus(x)``. Without a mask
``reduction="mean"`` equals ``F.binary_cross_entropy_with_logits(..., reduction="mean")``;
unknown entries (``mask == 0``) contribute nothing (see ``losskit.multilabel._common``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from losskit._core.registry import register
from losskit.multilabel._common import (
    MultiLabelLossModule,
    check_label_vector,
    prepare_multilabel,
    reduce_entries,
)


def binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    pos_weight: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-label binary cross-entropy over known entries."""
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    check_label_vector(pos_weight, b.x.shape[1], "pos_weight")
    check_label_vector(weight, b.x.shape[1], "weight")
    pos = b.y if pos_weight is None else b.y * pos_weight.to(b.x.dtype)
    entry = pos * F.softplus(-b.x) + (1 - b.y) * F.softplus(b.x)
    return reduce_entries(entry, b, reduction, weight)


class BinaryCrossEntropyLoss(MultiLabelLossModule):
    """Module form of :func:`binary_cross_entropy`; ``weight`` and ``pos_weight`` are buffers."""

    def __init__(
        self,
        *,
        pos_weight: Tensor | None = None,
        weight: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return binary_cross_entropy(
            logits,
            target,
            mask=mask,
            pos_weight=self.pos_weight,
            weight=self.weight,
            reduction=self.reduction,
        )


register(
    "multilabel_bce",
    kind="loss",
    family="multilabel",
    summary="Binary cross-entropy per label, with pos_weight and a mask of known entries.",
    function=binary_cross_entropy,
    module=BinaryCrossEntropyLoss,
)
