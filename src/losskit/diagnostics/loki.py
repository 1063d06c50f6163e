"""Loki (paper 47, Roberts et al., "Geometry-Aware Adaptation for Pretrained Models"): the
Fréchet-mean prediction rule over a metric label space.

A model gives probabilities ``p[B, K]`` over ``K`` observed classes ``observed[K]`` (indices
into a full label space of ``N >= K`` labels); a metric ``d`` relates all ``N`` labels. Loki
replaces ``argmax_k p_k`` by the Fréchet mean of the observed classes weighted by ``p``:

    y_hat = argmin_{y in {0..N-1}} V(y),   V(y) = sum_k p_k d(y, observed_k)^2,

so it can predict a label that was never observed when that label is central to where the
probability mass lies. ``V = p @ D[observed, :]**2`` is one matrix product; ties go to the
smallest label index.

Exact properties: under the discrete metric ``d(i, j) = 1[i != j]``, ``V(y) = 1 - p_y`` for an
observed ``y`` and ``1`` otherwise, so Loki is the argmax over the observed classes and never
predicts an unobserved one. A one-hot ``p`` on ``observed_k`` gives ``V(y) = d(y,
observed_k)^2``, minimised by ``observed_k`` itself when every other label is at a positive
distance from it. In a two-level hierarchy (root -> coarse -> fine, the label space being the
fine classes, :func:`~losskit.diagnostics.label_metrics.tree_metric`), an unobserved fine
class ``y`` under coarse class ``c`` has ``V(y) = 4 P_c + 16 (1 - P_c)`` (``P_c`` the mass on
``c``'s observed children), never below ``V`` of an observed sibling or, with no observed
sibling, of the most probable observed class: that metric never strictly prefers an
unobserved leaf.

The paper evaluates with the expected squared distance to the true label,
``E[d(y_hat, y)^2]`` (:func:`expected_squared_distance`), beside accuracy; Loki minimises its
plug-in estimate ``V`` per example.

Inputs are NumPy arrays (or anything ``np.asarray`` takes, e.g. CPU tensors), computed in
float64. ``metric`` is a distance matrix ``[N, N]`` (validated by
:func:`~losskit.diagnostics.label_metrics.check_label_metric`) or a callable ``metric(a, b)``
that returns the distances between broadcast integer label arrays ``a`` and ``b``, with
``num_labels = N`` given; it is evaluated only on the ``[K, N]`` block that Loki needs, so a
label space of hundreds of thousands of classes never forms ``N x N``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit._core.registry import register
from losskit.diagnostics.label_metrics import _real_array, check_label_metric

Metric = Any  # a [N, N] distance matrix or a callable metric(a, b) on label indices
_CHUNK = 1 << 22  # float64 entries of V per row chunk (32 MiB)


def _probabilities(probs: Any) -> np.ndarray:
    p = _real_array(probs, "probs")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must have shape [B, K] with B, K >= 1, got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs must be finite, got NaN or Inf")
    if (p < 0).any():
        raise ValueError(f"probs must be non-negative, got minimum {p.min():.3g}")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > 1e-5 * p.shape[1]
    if bad.any():
        raise ValueError(f"probs rows must sum to 1, got sums {sums[bad][:4]}")
    return p


def _labels(x: Any, name: str, num_labels: int) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer label indices, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= num_labels):
        raise ValueError(f"{name} must lie in [0, {num_labels}), got {a.min()}..{a.max()}")
    return a.astype(np.int64)


def _num_labels(metric: Metric, num_labels: int | None) -> tuple[np.ndarray | None, int]:
    """The validated matrix (None for a callable) and the size N of the label space."""
    if callable(metric):
        if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)):
            raise ValueError(
                f"num_labels must be an int >= 1 with a callable metric, got {num_labels!r}"
            )
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        return None, int(num_labels)
    d = check_label_metric(metric)
    if num_labels is not None and num_labels != d.shape[0]:
        raise ValueError(f"num_labels={num_labels} differs from the metric's N={d.shape[0]}")
    return d, d.shape[0]


def _observed_block(metric: Metric, observed: Any, num_labels: int | None) -> np.ndarray:
    """``D[observed, :]`` as float64 ``[K, N]``, validated."""
    d, n = _num_labels(metric, num_labels)
    obs = _labels(observed, "observed", n)
    if obs.size == 0 or len(np.unique(obs)) != obs.size:
        raise ValueError("observed must list K >= 1 distinct label indices")
    if d is not None:
        return d[obs]
    block = _real_array(metric(obs[:, None], np.arange(n)[None, :]), "metric(a, b)")
    if block.shape != (obs.size, n):
        raise ValueError(f"metric(a, b) must broadcast to {(obs.size, n)}, got {block.shape}")
    if not np.isfinite(block).all() or (block < 0).any():
        raise ValueError("metric(a, b) must return finite non-negative distances")
    if np.abs(block[np.arange(obs.size), obs]).max() > 1e-9 * max(block.max(), 1.0):
        raise ValueError("metric(a, b) must be zero at d(observed_k, observed_k)")
    return block


def _inputs(
    probs: Any, metric: Metric, observed: Any, num_labels: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated probabilities ``[B, K]`` and squared distances ``D[observed, :]^2``."""
    p = _probabilities(probs)
    block = _observed_block(metric, observed, num_labels)
    if block.shape[0] != p.shape[1]:
        raise ValueError(f"probs has K={p.shape[1]} columns but observed lists {block.shape[0]}")
    return p, block**2


