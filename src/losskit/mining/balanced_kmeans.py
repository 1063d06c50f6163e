"""Balanced hierarchical 2-means on cosine similarity (the clustering behind NGAME, paper 56).

Every node is split into two halves: pick two distinct members as centroids, then repeat
(a) assign by sorting ``sim(x, c_1) - sim(x, c_0)`` and giving the first ``ceil(n/2)``
members to ``c_0`` and the rest to ``c_1`` (the best balanced assignment for two centroids),
(b) move each centroid to the normalised mean of its half; stop when the mean similarity of
the members to their centroid improves by less than ``tol`` (or after ``n_iter`` rounds).
Both steps can only raise that mean, so the loop terminates. Splitting proceeds level by
level until the largest cluster has at most ``cluster_size`` members, so all sizes differ by
at most one. This is ``xclib``'s ``b_kmeans_dense`` driven by ``cluster_balance`` as NGAME
calls it (``num_clusters = N / cluster_size``); here all nodes of a level are split at once
as one padded batch, in torch, on the embeddings' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_finite, check_number
from losskit._core.precision import upcast


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    check_number(name, value, low=low)
    return value


def _split_level(x: Tensor, members: Tensor, sizes: Tensor, gen: torch.Generator,
                 n_iter: int, tol: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Split every node (rows of ``members`` [C, W], padded with ``len(x) - 1``, a zero row)
    into two balanced halves; returns the children's members and sizes."""
    c, w = members.shape
    device = x.device
    col = torch.arange(w, device=device)
    real = col < sizes[:, None]
    first = (sizes + 1) // 2  # np.array_split: the first half takes the extra member
    feats = x[members]  # [C, W, D]
    # two distinct random members per node
    u = torch.rand(c, 2, generator=gen).to(device)
    i = (u[:, 0] * sizes).long().clamp_max(sizes - 1)
    j = (i + 1 + (u[:, 1] * (sizes - 1)).long().clamp_max(sizes - 2)) % sizes
    centroids = torch.stack([feats[torch.arange(c), i], feats[torch.arange(c), j]], dim=1)
    previous = None
    for _ in range(n_iter):
        sim = feats @ centroids.transpose(1, 2)  # [C, W, 2]
        diff = torch.where(real, sim[..., 1] - sim[..., 0], torch.inf)
        order = diff.argsort(dim=1, stable=True)
        side = (col[None, :] >= first[:, None]).to(x.dtype)  # in sorted order: 0 or 1
        side = torch.zeros_like(side).scatter_(1, order, side)  # back to member order
        weights = torch.stack([(1 - side) * real, side * real], dim=1)  # [C, 2, W]
        centroids = F.normalize(weights @ feats, dim=2)
        sim = feats @ centroids.transpose(1, 2)
        own = torch.where(side > 0, sim[..., 1], sim[..., 0]) * real
        score = own.sum(dim=1) / sizes
        if previous is not None and bool(((score - previous) < tol).all()):
            break
        previous = score
    ranked = members.gather(1, order)  # the last assignment, halves in sorted order
    half = (w + 1) // 2
    pad = x.shape[0] - 1
    pos = torch.arange(half, device=device)
    left_sizes, right_sizes = first, sizes - first
    left = torch.where(pos < left_sizes[:, None], ranked[:, :half], pad)
    right_idx = (first[:, None] + pos).clamp_max(w - 1)
    right = torch.where(pos < right_sizes[:, None], ranked.gather(1, right_idx), pad)
    children = torch.stack([left, right], dim=1).reshape(2 * c, half)
    child_sizes = torch.stack([left_sizes, right_sizes], dim=1).reshape(2 * c)
    return children, child_sizes


def balanced_kmeans(
    embeddings: Tensor,
    cluster_size: int,
    *,
    seed: int = 0,
    n_iter: int = 50,
    tol: float = 1e-4,
) -> list[Tensor]:
    """Balanced clusters of the rows of ``embeddings[N, D]`` (cosine similarity): a list of
    CPU long tensors of indices, each of size ``<= cluster_size``, sizes differing by at most
    one, covering ``0..N-1`` exactly once. ``cluster_size >= N`` gives one cluster and
    ``cluster_size = 1`` singletons (no clustering needed). Deterministic given ``seed``."""
    if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point():
        raise ValueError("embeddings must be a floating torch.Tensor of shape [N, D]")
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must have shape [N, D], got {tuple(embeddings.shape)}")
    cluster_size = _check_int("cluster_size", cluster_size, 1)
    n_iter = _check_int("n_iter", n_iter, 1)
    tol = check_number("tol", tol, low=0.0)
    check_finite("embeddings", embeddings)
    n = embeddings.shape[0]
    if cluster_size == 1:
        return list(torch.arange(n).split(1))
    x = F.normalize(upcast(embeddings.detach()), dim=1)
    x = torch.cat([x, x.new_zeros(1, x.shape[1])])  # padding row, index n
    gen = torch.Generator().manual_seed(int(seed))
    members = torch.arange(n, device=x.device)[None, :]
    sizes = torch.tensor([n], device=x.device)
    while int(sizes.max()) > cluster_size:
        members, sizes = _split_level(x, members, sizes, gen, n_iter, tol)
    members, sizes = members.cpu(), sizes.cpu()
    return [row[:size] for row, size in zip(members, sizes.tolist(), strict=True)]
