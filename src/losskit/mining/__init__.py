"""Samplers, miners and batchers: they return indices, masks or weights."""

from losskit.mining.balanced_kmeans import balanced_kmeans
from losskit.mining.negative_filters import (
    adaptive_margin_filter,
    false_negative_filter,
    hardest_negatives,
)
from losskit.mining.ngame import NGAMEBatchSampler, NGAMESchedule
from losskit.mining.pair_miners import (
    batch_hard_miner,
    multi_similarity_miner,
    semi_hard_miner,
    threshold_miner,
)

__all__ = [
    "batch_hard_miner",
    "multi_similarity_miner",
    "semi_hard_miner",
    "threshold_miner",
    "adaptive_margin_filter",
    "false_negative_filter",
    "hardest_negatives",
    "NGAMEBatchSampler",
    "NGAMESchedule",
    "balanced_kmeans",
]
