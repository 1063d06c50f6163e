"""Find label issues with confident learning (paper 34): :func:`find_label_issues`.

From the confident joint ``C`` calibrated to the label counts
(:mod:`losskit.labels.confident_learning`), cleanlab's filters (``cleanlab.filter``):

- ``"prune_by_noise_rate"`` (default): the prune counts ``M = C_cal^T`` (with at least
  ``min_examples_per_class`` kept on each diagonal); among the examples labelled ``k``, flag
  for every ``j != k`` the ``M[j, k]`` with the largest margin ``p_ij - p_ik``;
- ``"prune_by_class"``: among the examples labelled ``k``, flag the ``n_k - M[k, k]`` with the
  lowest self-confidence ``p_ik``;
- ``"both"``: flagged by both of the above;
- ``"confident_learning"``: the examples counted off the diagonal of the confident joint;
- ``"predicted_neq_given"``: ``argmax_j p_ij != ỹ_i`` (the baseline).

Every filter then unflags the examples whose given label is (within ``1e-6``) the argmax of
their row. Ties in a selection go to the lower index. The result is a boolean mask ``[N]``,
or with ``return_indices_ranked_by`` the flagged indices sorted by a label-quality score
(:mod:`losskit.labels.quality_scores`), most likely errors first.

``low_memory=True`` runs the same algorithm over chunks of ``batch_size`` rows
(:mod:`losskit.labels.label_issues_batched`) and gives the same result; ``pred_probs`` may then
be anything sliceable by rows (a ``np.memmap``, a torch tensor). ``multi_label=True`` treats
each class one-vs-rest (binary labels ``[c in labels_i]``, probabilities ``(1 - p_ic, p_ic)``)
and flags an example when any of its classes is flagged; ranked output orders the union by
:func:`~losskit.labels.quality_scores.multilabel_quality_scores`. Multi-label inputs are held
in memory (the label matrix is ``[N, K]`` anyway); ``low_memory`` then chunks each class's
binary problem.

Differences from cleanlab 2.9: ties in a selection go to the lower index (cleanlab's unstable
sort breaks them arbitrarily; masks then agree up to the tied examples), the low-memory path
is exact (cleanlab's approximates another filter), and ``frac_noise``,
``num_to_remove_per_class`` and the ``low_*`` filters are not offered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register
from losskit.labels._issue_inputs import check_inputs
from losskit.labels.confident_learning import (
    SLACK,
    calibrate_counts,
    confident_guess,
    joint_counts,
    thresholds_of,
)
from losskit.labels.quality_scores import (
    METHODS,
    binary_problem,
    multilabel_quality_scores,
    scores_of,
)

FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
)


def prune_counts(calibrated_joint: np.ndarray, min_examples_per_class: int) -> np.ndarray:
    """``M = C_cal^T`` with every diagonal raised to ``min_examples_per_class``, the rise taken
    evenly from the non-zero off-diagonal entries of its column (floored at 0, truncated)."""
    m = np.asarray(calibrated_joint, dtype=np.float64).T.copy()
    diagonal = m.diagonal().copy()
    raised = np.maximum(diagonal, min_examples_per_class)
    per_column = np.maximum(np.count_nonzero(m, axis=0) - 1.0, 1.0)
    m = np.clip(m - (raised - diagonal) / per_column, 0.0, None)
    np.fill_diagonal(m, raised)
    return m.astype(np.int64)


def near_label(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Rows whose given label is the argmax once it gets ``+1e-6`` (never flagged)."""
    bumped = p.copy()
    bumped[np.arange(len(labels)), labels] += SLACK
    return bumped.argmax(axis=1) == labels


