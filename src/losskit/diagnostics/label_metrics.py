"""Metrics on a label space, for geometry-aware prediction (Loki, paper 47).

A label metric is a distance matrix ``D[N, N]`` over the ``N`` labels of the full label space:
finite, non-negative, symmetric, with a zero diagonal. :func:`check_label_metric` validates
one; three builders make the metrics paper 47 uses:

- :func:`discrete_metric`: ``d(i, j) = 1[i != j]``. Under it the Fréchet-mean rule is the
  ordinary argmax.
- :func:`tree_metric`: the path length (number of edges) between two nodes of a hierarchy
  given as a parent map. With ``anc(v)`` the set of ``v`` and all its ancestors,
  ``d(a, b) = |anc(a)| + |anc(b)| - 2 |anc(a) ∩ anc(b)|`` (the path runs through the lowest
  common ancestor), computed as one product of ancestor indicator matrices.
- :func:`embedding_metric`: the Euclidean distance between class embeddings,
  ``d(i, j) = ||e_i - e_j||_2`` (the paper's self-derived metric from CLIP text embeddings of
  the class names; any embedding of the names works), optionally in the span of their top
  principal components.

Results are float64 NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from losskit._core.registry import register

_SYM_TOL = 1e-9  # relative tolerance for symmetry and the zero diagonal
_CHUNK = 1 << 22  # float64 entries per chunk of pairwise differences


def _real_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def check_label_metric(dist: Any, name: str = "metric") -> np.ndarray:
    """``dist`` as a validated float64 ``[N, N]`` distance matrix.

    Raises ``ValueError`` unless it is square with ``N >= 1``, finite, non-negative,
    symmetric and zero on the diagonal (up to a relative ``1e-9`` of its largest entry). The
    triangle inequality is not checked: the Fréchet-mean rule does not need it.
    """
    d = _real_array(dist, name)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(f"{name} must be a square [N, N] matrix with N >= 1, got {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf")
    if (d < 0).any():
        raise ValueError(f"{name} must be non-negative, got minimum {d.min():.3g}")
    tol = _SYM_TOL * max(float(d.max()), 1.0)
    asym = float(np.abs(d - d.T).max())
    if asym > tol:
        raise ValueError(f"{name} must be symmetric, got |d(i,j) - d(j,i)| up to {asym:.3g}")
    diag = float(np.abs(np.diag(d)).max())
    if diag > tol:
        raise ValueError(f"{name} must be zero on the diagonal, got d(i,i) up to {diag:.3g}")
    return d


def discrete_metric(num_labels: int) -> np.ndarray:
    """``D[i, j] = 1[i != j]`` over ``num_labels`` labels (float64)."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)):
        raise ValueError(f"num_labels must be an int >= 1, got {num_labels!r}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be an int >= 1, got {num_labels}")
    return 1.0 - np.eye(int(num_labels))


def _ancestor_chains(parent: Mapping[Hashable, Hashable | None]) -> dict[Hashable, list]:
    """Each node's chain ``[node, parent, ..., root]``; one root, no cycles."""
    if not isinstance(parent, Mapping) or not parent:
        raise ValueError("parent must be a non-empty mapping node -> parent (None at the root)")
    nodes = list(parent)
    nodes += [p for p in parent.values() if p is not None and p not in parent]
    roots = {v for v in nodes if parent.get(v) is None}
    if len(roots) != 1:
        raise ValueError(f"parent must describe one tree with one root, got roots {roots}")
    chains: dict[Hashable, list] = {}
    for v in nodes:
        chain = [v]
        while parent.get(chain[-1]) is not None:
            chain.append(parent[chain[-1]])
            if len(chain) > len(nodes):
                raise ValueError(f"parent has a cycle through {v!r}")
        chains[v] = chain
    return chains


def tree_metric(
    parent: Mapping[Hashable, Hashable | None], labels: Sequence[Hashable]
) -> np.ndarray:
    """Path lengths ``D[len(labels), len(labels)]`` between ``labels`` in a tree.

    ``parent`` maps each node to its parent; the root maps to ``None`` (or appears only as a
    parent). ``labels`` are the nodes that form the label space, in output order (often the
    leaves, e.g. the fine classes of a coarse -> fine hierarchy); they must be distinct nodes
    of the tree. Every edge has length 1.
    """
    chains = _ancestor_chains(parent)
    labels = list(labels)
    if not labels:
        raise ValueError("labels must name at least one node")
    unknown = [v for v in labels if v not in chains]
    if unknown:
        raise ValueError(f"labels must be nodes of the tree, got unknown {unknown[:5]}")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct nodes")
    column = {v: i for i, v in enumerate(chains)}
    anc = np.zeros((len(labels), len(chains)), dtype=np.float64)
    for row, v in enumerate(labels):
        anc[row, [column[u] for u in chains[v]]] = 1.0
    size = anc.sum(axis=1)
    return size[:, None] + size[None, :] - 2.0 * (anc @ anc.T)


def embedding_metric(embeddings: Any, *, components: int | None = None) -> np.ndarray:
    """Euclidean distances ``D[N, N]`` between the rows of ``embeddings[N, E]`` (float64,
    exactly symmetric with a zero diagonal).

    ``components = r`` measures them instead between the projections on the top ``r``
    principal components of the centred rows (``r <= min(N, E)``); at ``r`` equal to the rank
    of the centred rows this is the full metric. A low-dimensional geometry puts more labels
    inside the convex hull of others, where a Fréchet mean can land on them.
    """
    e = _real_array(embeddings, "embeddings")
    if e.ndim != 2 or e.shape[0] == 0 or e.shape[1] == 0:
        raise ValueError(f"embeddings must have shape [N, E] with N, E >= 1, got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings must be finite, got NaN or Inf")
    if components is not None:
        top = min(e.shape)
        if isinstance(components, bool) or not isinstance(components, (int, np.integer)):
            raise ValueError(f"components must be an int in [1, {top}], got {components!r}")
        if not 1 <= components <= top:
            raise ValueError(f"components must be an int in [1, {top}], got {components}")
        u, s, _ = np.linalg.svd(e - e.mean(axis=0), full_matrices=False)
        e = u[:, :components] * s[:components]
    n = e.shape[0]
    d = np.empty((n, n))
    step = max(1, _CHUNK // (n * e.shape[1]))
    for start in range(0, n, step):  # row chunks: no [N, N, E] array
        diff = e[start : start + step, None, :] - e[None, :, :]
        d[start : start + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return d  # (e_i - e_j)^2 = (e_j - e_i)^2 exactly: symmetric, zero diagonal


register(
    "tree_metric",
    kind="diagnostic",
    family="diagnostics",
    papers=(47,),
    summary="Path-length metric between the nodes of a hierarchy (parent map), for Loki.",
    function=tree_metric,
)
register(
    "embedding_metric",
    kind="diagnostic",
    family="diagnostics",
    papers=(47,),
    summary="Euclidean metric between class embeddings (e.g. of class names), for Loki.",
    function=embedding_metric,
)
