"""Label-quality scores (paper 34): per example, how likely its given label is correct.

Scores lie in ``[0, 1]``; lower means more likely mislabelled. With predicted probabilities
``p_i`` (out-of-sample, rows summing to one) and given label ``ỹ_i`` (cleanlab's
``cleanlab.rank`` definitions):

- **self-confidence** ``p_iỹ``;
- **normalized margin** ``(p_iỹ - max_{j≠ỹ} p_ij + 1) / 2``; paper 34 ranks its flagged
  candidates by the raw margin ``p_iỹ - max_{j≠ỹ} p_ij``, which orders examples the same way;
- **confidence-weighted entropy**: with the normalised entropy ``H_i = -sum_j p_ij log p_ij /
  log K`` and ``s_i = H_i / p_iỹ``, the score ``log(1 + s_i) / s_i``, which falls from 1 (its
  limit at ``s_i = 0``: a certain, agreeing prediction) to 0 (``s_i = inf``: ``p_iỹ = 0``).
  cleanlab clips ``p_iỹ`` and ``s_i`` below at ``1e-6``, which sends every near-certain
  prediction (``s_i < 1e-6``, e.g. a saturated softmax) to a score near 0, the worst, whether
  it agrees with the label or not; the two agree wherever ``p_iỹ >= 1e-6`` and
  ``s_i >= 1e-6``.

``adjust_pred_probs=True`` first subtracts the per-class confident thresholds
(:func:`~losskit.labels.confident_learning.confident_thresholds`), shifts by their maximum and
renormalises the rows, which corrects for classes the model is more or less confident in.

Multi-label data are scored one-vs-rest: class ``c`` gives a binary problem with labels
``[c in labels_i]`` and probabilities ``(1 - p_ic, p_ic)``; the ``K`` per-class scores of an
example, sorted in decreasing order ``s_(1) >= ... >= s_(K)``, are aggregated by the
exponential moving average ``e_1 = s_(1)``, ``e_k = alpha s_(k) + (1 - alpha) e_{k-1}``
(``alpha = 0.8``), which weights the worst classes most.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register
from losskit.labels._issue_inputs import check_inputs
from losskit.labels.confident_learning import thresholds_of

METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


def self_confidence(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``p_iỹ`` for validated int labels ``[N]`` and probabilities ``[N, K]``."""
    return pred_probs[np.arange(len(labels)), labels]


def normalized_margin(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``(p_iỹ - max_{j≠ỹ} p_ij + 1) / 2`` for validated inputs."""
    own = self_confidence(labels, pred_probs)
    others = pred_probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return (own - others.max(axis=1) + 1.0) / 2.0


def confidence_weighted_entropy(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``log(1 + s) / s`` with ``s = H_norm(p) / p_iỹ`` (1 at ``s = 0``, 0 at ``s = inf``)."""
    k = pred_probs.shape[1]
    safe = np.where(pred_probs > 0, pred_probs, 1.0)
    entropy = np.maximum(-np.sum(pred_probs * np.log(safe), axis=1) / np.log(k), 0.0)
    own = self_confidence(labels, pred_probs)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = np.where(own > 0, entropy / np.where(own > 0, own, 1.0), np.inf)
        score = np.log1p(s) / s
    return np.where(s == 0, 1.0, np.where(np.isfinite(s), score, 0.0))


_SCORES = {
    "self_confidence": self_confidence,
    "normalized_margin": normalized_margin,
    "confidence_weighted_entropy": confidence_weighted_entropy,
}


def scores_of(method: str, labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """The score ``method`` on validated inputs (no copy of the checks)."""
    return _SCORES[method](labels, pred_probs)


def adjust_by_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``p_ij - t_j + max_j t_j``, rows renormalised (``t``: the confident thresholds)."""
    t = thresholds_of(labels, pred_probs)
    adjusted = pred_probs - t + t.max()
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def label_quality_scores(
    labels: Any,
    pred_probs: Any,
    *,
    method: str = "self_confidence",
    adjust_pred_probs: bool = False,
) -> np.ndarray:
    """One score per example in ``[0, 1]``, lower = label more likely wrong (float64 ``[N]``).

    ``method`` is ``"self_confidence"`` (default), ``"normalized_margin"`` or
    ``"confidence_weighted_entropy"``; see the module docstring for the formulas.
    """
    check_choice("method", method, METHODS)
    y, p = check_inputs(labels, pred_probs)
    if adjust_pred_probs:
        if method == "confidence_weighted_entropy":
            raise ValueError("adjust_pred_probs is not defined for confidence_weighted_entropy")
        p = adjust_by_thresholds(y, p)
    return scores_of(method, y, p)


def exponential_moving_average(scores: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """EMA over each row's scores sorted in decreasing order (the last, lowest, weigh most)."""
    ordered = -np.sort(-scores, axis=1)
    ema = ordered[:, 0]
    for column in ordered[:, 1:].T:
        ema = alpha * column + (1.0 - alpha) * ema
    return ema


def binary_problem(
    labels: np.ndarray, pred_probs: np.ndarray, c: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class ``c`` of multi-label data as a binary problem: labels ``[N]`` and ``(1-p, p)``."""
    p = pred_probs[:, c]
    return labels[:, c].astype(np.int64), np.stack([1.0 - p, p], axis=1)


def multilabel_quality_scores(
    labels: Any,
    pred_probs: Any,
    *,
    method: str = "self_confidence",
    alpha: float = 0.8,
) -> np.ndarray:
    """One score per example of multi-label data (float64 ``[N]``): the per-class one-vs-rest
    scores aggregated by an exponential moving average (module docstring).

    ``labels``: a 0/1 indicator matrix ``[N, K]`` or ``N`` collections of class ids;
    ``pred_probs[N, K]``: independent per-class probabilities.
    """
    check_choice("method", method, METHODS)
    check_number("alpha", alpha, low=0.0, high=1.0)
    y, p = check_inputs(labels, pred_probs, multi_label=True)
    per_class = np.stack(
        [scores_of(method, *binary_problem(y, p, c)) for c in range(p.shape[1])], axis=1
    )
    return exponential_moving_average(per_class, alpha)


register(
    "label_quality_scores",
    kind="metric",
    family="labels",
    papers=(34,),
    summary="Per-example label-quality score from predicted probabilities: self-confidence, "
    "normalized margin or confidence-weighted entropy (lower = more likely mislabelled).",
    defaults={"method": "self_confidence", "adjust_pred_probs": False},
    function=label_quality_scores,
)
