"""Samplers, miners and batchers: they return indices, masks or weights."""

from losskit.mining.balanced_kmeans import balanced_kmeans
from losskit.mining.negative_filters import (
    adaptive_margin_filter,
    false_negative_filter,
    hardest_negatives,
)
from losskit.mining.ngame import NGAMEBatchSampler, NGAMESchedule

__all__ = [
    "adaptive_margin_filter",
    "false_negative_filter",
    "hardest_negatives",
    "NGAMEBatchSampler",
    "NGAMESchedule",
    "balanced_kmeans",
]
