"""Multi-label label-distribution-aware margin loss (paper 14, TransICD).

Label ``j`` with ``n_j`` positive training samples gets the margin ``m_j = C / n_j^{1/4}``
(a count of 0 is treated as 1, as in the reference). The margin is subtracted from the logit of
the *positive* entries only, and the shifted logits go through binary cross-entropy::

    z'_ij = z_ij - y_ij * m_j,        L = BCE(z', y)       (see losskit.multilabel.bce)

Default ``C = 3.0`` (``biplob1ly/TransICD``, ``code/models.py``). The margins belong to the
training loss only: predictions (and evaluation metrics) use the raw logits ``z``; this loss
never changes them. ``C = 0`` is exactly :func:`~losskit.multilabel.bce.binary_cross_entropy`;
negative entries see plain BCE (same value, same gradient); rare labels get larger margins.

Differences from the original LDAM (``kaidic/LDAM-DRW``, :func:`losskit.classification.ldam_loss`):
no normalisation of the margins so that the largest is 0.5, no logit scale ``s`` (30 there),
and a sigmoid BCE per label instead of a softmax cross-entropy over classes. Unknown entries
(``mask == 0``) contribute nothing, as everywhere in ``losskit.multilabel``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.multilabel._common import (
    Counts,
    MultiLabelLossModule,
    as_class_counts,
    check_class_counts,
    prepare_multilabel,
)
from losskit.multilabel.bce import binary_cross_entropy


def multilabel_ldam_margins(class_counts: Counts, C: float = 3.0) -> Tensor:
    """Per-label margins ``C / max(n_j, 1)^{1/4}`` (float64 ``[L]``)."""
    c = check_number("C", C, low=0.0)
    n = as_class_counts(class_counts).to(torch.float64)
    return c / n.clamp_min(1.0) ** 0.25


def _ldam(
    logits: Tensor,
    target: Tensor,
    margins: Tensor,
    mask: Tensor | None,
    weight: Tensor | None,
    reduction: str,
) -> Tensor:
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    check_class_counts(margins, b.x.shape[1])
    shifted = b.x - b.y * margins.to(device=b.x.device, dtype=b.x.dtype)
    out = binary_cross_entropy(shifted, b.y, mask=mask, weight=weight, reduction=reduction)
    return out.to(b.dtype)


def multilabel_ldam_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Counts,
    C: float = 3.0,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """BCE on ``z - y * C / n_j^{1/4}`` (``class_counts[L]``: positives per label in training).

    ``weight[L]`` scales entries as in BCE. For training only; predict with the raw logits.
    """
    margins = multilabel_ldam_margins(class_counts, C)
    return _ldam(logits, target, margins, mask, weight, reduction)


class MultiLabelLDAMLoss(MultiLabelLossModule):
    """Module form of :func:`multilabel_ldam_loss`; ``margins`` and ``weight`` are buffers.
    ``class_counts`` is filled by the arena (observed positives per label)."""

    def __init__(
        self,
        class_counts: Counts,
        C: float = 3.0,
        *,
        weight: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, reduction)
        self.C = check_number("C", C, low=0.0)
        margins = multilabel_ldam_margins(class_counts, self.C)
        self.register_buffer("margins", margins.to(torch.get_default_dtype()))

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return _ldam(logits, target, self.margins, mask, self.weight, self.reduction)


register(
    "multilabel_ldam",
    kind="loss",
    family="multilabel",
    papers=(14,),
    summary="Multi-label LDAM: BCE with the margin C / n_j^(1/4) subtracted from positive logits.",
    defaults={"C": 3.0},
    function=multilabel_ldam_loss,
    module=MultiLabelLDAMLoss,
)
