"""Distillation objectives: ``student[N, C]`` and ``teacher[N, C]`` outputs (+ target, +
features); see ``losskit.distillation._common``."""

from losskit.distillation.kd import KDLoss, kd_loss

__all__ = ["KDLoss", "kd_loss"]
