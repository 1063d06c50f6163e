"""NGAME balanced clustering, batch sampler and curriculum (paper 56)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from losskit import get
from losskit.mining.balanced_kmeans import balanced_kmeans
from losskit.mining.ngame import DOUBLING_EPOCHS, NGAMEBatchSampler, NGAMESchedule
from losskit.multilabel.triplet_ohnm import triplet_ohnm_loss


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread avoids OpenMP spin on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _groups(n=400, num_groups=8, dim=16, spread=0.05, seed=0):
    """Points around ``num_groups`` random unit directions, ``n / num_groups`` per group."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_groups, dim, generator=g), dim=1)
    group = torch.arange(n) % num_groups
    x = centres[group] + spread * torch.randn(n, dim, generator=g)
    return x, group


@pytest.mark.parametrize(
    ("n", "size"), [(1000, 7), (1000, 64), (37, 2), (5, 3), (64, 64), (10, 99)]
)
def test_balanced_clusters_partition_the_points_with_sizes_differing_by_at_most_one(n, size):
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(n))
    clusters = balanced_kmeans(x, size, seed=1)
    sizes = torch.tensor([len(c) for c in clusters])
    assert sizes.max() <= size and sizes.max() - sizes.min() <= 1
    assert sizes.max() > size / 2 or len(clusters) == 1  # no split further than needed
    assert torch.equal(torch.cat(clusters).sort().values, torch.arange(n))
    assert all(c.dtype == torch.long for c in clusters)


