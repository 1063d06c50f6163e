"""Multi-label objectives: ``scores[N, L]``, ``target[N, L]`` in {0, 1} and an optional
``mask[N, L]`` of known entries (see ``losskit.multilabel._common``)."""

from losskit.multilabel.bce import BinaryCrossEntropyLoss, binary_cross_entropy

__all__ = ["BinaryCrossEntropyLoss", "binary_cross_entropy"]