def frechet_variance(
    probs: Any, metric: Metric, observed: Any, *, num_labels: int | None = None
) -> np.ndarray:
    """``V[B, N]``, ``V[i, y] = sum_k probs[i, k] d(y, observed_k)^2`` for every label ``y``.

    ``probs[B, K]``: rows of probabilities over the observed classes (non-negative, summing
    to 1 within ``1e-5 K``); ``observed[K]``: their distinct indices in the label space;
    ``metric``: ``[N, N]`` matrix or callable with ``num_labels``.
    """
    p, sq = _inputs(probs, metric, observed, num_labels)
    return p @ sq


def loki_predict(
    probs: Any, metric: Metric, observed: Any, *, num_labels: int | None = None
) -> np.ndarray:
    """Loki's prediction ``argmin_y V(y)`` over the full label space: int64 ``[B]`` in
    ``[0, N)`` (ties to the smallest index). Arguments as :func:`frechet_variance`; rows are
    processed in chunks so that at most about 4M entries of ``V`` are held at once."""
    p, sq = _inputs(probs, metric, observed, num_labels)
    step = max(1, _CHUNK // sq.shape[1])
    out = np.empty(p.shape[0], dtype=np.int64)
    for start in range(0, p.shape[0], step):
        out[start : start + step] = np.argmin(p[start : start + step] @ sq, axis=1)
    return out


def _pair_distances(
    metric: Metric, pred: Any, target: Any, num_labels: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, n = _num_labels(metric, num_labels)
    a, b = _labels(pred, "pred", n), _labels(target, "target", n)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"pred and target must have the same shape [B], B >= 1, got {a.shape} and {b.shape}"
        )
    if d is not None:
        return d[a, b], a, b
    dist = _real_array(metric(a, b), "metric(a, b)")
    if dist.shape != a.shape or not np.isfinite(dist).all() or (dist < 0).any():
        raise ValueError(f"metric(a, b) must return {a.shape} finite non-negative distances")
    return dist, a, b


def expected_squared_distance(
    pred: Any, target: Any, metric: Metric, *, num_labels: int | None = None
) -> float:
    """The paper's evaluation metric ``mean_i d(pred_i, target_i)^2`` (0 when all correct)."""
    dist, _, _ = _pair_distances(metric, pred, target, num_labels)
    return float(np.mean(dist**2))


def prediction_scores(
    pred: Any, target: Any, metric: Metric, *, num_labels: int | None = None
) -> dict[str, float]:
    """``{"accuracy": mean 1[pred = target], "expected_squared_distance": mean d^2,
    "mean_distance": mean d}`` of label predictions under ``metric``."""
    dist, a, b = _pair_distances(metric, pred, target, num_labels)
    return {
        "accuracy": float(np.mean(a == b)),
        "expected_squared_distance": float(np.mean(dist**2)),
        "mean_distance": float(np.mean(dist)),
    }


register(
    "loki",
    kind="diagnostic",
    family="diagnostics",
    papers=(47,),
    summary="Loki: Fréchet-mean prediction argmin_y sum_k p_k d(y, observed_k)^2 over the full "
    "label space, which can predict classes never observed.",
    function=loki_predict,
)
register(
    "expected_squared_distance",
    kind="metric",
    family="diagnostics",
    papers=(47,),
    summary="Mean squared label-metric distance between prediction and truth (Loki's metric).",
    function=expected_squared_distance,
)