def top_by(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` largest ``values`` (ties: lower position first), unordered:
    the same set as the first ``count`` of a stable descending sort, found in O(n)."""
    if count >= len(values):
        return np.arange(len(values))
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    cut = -np.partition(-values, count - 1)[count - 1]
    above = np.flatnonzero(values > cut)
    return np.concatenate([above, np.flatnonzero(values == cut)[: count - len(above)]])


def _pruned(
    labels: np.ndarray, p: np.ndarray, prune: np.ndarray, by: str, floor: int
) -> np.ndarray:
    """The mask of ``prune_by_noise_rate`` (``by="noise_rate"``) or ``prune_by_class``."""
    mask = np.zeros(len(labels), dtype=bool)
    for k in range(p.shape[1]):
        rows = np.flatnonzero(labels == k)
        if len(rows) <= floor:
            continue
        sub = p[rows]
        if by == "class":
            take = len(rows) - prune[k, k]
            if take >= 1:
                mask[rows[top_by(-sub[:, k], take)]] = True
            continue
        for j in np.flatnonzero(prune[:, k]):
            if j != k:
                mask[rows[top_by(sub[:, j] - sub[:, k], prune[j, k])]] = True
    return mask


def multiclass_issues(labels: np.ndarray, p: np.ndarray, filter_by: str, floor: int) -> np.ndarray:
    """The issue mask of validated multi-class inputs held in memory."""
    k = p.shape[1]
    if filter_by == "predicted_neq_given":
        mask = p.argmax(axis=1) != labels
    elif filter_by == "confident_learning":
        confident, guess = confident_guess(p, thresholds_of(labels, p))
        mask = confident & (guess != labels)
    else:
        cj = joint_counts(labels, p, thresholds_of(labels, p))
        np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
        prune = prune_counts(calibrate_counts(cj, np.bincount(labels, minlength=k)), floor)
        by_rate = filter_by != "prune_by_class"
        mask = _pruned(labels, p, prune, "noise_rate" if by_rate else "class", floor)
        if filter_by == "both":
            mask &= _pruned(labels, p, prune, "class", floor)
    return mask & ~near_label(labels, p)


def ranked(mask: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Flagged indices sorted by increasing score (ties: lower index first)."""
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(scores[flagged], kind="stable")]


def _multilabel(y, p, filter_by, rank_by, low_memory, batch_size, floor) -> np.ndarray:
    from losskit.labels.label_issues_batched import batched_issues

    mask = np.zeros(len(y), dtype=bool)
    for c in range(p.shape[1]):
        yc, pc = binary_problem(y, p, c)
        if low_memory:
            mask |= batched_issues(yc, pc, filter_by, None, batch_size, floor)[0]
        else:
            mask |= multiclass_issues(yc, pc, filter_by, floor)
    if rank_by is None:
        return mask
    return ranked(mask, multilabel_quality_scores(y, p, method=rank_by))


def find_label_issues(
    labels: Any,
    pred_probs: Any,
    *,
    filter_by: str = "prune_by_noise_rate",
    return_indices_ranked_by: str | None = None,
    multi_label: bool = False,
    low_memory: bool = False,
    batch_size: int = 100_000,
    min_examples_per_class: int = 1,
) -> np.ndarray:
    """Examples whose given label is likely wrong, by confident learning (module docstring).

    Args:
        labels: int class ids ``[N]``; with ``multi_label``, a 0/1 matrix ``[N, K]`` or ``N``
            collections of class ids.
        pred_probs: out-of-sample predicted probabilities ``[N, K]`` (numpy or torch).
        filter_by: one of :data:`FILTERS`; cleanlab's default ``"prune_by_noise_rate"``.
        return_indices_ranked_by: ``None`` for a bool mask ``[N]``, or a score name of
            :data:`~losskit.labels.quality_scores.METHODS` for the flagged indices, lowest
            score (most likely error) first.
        multi_label: one-vs-rest per class; flagged when any class is.
        low_memory: process ``batch_size`` rows at a time (same result, memory O(N + issues)).
        min_examples_per_class: a class with at most this many labels is never pruned, and
            pruning leaves at least this many per class.
    """
    check_choice("filter_by", filter_by, FILTERS)
    if return_indices_ranked_by is not None:
        check_choice("return_indices_ranked_by", return_indices_ranked_by, METHODS)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    check_number("batch_size", batch_size, low=1)
    if isinstance(min_examples_per_class, bool) or not isinstance(min_examples_per_class, int):
        raise ValueError(
            f"min_examples_per_class must be an int >= 0, got {min_examples_per_class!r}"
        )
    check_number("min_examples_per_class", min_examples_per_class, low=0)
    floor = min_examples_per_class
    if low_memory and not multi_label:
        from losskit.labels.label_issues_batched import find_label_issues_batched

        return find_label_issues_batched(
            labels, pred_probs, filter_by=filter_by, rank_by=return_indices_ranked_by,
            batch_size=batch_size, min_examples_per_class=floor,
        )  # fmt: skip
    y, p = check_inputs(labels, pred_probs, multi_label=multi_label)
    if multi_label:
        return _multilabel(y, p, filter_by, return_indices_ranked_by, low_memory, batch_size, floor)
    mask = multiclass_issues(y, p, filter_by, floor)
    if return_indices_ranked_by is None:
        return mask
    return ranked(mask, scores_of(return_indices_ranked_by, y, p))


register(
    "find_label_issues",
    kind="diagnostic",
    family="labels",
    papers=(34,),
    summary="Confident learning: flag examples whose given label is likely wrong from "
    "out-of-sample predicted probabilities (mask or indices ranked by a quality score).",
    defaults={"filter_by": "prune_by_noise_rate", "min_examples_per_class": 1},
    function=find_label_issues,
)
