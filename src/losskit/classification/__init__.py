"""Multiclass objectives: ``logits[N, C]`` and integer ``target[N]`` or distributions ``[N, C]``."""

from losskit.classification.cross_entropy import CrossEntropyLoss, cross_entropy
from losskit.classification.focal import FocalLoss, focal_loss
from losskit.classification.logsumexp_penalty import LogSumExpPenalty, logsumexp_penalty
from losskit.classification.spherical import (
    SphericalSoftmaxLoss,
    SphericalSquaredError,
    SphericalZLoss,
    TaylorSoftmaxLoss,
    spherical_softmax_loss,
    spherical_softmax_loss_from_stats,
    spherical_squared_error,
    spherical_squared_error_from_stats,
    spherical_z_loss,
    spherical_z_loss_from_stats,
    taylor_softmax_loss,
    taylor_softmax_loss_from_stats,
)

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "LogSumExpPenalty",
    "SphericalSoftmaxLoss",
    "SphericalSquaredError",
    "SphericalZLoss",
    "TaylorSoftmaxLoss",
    "cross_entropy",
    "focal_loss",
    "logsumexp_penalty",
    "spherical_softmax_loss",
    "spherical_softmax_loss_from_stats",
    "spherical_squared_error",
    "spherical_squared_error_from_stats",
    "spherical_z_loss",
    "spherical_z_loss_from_stats",
    "taylor_softmax_loss",
    "taylor_softmax_loss_from_stats",
]
