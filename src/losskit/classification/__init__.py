"""Multiclass objectives: ``logits[N, C]`` and integer ``target[N]`` or distributions ``[N, C]``."""

from losskit.classification.cross_entropy import CrossEntropyLoss, cross_entropy
from losskit.classification.focal import FocalLoss, focal_loss
from losskit.classification.logsumexp_penalty import LogSumExpPenalty, logsumexp_penalty

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "LogSumExpPenalty",
    "cross_entropy",
    "focal_loss",
    "logsumexp_penalty",
]
