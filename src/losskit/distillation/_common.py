"""The one input contract of ``losskit.distillation``.

``student[N, C]`` logits (floating) and the teacher's output for the same samples: ``teacher
[N, C]`` logits by default, or class probabilities (rows non-negative, summing to one) when
``teacher_probs=True`` (a human soft label such as CIFAR-10H, or a teacher that only exposes
probabilities). An optional ``target[N]`` of class indices (``ignore_index`` entries skipped)
is the ground truth for objectives that use it. The teacher never receives a gradient: it is
detached.

Reduction, the same for every distillation loss (and the same as in
``losskit.classification``): ``"none"`` gives one value per sample, ``"sum"`` their sum, and
``"mean"`` the mean over the samples that are not ignored. Hinton's KD, "KL at temperature T
scaled by T^2 with the batch mean", is ``reduction="mean"``.

Temperature: at temperature ``T`` the student's and teacher's logits are divided by ``T``;
teacher probabilities are sharpened or flattened as ``p^(1/T)`` renormalised, which is what
dividing the (unknown) logits by ``T`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losskit._core.checks import (
    check_class_target,
    check_number,
    check_reduction,
    check_scores,
)
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss, safe_target, sample_weights


@dataclass
class DistillBatch:
    """Validated inputs in the compute dtype: ``s`` student logits, ``t`` teacher logits or
    log-probabilities (``t_is_log_prob``), ``y`` safe class indices (or ``None``), per-sample
    weights ``w`` (zeros for ignored samples; ``None`` when all are 1), input ``dtype``."""

    s: Tensor
    t: Tensor
    t_is_log_prob: bool
    y: Tensor | None
    w: Tensor | None
    dtype: torch.dtype

    def teacher_log_probs(self, temperature: float = 1.0) -> Tensor:
        """``log softmax(t / T)`` (for probabilities: ``log p / T`` renormalised)."""
        return torch.log_softmax(self.t / temperature, dim=1)

    def student_log_probs(self, temperature: float = 1.0) -> Tensor:
        return torch.log_softmax(self.s / temperature, dim=1)


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """A temperature must be a finite number > 0."""
    return check_number(name, temperature, low=0.0, low_open=True, high=1e6)


def prepare_distill(
    student: Tensor,
    teacher: Tensor,
    target: Tensor | None = None,
    *,
    teacher_probs: bool = False,
    ignore_index: int = -100,
    reduction: str = "mean",
    require_target: bool = False,
) -> DistillBatch:
    """Validate the distillation contract, detach the teacher and upcast both outputs to a
    common compute dtype (at least float32)."""
    check_reduction(reduction)
    check_scores(student, "student")
    if not isinstance(teacher, Tensor):
        raise ValueError(f"teacher must be a torch.Tensor, got {type(teacher).__name__}")
    if tuple(teacher.shape) != tuple(student.shape):
        raise ValueError(
            f"teacher must have the student's shape {tuple(student.shape)}, "
            f"got {tuple(teacher.shape)}"
        )
    if teacher_probs:
        if not teacher.is_floating_point():
            raise ValueError(f"teacher probabilities must be floating, got {teacher.dtype}")
        check_class_target(teacher, student, name="teacher")
    else:
        check_scores(teacher, "teacher")
    if target is None and require_target:
        raise ValueError("target (class indices [N]) is required by this objective")
    if target is not None:
        check_class_target(target, student, ignore_index=ignore_index, allow_soft=False)
    s, t = upcast_all(student, teacher.detach())
    if teacher_probs:
        t = torch.log(t)  # log-probabilities; log 0 = -inf is handled by log_softmax
    w, keep, y = None, None, None
    if target is not None:
        w, keep = sample_weights(target, None, ignore_index)
        y = safe_target(target, keep)
    return DistillBatch(s, t, teacher_probs, y, w, student.dtype)


def finish_distill(per_sample: Tensor, b: DistillBatch, reduction: str) -> Tensor:
    """Reduce per-sample losses (ignored samples give 0 and leave the mean) and return the
    student's dtype."""
    return reduce_loss(per_sample, reduction, b.w).to(b.dtype)


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` per row from log-probabilities, with
    ``0 log 0 = 0`` (classes the teacher gives probability 0 contribute nothing)."""
    p = log_p.exp()
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(dim=1)


class DistillLossModule(nn.Module):
    """Base of the module forms: ``reduction``, ``ignore_index`` and ``teacher_probs``.
    ``forward(student, teacher, target=None)``."""

    def __init__(
        self, reduction: str = "mean", ignore_index: int = -100, teacher_probs: bool = False
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.teacher_probs = bool(teacher_probs)

    def common(self) -> dict:
        return {"reduction": self.reduction, "ignore_index": self.ignore_index,
                "teacher_probs": self.teacher_probs}  # fmt: skip
