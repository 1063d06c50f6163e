"""Hinton knowledge distillation (a baseline; no paper in the catalog).

``KD_i = T^2 * KL(softmax(t_i / T) || softmax(s_i / T))`` with the student's logits ``s``,
the teacher's ``t`` and temperature ``T`` (default 4). The ``T^2`` factor keeps the gradient
scale independent of ``T``: ``d KD_i / d s_i = T * (softmax(s_i / T) - softmax(t_i / T))``.
``reduction="mean"`` is Hinton's batch mean. With ``alpha < 1`` and a ``target``, the loss is
``alpha * KD + (1 - alpha) * CE(s, y)``, the usual combined objective.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.distillation._common import (
    DistillLossModule,
    check_temperature,
    finish_distill,
    kl_rows,
    prepare_distill,
)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 1.0,
    teacher_probs: bool = False,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Temperature-scaled KL from the teacher to the student, times ``T^2``; mixed with
    cross-entropy on ``target`` when ``alpha < 1`` (a target is then required)."""
    temp = check_temperature(temperature)
    a = check_number("alpha", alpha, low=0.0, high=1.0)
    b = prepare_distill(
        student_logits, teacher_logits, target, teacher_probs=teacher_probs,
        ignore_index=ignore_index, reduction=reduction, require_target=a < 1,
    )  # fmt: skip
    loss = kl_rows(b.teacher_log_probs(temp), b.student_log_probs(temp)) * temp**2
    if a < 1:
        loss = a * loss + (1 - a) * F.cross_entropy(b.s, b.y, reduction="none")
    return finish_distill(loss, b, reduction)


class KDLoss(DistillLossModule):
    """Module form of :func:`kd_loss`."""

    def __init__(
        self,
        *,
        temperature: float = 4.0,
        alpha: float = 1.0,
        teacher_probs: bool = False,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction, ignore_index, teacher_probs)
        self.temperature = check_temperature(temperature)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0)

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor | None = None) -> Tensor:
        return kd_loss(
            student, teacher, target, temperature=self.temperature, alpha=self.alpha,
            **self.common(),
        )  # fmt: skip


register(
    "kd",
    kind="loss",
    family="distillation",
    summary="Hinton KD: T^2-scaled KL between teacher and student softmax at temperature T.",
    defaults={"temperature": 4.0},
    function=kd_loss,
    module=KDLoss,
)
