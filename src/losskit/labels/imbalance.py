"""Class imbalance: the exponential long-tail profile and head/medium/tail class groups.

The long-tail profile is paper 15's (``YyzHarry/imbalanced-semi-self``,
``get_img_num_per_cls``): class ``i`` keeps ``n_i = floor(n_max * rho^(-i / (C - 1)))``
samples, class 0 is the head and ``n_0 / n_{C-1} = rho`` up to the floor.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from losskit.labels.noise import check_class_labels

GROUPS = ("head", "medium", "tail")


def check_rho(rho: float) -> float:
    """An imbalance ratio: finite and at least 1 (1 is balanced)."""
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real):
        raise ValueError(f"rho must be a number >= 1, got {rho!r}")
    rho = float(rho)
    if not (math.isfinite(rho) and rho >= 1.0):
        raise ValueError(f"rho must be a finite number >= 1, got {rho}")
    return rho


def class_counts(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class, int64 ``[C]`` (single-label ``[n]`` or multi-label ``[n, C]``).

    For multi-label targets a class counts the samples where it is positive.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != num_classes:
            raise ValueError(f"y must have {num_classes} columns, got shape {y.shape}")
        return (y != 0).sum(axis=0).astype(np.int64)
    y = check_class_labels(y, num_classes)
    return np.bincount(y, minlength=num_classes).astype(np.int64)


def long_tail_counts(available: np.ndarray, rho: float) -> np.ndarray:
    """Per-class sample counts of the exponential profile, given what each class holds.

    ``n_max`` is the largest head size every class can afford:
    ``n_max = min_i floor(available_i * rho^(i / (C - 1)))``; for a balanced set this is the
    class size, as in paper 15. Then ``n_i = floor(n_max * rho^(-i / (C - 1)))``.
    Raises ``ValueError`` when a class would be left with no sample.
    """
    available = np.asarray(available)
    if available.ndim != 1 or available.size < 2:
        raise ValueError(f"available must be counts of shape [C], C >= 2, got {available.shape}")
    rho = check_rho(rho)
    c = available.size
    powers = rho ** (np.arange(c) / (c - 1))
    n_max = int(np.floor((available * powers).min()))
    counts = np.floor(n_max / powers + 1e-9).astype(np.int64)
    counts = np.minimum(counts, available.astype(np.int64))
    if counts.min() < 1:
        raise ValueError(
            f"rho={rho} leaves class {int(counts.argmin())} with no sample "
            f"(class sizes {available.tolist()}); use a smaller rho"
        )
    return counts


def long_tail_indices(
    y: np.ndarray, num_classes: int, rho: float, rng: np.random.Generator
) -> np.ndarray:
    """Sorted int64 indices of a long-tailed subsample of ``y`` (class 0 the head).

    Within each class the kept samples are drawn uniformly without replacement.
    """
    y = check_class_labels(y, num_classes)
    rho = check_rho(rho)
    targets = long_tail_counts(np.bincount(y, minlength=num_classes), rho)
    keep = []
    for k in range(num_classes):
        members = np.flatnonzero(y == k)
        keep.append(rng.choice(members, size=int(targets[k]), replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64)


def class_groups(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Head / medium / tail class ids from per-class training counts.

    Rule: classes are ranked by count, largest first (ties by smaller class id), and the
    ranking is cut into three contiguous groups as equal as possible, the extra classes going
    to the head first (``np.array_split``): 10 classes give 4 / 3 / 3, 50 give 17 / 17 / 16,
    6 give 2 / 2 / 2. Thirds of the ranking suit 10-50 classes, where the absolute
    many/medium/few thresholds of ImageNet-LT (>100, 20-100, <20 images) would leave groups
    empty (CIFAR-10 at rho=100 has no class under 50). Each group is a sorted int64 array.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be per-class counts of shape [C], got {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0):
        raise ValueError("counts must be non-negative numbers")
    order = np.lexsort((np.arange(counts.size), -counts.astype(np.float64)))
    parts = np.array_split(order, len(GROUPS))
    return {g: np.sort(p).astype(np.int64) for g, p in zip(GROUPS, parts, strict=True)}


def longtail_scenario(
    y: np.ndarray, num_classes: int, rng: np.random.Generator, *, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scenario step ``longtail:rho``: (kept indices into ``y``, their labels)."""
    index = long_tail_indices(y, num_classes, rho, rng)
    return index, np.asarray(y, dtype=np.int64)[index]


def check_fraction(fraction: float) -> float:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return float(fraction)


def subset_scenario(
    y: np.ndarray, num_classes: int, rng: np.random.Generator, *, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``subset:f``: a stratified random subsample keeping ``floor(f * n_c)`` (at least
    one) samples of every class ``c``, so the class profile is unchanged; indices sorted.
    Use it first to make a large set (CIFAR-10) affordable: ``subset:0.2+cifar10n:worst``."""
    f = check_fraction(fraction)
    y = check_class_labels(y, num_classes)
    keep = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        if members.size:
            take = max(1, math.floor(f * members.size))
            keep.append(rng.choice(members, size=take, replace=False))
    index = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return index.astype(np.int64), y[index]
