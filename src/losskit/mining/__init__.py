"""Samplers, miners and batchers: they return indices, masks or weights."""

from losskit.mining.balanced_kmeans import balanced_kmeans
from losskit.mining.ngame import NGAMEBatchSampler, NGAMESchedule

__all__ = ["NGAMEBatchSampler", "NGAMESchedule", "balanced_kmeans"]
