"""Cross-entropy, the baseline of the softmax family (no paper).

``CE(z, y) = -log softmax(z)_y = logsumexp(z) - z_y``; for a distribution ``p``,
``-sum_c p_c log softmax(z)_c``. Label smoothing ``eps`` mixes the target with the uniform
distribution: ``(1 - eps) * CE(z, y) + eps * mean_c(-log softmax(z)_c)``, with class weights
applied as in ``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.classification._common import ClassLossModule, prepare


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    label_smoothing: float = 0.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Softmax cross-entropy for hard (``[N]`` int) or soft (``[N, C]`` float) targets.

    Matches ``torch.nn.functional.cross_entropy`` in value, weighting and reduction, and
    computes in at least float32 (half inputs are upcast, the result is cast back): after
    losskit's validation it calls torch's fused kernel on the upcast logits.
    """
    eps = check_number("label_smoothing", label_smoothing, low=0.0, high=1.0)
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    # after validation and upcasting, torch's fused kernel has exactly these semantics
    y = b.y if b.soft else target.long()
    loss = F.cross_entropy(
        b.x, y, weight=b.weight, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=eps,
    )  # fmt: skip
    return loss.to(b.dtype)


class CrossEntropyLoss(ClassLossModule):
    """Module form of :func:`cross_entropy`; ``weight`` is kept as a buffer."""

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, low=0, high=1)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            logits,
            target,
            label_smoothing=self.label_smoothing,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


register(
    "cross_entropy",
    kind="loss",
    family="classification",
    summary="Softmax cross-entropy with hard/soft targets and label smoothing.",
    defaults={"label_smoothing": 0.0},
    function=cross_entropy,
    module=CrossEntropyLoss,
)
