"""Normalized knowledge distillation, NKD (paper 44: Yang et al., ICCV 2023, "From Knowledge
Distillation to Self-Knowledge Distillation").

With the student's ``S = softmax(s)``, the teacher's ``T = softmax(t)`` (at temperature 1) and
the ground-truth class ``y``::

    NKD_i = -T_y log S_y  -  gamma * lam^2 * sum_{j != y} N(T^lam)_j log N(S^lam)_j

where ``S^lam = softmax(s / lam)`` at temperature ``lam`` and ``N`` renormalises the non-target
probabilities to sum to one, ``N(S^lam)_j = S^lam_j / (1 - S^lam_y)``. The teacher's target
probability ``T_y`` is a constant weight (the teacher is detached). Defaults from the reference
code (yzd-v/cls_KD ``NKDLoss``, ImageNet): ``temperature = 1.0``, ``gamma = 1.5``; its
CIFAR-100 config uses ``temperature = 3.0``, ``gamma = 3.5``. NKD is used alongside the usual
cross-entropy on the target, which the caller adds.

Relations: with ``gamma = 0`` NKD is the target term ``-T_y log S_y`` alone. The second term is
the paper's cross-entropy form; it equals ``gamma * lam^2 * (KL(N(T^lam) || N(S^lam)) +
H(N(T^lam)))``, so it has KL's gradient and differs from it by the teacher's non-target entropy,
a constant for the student. Compared with DKD's NCKD it is the same non-target KL with the
weight ``gamma`` in place of ``beta``; the target term replaces DKD's binary TCKD.

``N(S^lam)`` is computed as a log-softmax over the logits with the target set to ``-inf``
(see :func:`losskit.distillation.dkd.non_target_log_softmax`). The reference code drops the
target column with a boolean mask; in one released version (``mmcls/distillation/losses``)
the mask is built with ``scatter_(..., 1)`` and keeps every class, so its "non-target" term
includes the target. This file follows the paper. A teacher row with all its probability on
the target (``teacher_probs=True`` with a one-hot label) contributes no non-target term.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.distillation._common import (
    DistillLossModule,
    check_temperature,
    finish_distill,
    prepare_distill,
)
from losskit.distillation.dkd import non_target_log_softmax


def nkd_loss(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    gamma: float = 1.5,
    teacher_probs: bool = False,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Per-sample ``-T_y log S_y - gamma * lam^2 * sum_{j != y} N(T^lam)_j log N(S^lam)_j``
    with ``lam = temperature`` (see the module docstring); the target is required."""
    temp = check_temperature(temperature)
    g = check_number("gamma", gamma, low=0.0)
    b = prepare_distill(
        student, teacher, target, teacher_probs=teacher_probs, ignore_index=ignore_index,
        reduction=reduction, require_target=True,
    )  # fmt: skip
    y = b.y[:, None]
    t_y = b.teacher_log_probs(1.0).gather(1, y).exp().squeeze(1)
    log_s_y = torch.log_softmax(b.s, dim=1).gather(1, y).squeeze(1)
    loss = -t_y * log_s_y
    t_hat = non_target_log_softmax(b.teacher_log_probs(temp), b.y).exp()
    log_s_hat = non_target_log_softmax(b.s / temp, b.y)
    # 0 * log 0 = 0: the target column (and classes the teacher gives 0) contribute nothing
    cross = (t_hat * torch.where(t_hat > 0, log_s_hat, torch.zeros_like(log_s_hat))).sum(1)
    loss = loss - g * temp**2 * cross
    return finish_distill(loss, b, reduction)


class NKDLoss(DistillLossModule):
    """Module form of :func:`nkd_loss`."""

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        gamma: float = 1.5,
        teacher_probs: bool = False,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction, ignore_index, teacher_probs)
        self.temperature = check_temperature(temperature)
        self.gamma = check_number("gamma", gamma, low=0.0)

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor) -> Tensor:
        return nkd_loss(
            student, teacher, target, temperature=self.temperature, gamma=self.gamma,
            **self.common(),
        )  # fmt: skip


register(
    "nkd",
    kind="loss",
    family="distillation",
    papers=(44,),
    summary="Normalized KD: teacher-weighted target log-likelihood plus the KL between the "
    "renormalised non-target distributions.",
    defaults={"temperature": 1.0, "gamma": 1.5},
    function=nkd_loss,
    module=NKDLoss,
)
