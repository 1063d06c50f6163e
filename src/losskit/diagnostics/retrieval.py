"""Retrieval metrics of an embedding: Recall@k, MAP@R and the NMI of a k-means clustering.

Inputs are ``embeddings[N, D]`` (NumPy array or torch tensor, detached and moved to the CPU)
and integer ``labels[N]``. Retrieval is **leave-one-out within the set**: every row is a query
and the other ``N - 1`` rows are its references, ranked by decreasing cosine similarity (of
L2-normalised rows; ``normalize=False`` ranks by the raw dot product). Similarities are
computed in float32 for float32 (and narrower) inputs, float64 for float64, in row chunks of
about 4M entries. Ties among equal similarities are broken arbitrarily.

Following Musgrave, Belongie and Lim, "A Metric Learning Reality Check" (ECCV 2020) and their
``pytorch-metric-learning`` ``AccuracyCalculator``, a query whose label no other row shares
(``R_i = 0``) is *excluded* from Recall@k and MAP@R, which average over the remaining queries
(NaN when none remains). With ``R_i`` the number of other rows that share query ``i``'s label
and ``rel_i(j)`` whether its ``j``-th neighbour does:

- **Recall@k**: the fraction of queries with at least one relevant row among their ``k``
  nearest neighbours (the deep-metric-learning "Recall@K"; at ``k = 1`` it is precision@1).
- **MAP@R**: ``1/R_i sum_{j <= R_i} rel_i(j) * P_i(j)`` with ``P_i(j) = (1/j) sum_{l <= j}
  rel_i(l)`` the precision at ``j``, averaged over queries: average precision truncated at
  ``R_i`` neighbours, 1 exactly when the ``R_i`` nearest rows are the ``R_i`` relevant ones.
- **NMI**: k-means (scikit-learn ``KMeans``, ``k`` = the number of distinct labels, fixed
  ``seed``, ``n_init`` restarts, one thread) on the (normalised) embeddings, scored by
  :func:`normalized_mutual_info` against the labels, ``I(U; V) / ((H(U) + H(V)) / 2)`` in
  nats (scikit-learn's ``normalized_mutual_info_score`` with its default arithmetic mean and
  its limit cases: 1 when labels and clusters are both a single group, 0 when ``I = 0``;
  clipped at 1 against rounding).

Bad input (shapes, non-integer labels, NaN/Inf, a zero row to normalise, ``k`` outside
``[1, N - 1]``) raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from losskit._core.checks import check_number
from losskit._core.registry import register

_CHUNK = 1 << 22  # similarity entries per row chunk


def _embeddings(x: Any, normalize: bool) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bool or x.dtype.is_complex:
            raise ValueError(f"embeddings must be real, got dtype {x.dtype}")
        t = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    else:
        try:
            a = np.asarray(x)
        except (TypeError, ValueError):
            raise ValueError("embeddings must be a NumPy array or torch tensor") from None
        if a.dtype.kind not in "iuf":
            raise ValueError(f"embeddings must be real, got dtype {a.dtype}")
        a = a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.ndim != 2 or t.shape[0] < 2 or t.shape[1] < 1:
        raise ValueError(f"embeddings must have shape [N, D] with N >= 2, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("embeddings must be finite, got NaN or Inf values")
    if normalize:
        norms = t.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("embeddings has a zero row, which cannot be normalised")
        t = t / norms
    return t


def _labels(y: Any, n: int, name: str = "labels") -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.dtype.kind not in "iub" or a.dtype == np.bool_:
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    return a.astype(np.int64)


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int in [1, {n - 1}], got {k!r}")
    return int(check_number("k", k, low=1, high=n - 1))


def _ranked_relevance(z: torch.Tensor, labels: np.ndarray, kmax: int) -> tuple[np.ndarray, ...]:
    """``(rel[Q, kmax] bool, R[Q])`` of the queries with ``R_i > 0``: whether each of their
    ``kmax`` nearest other rows shares their label, and their number of relevant rows."""
    n = z.shape[0]
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r_all = counts[inv] - 1
    keep = np.flatnonzero(r_all > 0)
    y = torch.from_numpy(labels)
    rel = np.zeros((len(keep), kmax), dtype=bool)
    step = max(1, _CHUNK // n)
    for start in range(0, len(keep), step):
        rows = torch.from_numpy(keep[start : start + step])
        sim = z[rows] @ z.T
        sim[torch.arange(len(rows)), rows] = -math.inf  # leave the query out
        idx = sim.topk(kmax, dim=1).indices
        rel[start : start + len(rows)] = (y[idx] == y[rows, None]).numpy()
    return rel, r_all[keep]


def recall_at_k(embeddings: Any, labels: Any, *, k: int = 1, normalize: bool = True) -> float:
    """Leave-one-out Recall@k (see the module docstring)."""
    z = _embeddings(embeddings, normalize)
    y = _labels(labels, z.shape[0])
    k = _check_k(k, z.shape[0])
    rel, _ = _ranked_relevance(z, y, k)
    return float(rel.any(axis=1).mean()) if len(rel) else math.nan


def _map_at_r(rel: np.ndarray, r: np.ndarray) -> float:
    if not len(rel):
        return math.nan
    ranks = np.arange(1, rel.shape[1] + 1)
    within = ranks[None, :] <= r[:, None]
    hits = rel & within
    precision = np.cumsum(hits, axis=1) / ranks
    return float(np.mean((precision * hits).sum(axis=1) / r))


def map_at_r(embeddings: Any, labels: Any, *, normalize: bool = True) -> float:
    """Leave-one-out MAP@R (Musgrave et al. 2020; see the module docstring)."""
    z = _embeddings(embeddings, normalize)
    y = _labels(labels, z.shape[0])
    _, counts = np.unique(y, return_counts=True)
    kmax = int(counts.max()) - 1
    if kmax < 1:
        return math.nan
    rel, r = _ranked_relevance(z, y, kmax)
    return _map_at_r(rel, r)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(labels_true: Any, labels_pred: Any) -> float:
    """``I(U; V) / ((H(U) + H(V)) / 2)`` of two labelings of the same rows (natural logs)."""
    a = _labels(labels_true, len(np.asarray(labels_true)), "labels_true")
    b = _labels(labels_pred, len(a), "labels_pred")
    if len(a) == 0:
        raise ValueError("labels_true is empty")
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    if len(ua) == len(ub) == 1:
        return 1.0
    table = np.zeros((len(ua), len(ub)), dtype=np.float64)
    np.add.at(table, (ia, ib), 1.0)
    n = float(len(a))
    row, col = table.sum(1), table.sum(0)
    nz = table > 0
    mi = float((table[nz] / n * np.log(n * table[nz] / np.outer(row, col)[nz])).sum())
    if mi <= 0.0:
        return 0.0
    return min(1.0, mi / ((_entropy(row) + _entropy(col)) / 2.0))  # rounding can pass 1


def kmeans_nmi(
    embeddings: Any, labels: Any, *, seed: int = 0, n_init: int = 3, normalize: bool = True
) -> float:
    """NMI between the labels and a k-means clustering of the embeddings (``k`` = the number
    of distinct labels; scikit-learn ``KMeans(random_state=seed, n_init=n_init)`` on one
    thread, so the result does not depend on the machine's core count)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    z = _embeddings(embeddings, normalize)
    y = _labels(labels, z.shape[0])
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ValueError(f"n_init must be a positive int, got {n_init!r}")
    k = len(np.unique(y))
    if k < 2:
        return 1.0  # one class: any single-cluster answer is exact
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
        clusters = km.fit_predict(z.double().numpy())
    return normalized_mutual_info(y, clusters)


def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    *,
    ks: tuple[int, ...] = (1, 5),
    normalize: bool = True,
    seed: int = 0,
    n_init: int = 3,
) -> dict[str, float]:
    """``{"recall@k" for k in ks, "map@r", "nmi", "queries"}`` from one neighbour search
    (``queries``: the number of queries with a relevant row, i.e. the denominator)."""
    z = _embeddings(embeddings, normalize)
    y = _labels(labels, z.shape[0])
    ks = tuple(_check_k(k, z.shape[0]) for k in ks)
    _, counts = np.unique(y, return_counts=True)
    kmax = min(z.shape[0] - 1, max(*ks, int(counts.max()) - 1))
    rel, r = _ranked_relevance(z, y, kmax)
    out = {f"recall@{k}": float(rel[:, :k].any(axis=1).mean()) if len(rel) else math.nan
           for k in ks}  # fmt: skip
    out["map@r"] = _map_at_r(rel, r)
    out["nmi"] = kmeans_nmi(z, y, seed=seed, n_init=n_init, normalize=False)
    out["queries"] = float(len(rel))
    return out


_NOTE = "leave-one-out over the set, cosine similarity, queries without a relevant row excluded"
register(
    "recall_at_k",
    kind="metric",
    family="embedding",
    summary=f"Recall@k: a relevant row among the k nearest neighbours; {_NOTE}.",
    defaults={"k": 1, "normalize": True},
    function=recall_at_k,
)
register(
    "map_at_r",
    kind="metric",
    family="embedding",
    summary=f"MAP@R (Musgrave et al. 2020): average precision over the R nearest; {_NOTE}.",
    defaults={"normalize": True},
    function=map_at_r,
)
register(
    "kmeans_nmi",
    kind="metric",
    family="embedding",
    summary="NMI (arithmetic mean) of a seeded k-means clustering of the embeddings (k = number "
    "of labels) against the labels.",
    defaults={"seed": 0, "n_init": 3, "normalize": True},
    function=kmeans_nmi,
)
