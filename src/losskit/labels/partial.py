"""Partial multi-label annotation: a fraction of the positive labels goes missing.

Papers 19 (COMIC: "40% of the positive labels removed") and 43 (PU-MLC: "hide 50% of the
positives") test this way: every positive label is, independently with probability
``rate``, turned into a 0, and a missing positive looks exactly like a negative.

By default (``mode="independent"``) a sample **can lose all of its positives**; the expected
fraction of dropped positives is then exactly ``rate``. ``mode="keep_one"`` gives back one
positive, drawn uniformly among its original ones, to every sample that would lose them all
(the "at least one known label per image" convention), so the achieved drop rate is a little
below ``rate``.
"""

from __future__ import annotations

import numpy as np

from losskit.labels.noise import check_num_classes, check_rate

PARTIAL_MODES = ("independent", "keep_one")


def check_multilabel(y: np.ndarray, num_classes: int, name: str = "y") -> np.ndarray:
    """Multi-label targets ``[n, C]`` with entries in {0, 1}, returned as int64."""
    num_classes = check_num_classes(num_classes, minimum=1)
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != num_classes:
        raise ValueError(
            f"{name} must be multi-label targets of shape [n, {num_classes}], got {y.shape}"
        )
    if not (y.dtype == bool or np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"{name} must hold integer 0/1 entries, got dtype {y.dtype}")
    if y.size and not ((y == 0) | (y == 1)).all():
        raise ValueError(f"{name} entries must be 0 or 1")
    return y.astype(np.int64, copy=False)


def drop_positives(
    y: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    mode: str = "independent",
) -> np.ndarray:
    """``y`` with each positive independently set to 0 with probability ``rate``.

    Negatives are never touched. See the module docstring for ``mode``.
    """
    y = check_multilabel(y, num_classes)
    rate = check_rate(rate)
    if mode not in PARTIAL_MODES:
        raise ValueError(f"mode must be one of {PARTIAL_MODES}, got {mode!r}")
    drop = (rng.random(y.shape) < rate) & (y == 1)
    out = np.where(drop, 0, y)
    if mode == "keep_one":
        emptied = np.flatnonzero((y.sum(axis=1) > 0) & (out.sum(axis=1) == 0))
        # a uniform score on each original positive, 0 elsewhere: argmax is a uniform positive
        scores = rng.random((emptied.size, y.shape[1])) * y[emptied]
        out[emptied, scores.argmax(axis=1)] = 1
    return out.astype(np.int64)


def partial_scenario(
    y: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    *,
    rate: float,
    mode: str = "independent",
) -> tuple[np.ndarray, np.ndarray]:
    """Scenario step ``partial:rate[:mode]``: (every index, ``drop_positives(...)``)."""
    return np.arange(len(y)), drop_positives(y, num_classes, rate, rng, mode=mode)
