"""The low-memory path of :func:`~losskit.labels.label_issues.find_label_issues`.

The same algorithm over chunks of ``batch_size`` rows, never holding more than one chunk of
``pred_probs``; it gives exactly the in-memory result:

1. one pass sums the self-confidences per class (order-independent exact sums,
   :class:`~losskit.labels.confident_learning.ClassSums`), giving the thresholds;
2. a second pass counts the confident joint and keeps per row what the filters need (the
   near-label mask, the confident off-diagonal or argmax mask, the ranking score): O(N);
3. for the pruning filters, a third pass keeps for every (given ``k``, true ``j``) pair a
   running top-``M[j, k]`` of the margins ``p_ij - p_ik`` (and per class the lowest
   ``n_k - M[k, k]`` self-confidences), ties to the lower index as in memory: memory
   O(number of flagged examples).

cleanlab's own ``low_memory`` (``find_label_issues_batched``) approximates a different
filter (lowest self-confidence); this one does not approximate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from losskit.labels._issue_inputs import check_labels, check_prob_values, check_row_sums, to_numpy
from losskit.labels.confident_learning import (
    ClassSums,
    calibrate_counts,
    confident_guess,
    joint_counts,
    thresholds_from_sums,
)
from losskit.labels.label_issues import near_label, prune_counts, ranked, top_by
from losskit.labels.quality_scores import scores_of


def iter_chunks(
    pred_probs: Any, batch_size: int, *, validate: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` of ``pred_probs`` as float64 chunks of ``batch_size`` rows; with
    ``validate`` every chunk is checked (values in [0, 1], row sums)."""
    for start in range(0, len(pred_probs), batch_size):
        chunk = to_numpy(pred_probs[start : start + batch_size], "pred_probs")
        if chunk.dtype == bool or not np.issubdtype(chunk.dtype, np.number):
            raise ValueError(f"pred_probs must hold floating probabilities, got {chunk.dtype}")
        chunk = chunk.astype(np.float64)
        if validate:
            check_prob_values(chunk)
            check_row_sums(chunk, offset=start)
        yield start, chunk


class RunningTop:
    """The ``count`` largest values seen so far with their indices (ties: lower index)."""

    def __init__(self, count: int) -> None:
        self.count = int(count)
        self.values = np.empty(0)
        self.index = np.empty(0, dtype=np.int64)

    def push(self, values: np.ndarray, index: np.ndarray) -> None:
        v = np.concatenate([self.values, values])
        i = np.concatenate([self.index, index])
        if len(v) > self.count:
            order = np.argsort(i, kind="stable")  # index order, so ties go to the lower index
            keep = order[top_by(v[order], self.count)]
            v, i = v[keep], i[keep]
        self.values, self.index = v, i


def _pruned_pass(labels, pred_probs, prune, filter_by, batch_size, floor) -> np.ndarray:
    """Pass 3: the prune_by_noise_rate / prune_by_class / both mask."""
    k = prune.shape[0]
    counts = np.bincount(labels, minlength=k)
    active = counts > floor
    by_rate = {
        (j, c): RunningTop(prune[j, c])
        for c in np.flatnonzero(active)
        for j in np.flatnonzero(prune[:, c])
        if j != c
    }
    by_class = {c: RunningTop(counts[c] - prune[c, c]) for c in np.flatnonzero(active)}
    for start, p in iter_chunks(pred_probs, batch_size, validate=False):
        y = labels[start : start + len(p)]
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            if filter_by != "prune_by_noise_rate" and c in by_class:
                by_class[c].push(-p[rows, c], start + rows)
            for j in np.flatnonzero(prune[:, c]) if active[c] else ():
                if j != c:
                    by_rate[(j, c)].push(p[rows, j] - p[rows, c], start + rows)

    def union(tops) -> np.ndarray:
        mask = np.zeros(len(labels), dtype=bool)
        for top in tops:
            mask[top.index] = True
        return mask

    if filter_by == "prune_by_class":
        return union(by_class.values())
    mask = union(by_rate.values())
    return mask & union(by_class.values()) if filter_by == "both" else mask


def batched_issues(
    labels: np.ndarray,
    pred_probs: Any,
    filter_by: str,
    rank_by: str | None,
    batch_size: int,
    floor: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The issue mask and, with ``rank_by``, every row's score, in chunks (module docstring).
    ``labels`` are validated int ids; chunks of ``pred_probs`` are validated as they come."""
    n, k = len(labels), pred_probs.shape[1]
    sums = ClassSums(k)
    for start, p in iter_chunks(pred_probs, batch_size):
        y = labels[start : start + len(p)]
        sums.add(y, p[np.arange(len(y)), y])
    thresholds = thresholds_from_sums(sums)
    cj = np.zeros((k, k), dtype=np.int64)
    keep = np.zeros(n, dtype=bool)
    base = np.zeros(n, dtype=bool)
    scores = np.zeros(n) if rank_by else None
    for start, p in iter_chunks(pred_probs, batch_size, validate=False):
        stop = start + len(p)
        y = labels[start:stop]
        cj += joint_counts(y, p, thresholds)
        keep[start:stop] = ~near_label(y, p)
        if filter_by == "confident_learning":
            confident, guess = confident_guess(p, thresholds)
            base[start:stop] = confident & (guess != y)
        elif filter_by == "predicted_neq_given":
            base[start:stop] = p.argmax(axis=1) != y
        if scores is not None:
            scores[start:stop] = scores_of(rank_by, y, p)
    if filter_by not in ("confident_learning", "predicted_neq_given"):
        np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
        prune = prune_counts(calibrate_counts(cj, np.bincount(labels, minlength=k)), floor)
        base = _pruned_pass(labels, pred_probs, prune, filter_by, batch_size, floor)
    return base & keep, scores


def find_label_issues_batched(
    labels: Any,
    pred_probs: Any,
    *,
    filter_by: str,
    rank_by: str | None,
    batch_size: int,
    min_examples_per_class: int,
) -> np.ndarray:
    """Multi-class :func:`~losskit.labels.label_issues.find_label_issues` with
    ``low_memory=True`` (arguments checked there); ``pred_probs`` is sliced by rows."""
    shape = getattr(pred_probs, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"with low_memory, pred_probs must be a [N, K] array sliceable by rows (numpy, "
            f"memmap, torch), got {type(pred_probs).__name__} of shape {shape}"
        )
    n, k = int(shape[0]), int(shape[1])
    if n == 0:
        raise ValueError("pred_probs is empty (no examples)")
    if k < 2:
        raise ValueError(f"pred_probs must have at least 2 classes, got shape {tuple(shape)}")
    y = check_labels(to_numpy(labels, "labels"), n, k)
    mask, scores = batched_issues(
        y, pred_probs, filter_by, rank_by, batch_size, min_examples_per_class
    )
    return mask if scores is None else ranked(mask, scores)
