"""Focal loss, a baseline for class imbalance (no paper in the catalog).

``FL(z, y) = -alpha_y * (1 - p_y)^gamma * log p_y`` with ``p = softmax(z)``; for a soft
target ``q`` the sum over classes ``-sum_c q_c alpha_c (1 - p_c)^gamma log p_c``. ``gamma = 0``
and no ``alpha`` give cross-entropy. ``(1 - p)`` is formed as ``-expm1(log p)`` so it stays
accurate when ``p`` is close to one. Hard targets need only ``p_y``, taken from torch's
fused cross-entropy (see ``_common.target_nll``), so the loss costs about what
cross-entropy costs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_class_weight, check_number
from losskit._core.registry import register
from losskit.classification._common import (
    ClassLossModule,
    finish,
    per_class_expectation,
    prepare,
    target_nll,
)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: Tensor | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Multiclass focal loss. ``alpha`` is a per-class factor ``[C]`` inside the loss (it
    does not enter the ``"mean"`` denominator); ``weight`` behaves as in cross-entropy."""
    g = check_number("gamma", gamma, low=0.0)
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    check_class_weight(alpha, b.x.shape[1], name="alpha")
    a = None if alpha is None else alpha.to(b.x.dtype)
    if not b.soft:
        # a function of p_y alone: no [N, C] intermediate beyond cross-entropy's
        ce = target_nll(b)
        loss = ce if g == 0 else ce * _power(-torch.expm1(-ce), g)
        return finish(loss if a is None else loss * a[b.y], b, reduction)
    logp = torch.log_softmax(b.x, dim=1)
    per_class = -logp if g == 0 else -_power(-torch.expm1(logp), g) * logp
    if a is not None:
        per_class = per_class * a
    return finish(per_class_expectation(per_class, b), b, reduction)


def _power(u: Tensor, gamma: float) -> Tensor:
    """``u^gamma`` for ``u = 1 - p >= 0``. For ``gamma < 1`` its derivative is infinite at
    ``u = 0`` (``p`` rounds to 1), where the loss ``-u^gamma log p`` is flat: there the
    gradient is taken as 0 instead of ``inf * 0 = NaN``."""
    if gamma >= 1:
        return u**gamma
    pos = u > 0
    return torch.where(pos, torch.where(pos, u, torch.ones_like(u)) ** gamma, torch.zeros_like(u))


class FocalLoss(ClassLossModule):
    """Module form of :func:`focal_loss`; ``alpha`` and ``weight`` are buffers."""

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: Tensor | None = None,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.gamma = check_number("gamma", gamma, low=0.0)
        self.register_buffer("alpha", alpha)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(
            logits,
            target,
            gamma=self.gamma,
            alpha=self.alpha,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


register(
    "focal",
    kind="loss",
    family="classification",
    summary="Focal loss: cross-entropy down-weighted on well-classified samples.",
    defaults={"gamma": 2.0},
    function=focal_loss,
    module=FocalLoss,
)
