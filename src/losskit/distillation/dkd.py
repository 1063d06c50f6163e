"""Decoupled knowledge distillation, DKD (Zhao et al., CVPR 2022; a baseline, no paper in the
catalog).

With ``p = softmax(s / T)`` (student) and ``q = softmax(t / T)`` (teacher) at temperature ``T``
and the ground-truth class ``y``:

- **TCKD**, target-class KD: ``KL(b^q || b^p)`` between the binary distributions
  ``b = (p_y, 1 - p_y)`` of "target" versus "any other class";
- **NCKD**, non-target-class KD: ``KL(q_hat || p_hat)`` between the distributions over the
  ``C - 1`` non-target classes, ``p_hat_i = p_i / (1 - p_y)`` for ``i != y``.

``DKD_i = T^2 * (alpha * TCKD_i + beta * NCKD_i)``. Defaults (mdistiller's CIFAR-100 config):
``alpha = 1``, ``beta = 8``, ``T = 4``. KD decomposes exactly as
``KD = T^2 * (TCKD + (1 - q_y) * NCKD)`` (``q_y`` the teacher's target probability at ``T``):
DKD unties the weight ``1 - q_y`` that suppresses NCKD for confident teachers.

Stable forms: ``log p_y`` is a log-softmax entry and ``log(1 - p_y)`` the logsumexp of the
non-target log-softmax entries; ``log p_hat`` is a log-softmax over the logits with the target
set to ``-inf``. The reference code (mdistiller ``DKD.py``) forms the binary distribution from
probabilities and takes their log, and masks the target by subtracting 1000 from its logit,
which leaves the target in the non-target softmax once ``|t / T|`` approaches 1000; neither is
done here. A teacher row with no probability outside the target (a one-hot human label given
with ``teacher_probs=True``) has no non-target distribution: its NCKD is 0, the value the
decomposition above gives it.

mdistiller adds cross-entropy on the target (weight 1) outside this loss and ramps the DKD
weight as ``min(epoch / 20, 1)`` over the first 20 (1-based) epochs; :class:`DKDLoss` offers
that ramp through ``warmup_epochs`` and :meth:`DKDLoss.set_epoch`.
"""

from __future__ import annotations

import torch
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


def non_target_log_softmax(logits: Tensor, target: Tensor) -> Tensor:
    """``log(p_i / (1 - p_y))`` for ``i != y`` with ``p = softmax(logits)``, as a log-softmax
    over the logits with the target class set to ``-inf`` (the target column is ``-inf``).

    A row whose non-target logits are all ``-inf`` (log-probabilities of a one-hot teacher)
    stays all ``-inf``; :func:`~losskit.distillation._common.kl_rows` gives 0 for it.
    """
    mask = F.one_hot(target, logits.shape[1]).bool()
    z = logits.masked_fill(mask, float("-inf"))
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    return z - torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)


def binary_log_probs(log_probs: Tensor, target: Tensor) -> Tensor:
    """``[log p_y, log(1 - p_y)]`` per row ``[N, 2]`` from log-probabilities, with
    ``log(1 - p_y)`` as the logsumexp of the non-target entries (exact when ``p_y`` is near 1)."""
    mask = F.one_hot(target, log_probs.shape[1]).bool()
    log_pt = log_probs.gather(1, target[:, None])
    log_rest = torch.logsumexp(log_probs.masked_fill(mask, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_pt, log_rest], dim=1)


def dkd_loss(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    teacher_probs: bool = False,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """``T^2 * (alpha * TCKD + beta * NCKD)`` per sample (see the module docstring); the target
    is required. ``alpha = 1, beta = 0`` gives ``T^2 * TCKD``; ``alpha = 0, beta = 1`` gives
    ``T^2 * NCKD``."""
    temp = check_temperature(temperature)
    a = check_number("alpha", alpha, low=0.0)
    bt = check_number("beta", beta, low=0.0)
    b = prepare_distill(
        student, teacher, target, teacher_probs=teacher_probs, ignore_index=ignore_index,
        reduction=reduction, require_target=True,
    )  # fmt: skip
    s, t = b.s / temp, b.teacher_log_probs(temp)
    tckd = kl_rows(binary_log_probs(t, b.y), binary_log_probs(torch.log_softmax(s, 1), b.y))
    nckd = kl_rows(non_target_log_softmax(t, b.y), non_target_log_softmax(s, b.y))
    return finish_distill((a * tckd + bt * nckd) * temp**2, b, reduction)


class DKDLoss(DistillLossModule):
    """Module form of :func:`dkd_loss` with mdistiller's warm-up: after
    ``set_epoch(epoch)`` (1-based, as in mdistiller) the loss is multiplied by
    ``min(epoch / warmup_epochs, 1)``; ``warmup_epochs = 0`` turns the ramp off. Until
    :meth:`set_epoch` is called the factor is 1. The epoch is saved in the ``state_dict``."""

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: int = 20,
        teacher_probs: bool = False,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction, ignore_index, teacher_probs)
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.beta = check_number("beta", beta, low=0.0)
        self.temperature = check_temperature(temperature)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int):
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = int(check_number("warmup_epochs", warmup_epochs, low=0))
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Set the current (1-based) epoch for the warm-up factor."""
        self.epoch = int(check_number("epoch", epoch, low=0))

    @property
    def warmup_factor(self) -> float:
        if self.epoch is None or self.warmup_epochs == 0:
            return 1.0
        return min(self.epoch / self.warmup_epochs, 1.0)

    def get_extra_state(self) -> dict:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict) -> None:
        self.epoch = state["epoch"]

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor) -> Tensor:
        w = self.warmup_factor
        return dkd_loss(
            student, teacher, target, alpha=w * self.alpha, beta=w * self.beta,
            temperature=self.temperature, **self.common(),
        )  # fmt: skip


register(
    "dkd",
    kind="loss",
    family="distillation",
    summary="Decoupled KD: separately weighted target-class (binary) and non-target-class KL.",
    defaults={"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20},
    function=dkd_loss,
    module=DKDLoss,
)
