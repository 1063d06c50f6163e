"""Test-set metrics of one arena trial: accuracy, macro-F1, balanced accuracy, ECE,
per-class accuracy and head/medium/tail accuracy.

All functions take NumPy integer labels ``y_true[N]`` and predictions ``y_pred[N]`` (or logits
``[N, C]`` for :func:`classification_metrics`) and return plain Python floats (or lists / dicts
of them) so results go straight into JSON. Conventions:

- **macro-F1** averages the per-class F1 ``2 TP / (2 TP + FP + FN)`` over the classes that
  occur in ``y_true`` or ``y_pred`` (scikit-learn's ``f1_score(average="macro")``).
- **balanced accuracy** averages the per-class recall over the classes present in ``y_true``.
- **per-class accuracy** is the recall of each of the ``num_classes`` classes, ``None`` for a
  class without test samples.
- **group accuracy** (long tails) is the accuracy over the test samples whose true class lies in
  the group ``"head"``, ``"medium"`` or ``"tail"`` (``None`` for an empty group).
- **ECE** is the top-label expected calibration error with 15 equal-width bins, computed by
  :mod:`losskit.diagnostics.calibration`; the reliability bins behind it (edges, per-bin mean
  confidence, accuracy and count) are returned for plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from losskit._core.registry import register
from losskit.diagnostics.calibration import expected_calibration_error, reliability_bins

ECE_BINS = 15
GROUPS = ("head", "medium", "tail")


def _labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_pred must have the shape of y_true {t.shape}, got {p.shape}")
    if t.size == 0:
        raise ValueError("y_true is empty")
    return t, p


def _confusion_counts(
    t: np.ndarray, p: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, support (true count) and predicted count per class."""
    c = max(int(num_classes), int(t.max()) + 1, int(p.max()) + 1)
    tp = np.bincount(t[t == p], minlength=c)
    return tp, np.bincount(t, minlength=c), np.bincount(p, minlength=c)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches."""
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 0) -> float:
    """Unweighted mean of per-class F1 over classes seen in ``y_true`` or ``y_pred``."""
    t, p = _labels(y_true, y_pred)
    tp, support, predicted = _confusion_counts(t, p, num_classes)
    seen = (support + predicted) > 0
    f1 = 2.0 * tp[seen] / (support[seen] + predicted[seen])
    return float(f1.mean())


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 0) -> float:
    """Unweighted mean of per-class recall over classes present in ``y_true``."""
    t, p = _labels(y_true, y_pred)
    tp, support, _ = _confusion_counts(t, p, num_classes)
    present = support > 0
    return float(np.mean(tp[present] / support[present]))


def per_class_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> list[float | None]:
    """Recall of each class ``0..num_classes-1``; ``None`` where the class has no samples."""
    t, p = _labels(y_true, y_pred)
    tp, support, _ = _confusion_counts(t, p, num_classes)
    return [float(tp[k] / support[k]) if support[k] > 0 else None for k in range(int(num_classes))]


def group_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, groups: Mapping[str, np.ndarray]
) -> dict[str, float | None]:
    """Accuracy over the samples whose true class is in each group (``None`` if none are)."""
    t, p = _labels(y_true, y_pred)
    out: dict[str, float | None] = {}
    for name, classes in groups.items():
        mask = np.isin(t, np.asarray(classes, dtype=np.int64))
        out[name] = float(np.mean(t[mask] == p[mask])) if mask.any() else None
    return out


def calibration(logits: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Top-label ECE and its reliability bins; an empty bin has count 0 and confidence and
    accuracy 0.0 (not NaN, which JSON cannot hold), so count-weighted sums stay valid."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(y_true, dtype=np.int64))
    ece = expected_calibration_error(z, y, n_bins=n_bins, from_logits=True)
    bins = reliability_bins(z, y, n_bins=n_bins, from_logits=True)

    def plain(values: torch.Tensor) -> list[float]:
        return [0.0 if np.isnan(v) else float(v) for v in values.tolist()]

    return {
        "ece": float(ece),
        "reliability": {
            "edges": [float(e) for e in bins.edges.tolist()],
            "confidence": plain(bins.confidence),
            "accuracy": plain(bins.accuracy),
            "count": [int(c) for c in bins.count.tolist()],
        },
    }


def classification_metrics(
    logits: np.ndarray,
    y_true: np.ndarray,
    num_classes: int,
    groups: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every metric of a multiclass trial from test logits ``[N, C]`` and true labels.

    Returns ``{"metrics": {accuracy, macro_f1, balanced_accuracy, ece[, head_accuracy,
    medium_accuracy, tail_accuracy]}, "per_class_accuracy": [...], "reliability": {...}}``.
    Non-finite logits (a diverged model) are replaced by finite values first so that the
    model is scored, not skipped.
    """
    z = np.nan_to_num(np.asarray(logits, dtype=np.float64), nan=0.0, posinf=1e4, neginf=-1e4)
    if z.ndim != 2 or z.shape[1] != num_classes:
        raise ValueError(f"logits must have shape [N, {num_classes}], got {z.shape}")
    pred = z.argmax(axis=1)
    cal = calibration(z, y_true)
    metrics: dict[str, float | None] = {
        "accuracy": accuracy(y_true, pred),
        "macro_f1": macro_f1(y_true, pred, num_classes),
        "balanced_accuracy": balanced_accuracy(y_true, pred, num_classes),
        "ece": cal["ece"],
    }
    if groups is not None:
        for name, value in group_accuracy(y_true, pred, groups).items():
            metrics[f"{name}_accuracy"] = value
    return {
        "metrics": metrics,
        "per_class_accuracy": per_class_accuracy(y_true, pred, num_classes),
        "reliability": cal["reliability"],
    }


_ARGS = "integer labels and predictions (NumPy)"
register(
    "accuracy",
    kind="metric",
    family="arena",
    summary=f"Fraction of correct predictions; {_ARGS}.",
    function=accuracy,
)
register(
    "macro_f1",
    kind="metric",
    family="arena",
    summary=f"Unweighted mean of per-class F1 over seen classes; {_ARGS}.",
    function=macro_f1,
)
register(
    "balanced_accuracy",
    kind="metric",
    family="arena",
    summary=f"Unweighted mean of per-class recall; {_ARGS}.",
    function=balanced_accuracy,
)
register(
    "group_accuracy",
    kind="metric",
    family="arena",
    summary="Head / medium / tail accuracy of a long-tailed task, given the class groups.",
    function=group_accuracy,
)