def test_singletons_and_one_cluster():
    x = torch.randn(9, 3)
    assert [c.tolist() for c in balanced_kmeans(x, 1)] == [[i] for i in range(9)]
    assert [c.tolist() for c in balanced_kmeans(x, 9)] == [list(range(9))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_well_separated_groups_give_pure_clusters(seed):
    x, group = _groups(seed=seed)
    for size in (50, 25):  # the group size and half of it
        for c in balanced_kmeans(x, size, seed=seed):
            assert group[c].unique().numel() == 1


def test_clustering_is_deterministic_by_seed_and_uses_cosine_similarity():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    a = [c.tolist() for c in balanced_kmeans(x, 10, seed=3)]
    assert a == [c.tolist() for c in balanced_kmeans(x, 10, seed=3)]
    scale = torch.rand(300, 1, generator=torch.Generator().manual_seed(1)) + 0.1
    assert a == [c.tolist() for c in balanced_kmeans(x * scale, 10, seed=3)]
    b = balanced_kmeans(x.double(), 10, seed=3)
    assert sorted(len(c) for c in b) == sorted(len(c) for c in a)


def test_balanced_kmeans_bad_inputs():
    x = torch.randn(10, 3)
    nan = x.clone()
    nan[0, 0] = float("nan")
    cases = [
        (lambda: balanced_kmeans(x[0], 2), "embeddings"),
        (lambda: balanced_kmeans(x.long(), 2), "embeddings"),
        (lambda: balanced_kmeans(x[:0], 2), "embeddings"),
        (lambda: balanced_kmeans(nan, 2), "embeddings"),
        (lambda: balanced_kmeans(x, 0), "cluster_size"),
        (lambda: balanced_kmeans(x, 2.0), "cluster_size"),
        (lambda: balanced_kmeans(x, 2, n_iter=0), "n_iter"),
        (lambda: balanced_kmeans(x, 2, tol=-1.0), "tol"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_without_clusters_is_a_random_permutation_in_batches():
    sampler = NGAMEBatchSampler(103, 10, seed=5)
    batches = _epoch(sampler, 0)
    assert len(batches) == len(sampler) == 11
    assert [len(b) for b in batches] == [10] * 10 + [3]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103)) and flat != list(range(103))
    assert _epoch(sampler, 0) == batches  # deterministic by seed and epoch
    assert _epoch(NGAMEBatchSampler(103, 10, seed=5), 0) == batches
    assert _epoch(sampler, 1) != batches
    assert _epoch(NGAMEBatchSampler(103, 10, seed=6), 0) != batches
    dropping = NGAMEBatchSampler(103, 10, seed=5, drop_last=True)
    assert len(dropping) == 10 and [len(b) for b in _epoch(dropping, 0)] == [10] * 10
    # refreshing with singleton clusters keeps a random permutation
    sampler.refresh(torch.randn(103, 4), cluster_size=1)
    assert sorted(i for b in _epoch(sampler, 2) for i in b) == list(range(103))


def test_sampler_after_refresh_concatenates_shuffled_clusters():
    x, group = _groups(n=400, num_groups=8)
    sampler = NGAMEBatchSampler(400, 100, cluster_size=50, seed=0)
    sampler.set_epoch(3)
    sampler.refresh(x)
    assert len(sampler.clusters) == 8
    batches = list(sampler)
    for batch in batches:  # two whole, pure clusters per batch
        counts = torch.bincount(group[batch], minlength=8)
        assert sorted(counts.tolist()) == [0] * 6 + [50, 50]
    assert _epoch(sampler, 4) != batches
    assert sorted(i for b in _epoch(sampler, 4) for i in b) == list(range(400))
    loader = DataLoader(TensorDataset(torch.arange(400)), batch_sampler=sampler)
    assert [b[0].tolist() for b in loader] == _epoch(sampler, 4)
    with pytest.raises(ValueError, match="embeddings"):
        sampler.refresh(x[:-1])


def _code_curriculum(num_epochs, n, curr_steps, interval, warmup=None):
    """The released loop: ``ClusteringIndex.update_state`` halves the number of clusters
    after epoch ``e`` when ``e + 1`` is in ``curr_steps``; ``_fit`` refreshes at the start of
    epoch ``e`` when ``e >= warmup`` (``curr_steps[0]`` in the code) and ``e % interval ==
    0``. Returns ``{refresh epoch: cluster size}``."""
    warmup = curr_steps[0] if warmup is None else warmup
    num_clusters, out = float(n), {}
    for epoch in range(num_epochs):
        if epoch >= warmup and epoch % interval == 0:
            out[epoch] = round(n / num_clusters)
        if any(s - 1 == epoch for s in curr_steps):
            num_clusters /= 2
    return out


def test_schedule_follows_the_released_curriculum():
    schedule = NGAMESchedule()
    expected = _code_curriculum(300, 1 << 12, DOUBLING_EPOCHS, 5)
    got = {e: schedule.cluster_size(e) for e in range(300) if schedule.should_refresh(e)}
    assert got == expected
    assert got[10] == 2 and got[25] == 8 and got[295] == 512
    schedule = NGAMESchedule(refresh_interval=2, doubling_epochs=(3, 6), warmup=0)
    expected = _code_curriculum(10, 64, (3, 6), 2, warmup=0)
    got = {e: schedule.cluster_size(e) for e in range(10) if schedule.should_refresh(e)}
    assert got == expected == {0: 1, 2: 1, 4: 2, 6: 4, 8: 4}
    assert NGAMESchedule(max_cluster_size=16).cluster_size(299) == 16


def test_on_epoch_start_refreshes_on_schedule():
    x, _ = _groups(n=64, num_groups=4)
    calls = []

    def embed():
        calls.append(1)
        return x

    schedule = NGAMESchedule(refresh_interval=2, doubling_epochs=(2, 4), cluster_size_start=4)
    sampler = NGAMEBatchSampler(64, 16, seed=0)
    did = [schedule.on_epoch_start(e, sampler, embed) for e in range(6)]
    assert did == [False, False, True, False, True, False] and len(calls) == 2
    assert sampler.epoch == 5 and sampler.cluster_size == 16
    assert max(len(c) for c in sampler.clusters) == 16


def test_bad_sampler_and_schedule_arguments():
    cases = [
        (lambda: NGAMEBatchSampler(0, 4), "num_samples"),
        (lambda: NGAMEBatchSampler(10, 0), "batch_size"),
        (lambda: NGAMEBatchSampler(10, 4, cluster_size=0), "cluster_size"),
        (lambda: NGAMEBatchSampler(10, 4).set_epoch(-1), "epoch"),
        (lambda: NGAMESchedule(refresh_interval=0), "refresh_interval"),
        (lambda: NGAMESchedule(doubling_epochs=(5, -1)), "doubling_epochs"),
        (lambda: NGAMESchedule(max_cluster_size=0), "max_cluster_size"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(TypeError):
        NGAMESchedule(5)  # keyword-only: a positional number is not silently an interval


def test_ngame_batches_hold_harder_negatives_than_random_batches():
    """Synthetic XC (2000 documents, 2000 labels, 32-d): each document's positive label is a
    noisy copy of it; label directions come from 40 topics. Batches of 64 built from NGAME
    clusters of the documents have a higher mean similarity between a document and the other
    documents' labels (its in-batch negatives), and a higher triplet loss, than random ones."""
    g = torch.Generator().manual_seed(0)
    n, dim, batch = 2000, 32, 64
    topics = F.normalize(torch.randn(40, dim, generator=g), dim=1)
    noise = torch.randn(2, n, dim, generator=g) / dim**0.5  # rows of norm about 1
    labels = F.normalize(topics[torch.arange(n) % 40] + 0.7 * noise[0], dim=1)
    docs = F.normalize(labels + 0.5 * noise[1], dim=1)

    def stats(sampler):
        sims, losses = [], []
        for idx in sampler:
            s = docs[idx] @ labels[idx].T
            off = ~torch.eye(len(idx), dtype=torch.bool)
            sims.append(s[off].mean())
            losses.append(triplet_ohnm_loss(s, torch.eye(len(idx)), margin=0.3, k=10))
        return torch.stack(sims).mean(), torch.stack(losses).mean()

    ngame = NGAMEBatchSampler(n, batch, seed=0)
    NGAMESchedule(refresh_interval=1, doubling_epochs=(), cluster_size_start=16).on_epoch_start(
        0, ngame, lambda: docs
    )
    random = NGAMEBatchSampler(n, batch, seed=0)
    sim_ngame, loss_ngame = stats(ngame)
    sim_random, loss_random = stats(random)
    assert sim_ngame > sim_random + 0.1  # about 0.14 against 0.01
    assert loss_ngame > 4 * loss_random  # about 8 times


def test_registered_as_a_miner():
    entry = get("ngame_batching")
    assert entry.kind == "miner" and entry.family == "mining" and entry.papers == (56,)
    sampler = entry.build(num_samples=10)
    assert isinstance(sampler, NGAMEBatchSampler) and sampler.batch_size == 1600
