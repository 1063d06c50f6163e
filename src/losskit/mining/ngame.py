"""NGAME negative-mining-aware mini-batching (paper 56, Dahiya et al., WSDM 2023).

In-batch training of a dual encoder uses the other queries' labels as negatives; they are
easy when batches are random. NGAME clusters the training points with the current encoder
(:func:`~losskit.mining.balanced_kmeans.balanced_kmeans`, balanced 2-means on cosine
similarity) and builds each epoch's order by shuffling the clusters and concatenating their
members, so a batch holds groups of similar points whose labels are hard negatives for each
other. The loss is then taken over in-batch labels, e.g.
:func:`losskit.multilabel.triplet_ohnm.triplet_ohnm_loss`.

- :class:`NGAMEBatchSampler` is a ``torch.utils.data`` batch sampler (``DataLoader(ds,
  batch_sampler=...)``) yielding lists of indices. Before any :meth:`~NGAMEBatchSampler.refresh`
  (or with ``cluster_size=1``) an epoch is a random permutation cut into batches. The order
  depends only on ``seed`` and the epoch set by :meth:`~NGAMEBatchSampler.set_epoch`.
- :class:`NGAMESchedule` is the released code's curriculum (``ClusteringIndex.update_state``
  and ``ModelSiamese._fit``): the cluster size starts at ``cluster_size_start`` and doubles at
  each epoch of ``doubling_epochs`` (the code halves the number of clusters ``N / size``);
  the clusters are recomputed at the start of every epoch ``e >= warmup`` with
  ``e % refresh_interval == 0`` (``warmup`` defaults, as in the code, to the first doubling
  epoch). Defaults: the LF-AmazonTitles-131K Siamese configuration (refresh every 5 epochs,
  doublings at 10, 20, 25, 50, 75, 100, 125, 150, 200; batch size 1600 there).

Where this differs from the released code: the code draws epoch ``e``'s order at the end of
epoch ``e - 1``, so new clusters are first used one epoch after they are computed; here the
order is drawn when the epoch starts, so a refresh acts in its own epoch. The code embeds
the points with a memory bank filled during the previous epoch (``sampling_async``); here
``embed_fn`` decides what to return.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler

from losskit._core.registry import register
from losskit.mining.balanced_kmeans import _check_int, balanced_kmeans

DOUBLING_EPOCHS = (10, 20, 25, 50, 75, 100, 125, 150, 200)


def _mix(seed: int, epoch: int, stream: int) -> int:
    """A deterministic seed for (seed, epoch, stream): stream 0 shuffles, 1 clusters."""
    return ((seed * 1_000_003 + epoch) * 2 + stream) & ((1 << 63) - 1)


class NGAMEBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices from ``range(num_samples)`` made by concatenating
    shuffled clusters (see the module docstring)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        cluster_size: int = 1,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.num_samples = _check_int("num_samples", num_samples, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.cluster_size = _check_int("cluster_size", cluster_size, 1)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.clusters: list[Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffle the next iteration uses."""
        self.epoch = _check_int("epoch", epoch, 0)

    def refresh(self, embeddings: Tensor, cluster_size: int | None = None) -> None:
        """Re-cluster with ``embeddings[num_samples, D]`` (rows in dataset order) into clusters
        of at most ``cluster_size`` (default: the current ``self.cluster_size``)."""
        if cluster_size is not None:
            self.cluster_size = _check_int("cluster_size", cluster_size, 1)
        if not isinstance(embeddings, Tensor) or embeddings.shape[:1] != (self.num_samples,):
            got = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings)
            raise ValueError(f"embeddings must have shape [{self.num_samples}, D], got {got}")
        seed = _mix(self.seed, self.epoch, 1)
        self.clusters = balanced_kmeans(embeddings, self.cluster_size, seed=seed)

    def order(self) -> Tensor:
        """The epoch's permutation of ``range(num_samples)``: shuffled clusters, concatenated."""
        gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, 0))
        if self.clusters is None or self.cluster_size == 1:
            return torch.randperm(self.num_samples, generator=gen)
        perm = torch.randperm(len(self.clusters), generator=gen).tolist()
        return torch.cat([self.clusters[i] for i in perm])

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.order().split(self.batch_size)
        for batch in batches:
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)


class NGAMESchedule:
    """NGAME's curriculum: cluster sizes doubling at ``doubling_epochs``, refreshes every
    ``refresh_interval`` epochs from ``warmup`` on (see the module docstring)."""

    def __init__(
        self,
        *,
        refresh_interval: int = 5,
        cluster_size_start: int = 1,
        doubling_epochs: Sequence[int] = DOUBLING_EPOCHS,
        max_cluster_size: int | None = None,
        warmup: int | None = None,
    ) -> None:
        self.refresh_interval = _check_int("refresh_interval", refresh_interval, 1)
        self.cluster_size_start = _check_int("cluster_size_start", cluster_size_start, 1)
        self.doubling_epochs = tuple(_check_int("doubling_epochs", e, 0) for e in doubling_epochs)
        self.max_cluster_size = (
            None
            if max_cluster_size is None
            else _check_int("max_cluster_size", max_cluster_size, 1)
        )
        default = self.doubling_epochs[0] if self.doubling_epochs else 0
        self.warmup = default if warmup is None else _check_int("warmup", warmup, 0)

    def cluster_size(self, epoch: int) -> int:
        """``cluster_size_start * 2^(number of doubling epochs <= epoch)``, capped."""
        doublings = sum(1 for e in self.doubling_epochs if e <= epoch)
        size = self.cluster_size_start * 2**doublings
        return size if self.max_cluster_size is None else min(size, self.max_cluster_size)

    def should_refresh(self, epoch: int) -> bool:
        """Whether the clusters are recomputed at the start of ``epoch``."""
        return epoch >= self.warmup and epoch % self.refresh_interval == 0

    def on_epoch_start(
        self, epoch: int, sampler: NGAMEBatchSampler, embed_fn: Callable[[], Tensor]
    ) -> bool:
        """Call before each epoch (from 0): sets the sampler's epoch and, on refresh epochs,
        re-clusters ``embed_fn()`` at the current cluster size. Returns whether it did."""
        sampler.set_epoch(epoch)
        refresh = self.should_refresh(epoch)
        if refresh:
            sampler.refresh(embed_fn(), cluster_size=self.cluster_size(epoch))
        return refresh


register(
    "ngame_batching",
    kind="miner",
    family="mining",
    papers=(56,),
    summary=(
        "Batch sampler that shuffles balanced clusters of the current embeddings so in-batch "
        "negatives are hard; NGAMESchedule doubles the cluster size on a curriculum."
    ),
    defaults={"batch_size": 1600, "cluster_size": 1},
    function=balanced_kmeans,
    module=NGAMEBatchSampler,
)
