"""Embedding measures of paper 8 (Wang & Liu, "Understanding the Behaviour of Contrastive
Loss"): uniformity, tolerance to potential positives, and alignment as their companion.

Inputs are NumPy arrays or torch tensors (detached; torch stays on its device). Every
embedding row is **L2-normalised inside** (``z = f / ||f||``), as the paper measures features
on the unit hypersphere; a zero row cannot be normalised and raises ``ValueError``. NumPy
inputs are computed in float64; torch inputs in at least float32 (float16/bfloat16 and
integers in float32, float64 kept). Results are Python floats.

- **Uniformity** (Wang & Isola, 2020, the form paper 8 uses with ``t = 2``):
  ``L_u = log( 1/(N(N-1)) sum_{i != j} exp(-t ||z_i - z_j||^2) )`` over all ordered pairs of
  distinct rows (the same value as the mean over unordered pairs ``i < j``, i.e. Wang &
  Isola's ``pdist`` code; self-pairs ``i = j`` are excluded). It lies in ``[-4t, 0]``: 0 when
  all points coincide (the maximum), lower is more uniform. Computed as a logsumexp over
  row chunks (``chunk_size`` rows against all N), so no N x N matrix is held for N > chunk.
- **Tolerance** (paper 8): ``T = E_{same class}[ z_i^T z_j ]``, the mean cosine similarity over
  all ordered pairs ``i != j`` with ``labels_i = labels_j``, every pair weighted equally
  (pooled over classes, so a class of n points counts ``n(n-1)`` pairs; classes with one
  point add no pair; self-pairs are excluded). Computed exactly without any pair matrix from
  the class sums: ``sum_{i != j in c} z_i^T z_j = ||sum_{i in c} z_i||^2 - sum_{i in c}
  ||z_i||^2``, accumulated in float64. In ``[-1, 1]``; 1 when each class collapses to a point.
- **Alignment** (Wang & Isola, 2020): ``L_a = 1/N sum_i ||z_i - w_i||^alpha`` over positive
  pairs ``(x_i, y_i)`` (row i of ``x`` with row i of ``y``), both normalised. In ``[0, 2^alpha]``;
  0 when every pair coincides.

Paper 8's reading: a lower temperature gives more uniform (lower ``L_u``) but less tolerant
(lower ``T``) features; the best downstream accuracy sits in between.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register

_CHUNK = 1 << 22  # pair entries per chunk (32 MiB in float64)


def _as_tensor(x: Any, name: str) -> Tensor:
    """``x`` as a detached torch tensor in its compute dtype (NumPy -> float64)."""
    if isinstance(x, Tensor):
        x = x.detach()
        if x.dtype == torch.bool or x.dtype.is_complex:
            raise ValueError(f"{name} must be real floating or integer, got dtype {x.dtype}")
        return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a NumPy array or torch tensor") from None
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be real floating or integer, got dtype {a.dtype}")
    return torch.from_numpy(a.astype(np.float64))


def _normalised(x: Any, name: str, min_rows: int) -> Tensor:
    """Validated [N, D] embeddings with N >= ``min_rows``, rows L2-normalised."""
    z = _as_tensor(x, name)
    if z.ndim != 2 or z.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, D] with D >= 1, got {tuple(z.shape)}")
    if z.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} points, got {z.shape[0]}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    zero = (norm[:, 0] == 0).nonzero()
    if zero.numel():
        raise ValueError(f"{name} row {int(zero[0, 0])} is zero and cannot be L2-normalised")
    return z / norm


def _chunk_rows(chunk_size: int | None, n: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK // n)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
    check_number("chunk_size", chunk_size, low=1)
    return int(chunk_size)


def uniformity(embeddings: Any, *, t: float = 2.0, chunk_size: int | None = None) -> float:
    """Uniformity ``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` of L2-normalised rows.

    ``embeddings[N, D]`` with N >= 2; ``t > 0`` (paper 8 and Wang & Isola use 2);
    ``chunk_size`` rows are compared with all N at a time (default: about 4M pairs).
    0 for coincident points (the maximum); ``-2tN/(N-1)`` for a regular simplex of N points
    (``-4t`` for an antipodal pair).
    """
    t = check_number("t", t, low=0.0, low_open=True, high=math.inf, high_open=True)
    z = _normalised(embeddings, "embeddings", min_rows=2)
    n = z.shape[0]
    rows = _chunk_rows(chunk_size, n)
    parts = []
    for s in range(0, n, rows):
        e = min(s + rows, n)
        sq = (2.0 - 2.0 * (z[s:e] @ z.T)).clamp_(min=0.0)
        v = sq.mul_(-t)
        idx = torch.arange(e - s, device=z.device)
        v[idx, idx + s] = -math.inf  # self-pairs excluded
        parts.append(torch.logsumexp(v.reshape(-1), dim=0).to(torch.float64))
    return float(torch.logsumexp(torch.stack(parts), dim=0)) - math.log(n * (n - 1))


def tolerance(embeddings: Any, labels: Any) -> float:
    """Tolerance ``mean_{i != j, labels_i = labels_j} z_i^T z_j`` of L2-normalised rows.

    ``embeddings[N, D]`` with N >= 2, ``labels[N]`` integer classes; at least one class must
    hold two points. Pairs are pooled over classes (each ordered pair counts once).
    """
    z = _normalised(embeddings, "embeddings", min_rows=2)
    if isinstance(labels, Tensor):
        y = labels.detach().to(z.device)
        dtype, ok = y.dtype, not (y.is_floating_point() or y.is_complex())
    else:
        a = np.asarray(labels)
        dtype, ok = a.dtype, a.dtype.kind in "biu"
        y = torch.from_numpy(a.astype(np.int64)).to(z.device) if ok else None
    if not ok:
        raise ValueError(f"labels must hold integer classes, got dtype {dtype}")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(y.shape)}")
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    pairs = int((counts * (counts - 1)).sum())
    if pairs == 0:
        raise ValueError("labels must give some class at least two points, got all distinct")
    z64 = z.to(torch.float64)
    sums = torch.zeros(counts.shape[0], z.shape[1], dtype=torch.float64, device=z.device)
    sums.index_add_(0, inverse, z64)
    total = (sums * sums).sum() - (z64 * z64).sum()
    return float(total) / pairs


def alignment(x: Any, y: Any, *, alpha: float = 2.0) -> float:
    """Alignment ``mean_i ||z_i - w_i||^alpha`` of positive pairs, ``z = x/||x||``, ``w = y/||y||``.

    ``x[N, D]`` and ``y[N, D]`` with row i of each forming a positive pair; ``alpha > 0``
    (Wang & Isola use 2, where it equals ``2 - 2 mean_i z_i^T w_i``).
    """
    alpha = check_number("alpha", alpha, low=0.0, low_open=True, high=math.inf, high_open=True)
    z = _normalised(x, "x", min_rows=1)
    w = _normalised(y, "y", min_rows=1)
    if z.shape != w.shape:
        raise ValueError(f"y must have shape {tuple(z.shape)} like x, got {tuple(w.shape)}")
    dtype = torch.promote_types(z.dtype, w.dtype)
    d = torch.linalg.vector_norm(z.to(dtype) - w.to(dtype), dim=1)
    return float(d.pow(alpha).to(torch.float64).mean())


_NOTE = "rows L2-normalised inside; NumPy or torch"


def utilization(
    test_embeddings: Any,
    train_embeddings: Any,
    *,
    normalize: bool = True,
    squared: bool = True,
    chunk_size: int | None = None,
) -> float:
    """Metrix's utilization (paper 11): ``u(Q) = 1/|Q| sum_q min_x ||f(q) - f(x)||^2``, the
    mean squared distance from each test embedding ``q`` to its nearest training embedding
    ``x``; lower means test examples fall where training explored the space.

    Rows are L2-normalised when ``normalize``; ``squared=False`` gives the plain distance
    (the paper's exact power is not stated in the text we could read). ``chunk_size`` test
    rows are compared with all training rows at a time (default: about 4M pairs).
    """
    q = _as_tensor(test_embeddings, "test_embeddings")
    x = _as_tensor(train_embeddings, "train_embeddings")
    for name, z in (("test_embeddings", q), ("train_embeddings", x)):
        if z.ndim != 2 or 0 in z.shape:
            raise ValueError(f"{name} must have shape [N, D], N, D >= 1, got {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError(f"{name} must be finite, got NaN or Inf values")
    if q.shape[1] != x.shape[1]:
        raise ValueError(
            f"train_embeddings must have {q.shape[1]} features like test_embeddings, "
            f"got {x.shape[1]}"
        )
    if normalize:
        q = _normalised(q, "test_embeddings", 1)
        x = _normalised(x, "train_embeddings", 1)
    dtype = torch.promote_types(q.dtype, x.dtype)
    q, x = q.to(dtype), x.to(dtype)
    rows = _chunk_rows(chunk_size, x.shape[0])
    x_sq = x.square().sum(1)
    nearest = torch.cat(
        [
            (p.square().sum(1)[:, None] + x_sq - 2.0 * p @ x.T).amin(dim=1).clamp_min(0)
            for p in q.split(rows)
        ]
    ).to(torch.float64)
    return float((nearest if squared else nearest.sqrt()).mean())


register(
    "uniformity",
    kind="diagnostic",
    family="embedding",
    papers=(8,),
    summary=f"log mean_(i!=j) exp(-t||z_i-z_j||^2) (Wang & Isola form), row-chunked; {_NOTE}.",
    defaults={"t": 2.0},
    function=uniformity,
)
register(
    "tolerance",
    kind="diagnostic",
    family="embedding",
    papers=(8,),
    summary=f"Mean cosine similarity over same-label pairs i!=j (potential positives); {_NOTE}.",
    function=tolerance,
)
register(
    "alignment",
    kind="diagnostic",
    family="embedding",
    papers=(8,),
    summary=f"Mean ||z_i - w_i||^alpha over positive pairs (Wang & Isola); {_NOTE}.",
    defaults={"alpha": 2.0},
    function=alignment,
)
register(
    "utilization",
    kind="diagnostic",
    family="embedding",
    papers=(11,),
    summary="Metrix utilization: mean squared distance from test to nearest training embedding.",
    defaults={"normalize": True, "squared": True},
    function=utilization,
)
