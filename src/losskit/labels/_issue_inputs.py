"""Validation shared by the label-issue tools (confident learning, quality scores).

Inputs are numpy arrays or torch tensors (detached and moved to the CPU). Every check raises
``ValueError`` naming the argument, what was expected and what came.

- ``pred_probs[N, K]``: finite, in ``[0, 1]``, ``K >= 2``; for multi-class data every row
  sums to one within :data:`PROB_SUM_ATOL` (probabilities are not renormalised); for
  multi-label data the columns are independent per-class probabilities.
- ``labels``: multi-class, integer ids ``[N]`` in ``[0, K)``; multi-label, a 0/1 (or bool)
  indicator matrix ``[N, K]`` or a sequence of ``N`` collections of class ids.

A class that never occurs in ``labels`` is allowed: its confident threshold is 2 (above any
probability), so no example is counted as truly belonging to it (cleanlab's convention).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

PROB_SUM_ATOL = 1e-3
"""Largest accepted ``|sum_k p_ik - 1|`` of a multi-class probability row."""


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and copied to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}") from None


def check_probs(pred_probs: Any, *, multi_label: bool = False) -> np.ndarray:
    """Validated ``pred_probs`` as float64 ``[N, K]``."""
    p = to_numpy(pred_probs, "pred_probs")
    if p.ndim != 2:
        raise ValueError(f"pred_probs must have shape [N, K], got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("pred_probs is empty (no examples)")
    if p.shape[1] < 2 and not multi_label:
        raise ValueError(f"pred_probs must have at least 2 classes, got shape {p.shape}")
    if p.dtype == bool or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"pred_probs must hold floating probabilities, got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    check_prob_values(p)
    if not multi_label:
        check_row_sums(p)
    return p


def check_prob_values(p: np.ndarray, name: str = "pred_probs") -> None:
    """Finite values in ``[0, 1]``."""
    if not np.isfinite(p).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"{name} must lie in [0, 1] (probabilities, not logits), got values in "
            f"[{p.min():.4g}, {p.max():.4g}]"
        )


def check_row_sums(p: np.ndarray, offset: int = 0) -> None:
    """Every row sums to one within :data:`PROB_SUM_ATOL` (``offset``: row of ``p[0]``)."""
    err = np.abs(p.sum(axis=1) - 1.0)
    bad = np.flatnonzero(err > PROB_SUM_ATOL)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"pred_probs rows must sum to 1 (within {PROB_SUM_ATOL}); row {offset + i} sums "
            f"to {p[i].sum():.6g} ({bad.size} bad rows)"
        )


def check_labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    """Validated multi-class labels as int64 ``[n]`` in ``[0, num_classes)``."""
    y = to_numpy(labels, "labels")
    if y.ndim != 1:
        raise ValueError(f"labels must be class ids of shape [N], got shape {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must hold integer class ids, got dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(
            f"labels has {y.shape[0]} entries but pred_probs has {n} rows; they must match"
        )
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise ValueError(
            f"labels holds class id {int(bad)}, outside [0, {num_classes}) "
            f"(pred_probs has {num_classes} columns)"
        )
    return y.astype(np.int64, copy=False)


def check_multilabels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    """Validated multi-label labels as a bool indicator matrix ``[n, num_classes]``."""
    if isinstance(labels, np.ndarray) or hasattr(labels, "detach"):
        y = to_numpy(labels, "labels")
        if y.ndim != 2 or y.shape != (n, num_classes):
            raise ValueError(
                f"multi-label labels as a matrix must have shape {(n, num_classes)} like "
                f"pred_probs, got {y.shape}"
            )
        if not np.isin(y, (0, 1)).all():
            raise ValueError("multi-label labels as a matrix must hold only 0 and 1")
        return y.astype(bool)
    rows = list(labels)
    if len(rows) != n:
        raise ValueError(f"labels has {len(rows)} entries but pred_probs has {n} rows")
    out = np.zeros((n, num_classes), dtype=bool)
    for i, row in enumerate(rows):
        ids = list(row) if isinstance(row, Iterable) else [row]
        for c in ids:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise ValueError(f"labels[{i}] holds {c!r}; class ids must be integers")
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"labels[{i}] holds class id {c}, outside [0, {num_classes})")
            out[i, int(c)] = True
    return out


def check_inputs(
    labels: Any, pred_probs: Any, *, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(labels, pred_probs)`` (see the module docstring for the formats)."""
    p = check_probs(pred_probs, multi_label=multi_label)
    n, k = p.shape
    y = check_multilabels(labels, n, k) if multi_label else check_labels(labels, n, k)
    return y, p
