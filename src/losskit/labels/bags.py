"""Bags for learning from aggregate responses (paper 48): build them from a dataset and
aggregate the responses.

A bagging is an integer array ``bag_ids[n]`` with values ``0..m-1``, every bag non-empty.
Both constructions make ``m = n // bag_size`` bags of ``floor(n/m)`` or ``ceil(n/m)``
instances (the ``n - m * bag_size`` leftover instances join bags one at a time, so no bag is
smaller than ``bag_size``):

- :func:`random_bags`: a uniformly random partition, the setting of the paper's analysis;
- :func:`sorted_bags`: consecutive instances in the order of a score, so that bags are
  homogeneous in that score (for example a feature projection, which needs no response). This
  curated construction is not from paper 48; it shows how the instance-level bias shrinks when
  bags are homogeneous.

:func:`bag_responses` gives each bag's mean response ``ybar_b = 1/|B_b| sum_{i in B_b} y_i``,
the only label the learner sees, and :func:`bag_folds` splits bags into cross-validation folds.
"""

from __future__ import annotations

import numbers

import numpy as np

from losskit._core.registry import register


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _ids_in_order(order: np.ndarray, bag_size: int) -> np.ndarray:
    """Bag ids for instances taken in ``order``: consecutive runs of near-equal sizes."""
    n = order.size
    m = n // bag_size
    sizes = np.full(m, n // m)
    sizes[: n % m] += 1
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.repeat(np.arange(m), sizes)
    return ids


def _check_sizes(n: int, bag_size: int) -> tuple[int, int]:
    n = _count("n", n, 1)
    bag_size = _count("bag_size", bag_size, 1)
    if bag_size > n:
        raise ValueError(f"bag_size must be <= n = {n}, got {bag_size}")
    return n, bag_size


def random_bags(n: int, bag_size: int, *, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A uniformly random partition of ``n`` instances into ``n // bag_size`` bags (int64
    ``[n]``), each of ``floor(n/m)`` or ``ceil(n/m)`` instances."""
    n, bag_size = _check_sizes(n, bag_size)
    return _ids_in_order(np.random.default_rng(seed).permutation(n), bag_size)


def sorted_bags(scores: np.ndarray, bag_size: int) -> np.ndarray:
    """Bags of consecutive instances in the (stable) ascending order of ``scores[n]``."""
    scores = np.asarray(scores)
    if scores.ndim != 1 or not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"scores must be a real array of shape [n], got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite, got NaN or Inf values")
    _, bag_size = _check_sizes(scores.size, bag_size)
    return _ids_in_order(np.argsort(scores, kind="stable"), bag_size)


def check_bag_ids(bag_ids: np.ndarray, n: int | None = None) -> tuple[np.ndarray, int]:
    """``bag_ids`` as int64 ``[n]`` with values ``0..m-1``, every bag non-empty; and ``m``."""
    ids = np.asarray(bag_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"bag_ids must be a non-empty integer array [n], got {ids.shape}")
    if n is not None and ids.size != n:
        raise ValueError(f"bag_ids must have {n} entries to match the data, got {ids.size}")
    if ids.min() < 0:
        raise ValueError(f"bag_ids must be >= 0, got {ids.min()}")
    counts = np.bincount(ids)
    if (counts == 0).any():
        raise ValueError(
            f"bag_ids must cover 0..{counts.size - 1} without gaps: bag "
            f"{int(np.flatnonzero(counts == 0)[0])} is empty"
        )
    return ids.astype(np.int64, copy=False), counts.size


def bag_responses(y: np.ndarray, bag_ids: np.ndarray) -> np.ndarray:
    """Each bag's mean response ``ybar_b`` (float64 ``[m]``)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or not np.isfinite(y).all():
        raise ValueError(f"y must be a finite array of shape [n], got shape {y.shape}")
    ids, m = check_bag_ids(bag_ids, y.size)
    return np.bincount(ids, weights=y, minlength=m) / np.bincount(ids, minlength=m)


def bag_folds(num_bags: int, folds: int, *, seed: int | np.random.Generator = 0) -> np.ndarray:
    """A random fold ``0..folds-1`` for each bag (int64 ``[num_bags]``), folds of near-equal
    size; ``folds`` must be in ``[2, num_bags]``."""
    num_bags = _count("num_bags", num_bags, 2)
    folds = _count("folds", folds, 2)
    if folds > num_bags:
        raise ValueError(f"folds must be <= num_bags = {num_bags}, got {folds}")
    perm = np.random.default_rng(seed).permutation(num_bags)
    out = np.empty(num_bags, dtype=np.int64)
    out[perm] = np.arange(num_bags) % folds
    return out


register(
    "aggregate_random_bags",
    kind="scenario",
    family="aggregate",
    papers=(48,),
    summary="Random partition into n // k bags of at least k instances; only bag-mean "
    "responses are kept.",
    function=random_bags,
)
register(
    "aggregate_sorted_bags",
    kind="scenario",
    family="aggregate",
    summary="Homogeneous bags: consecutive instances in the order of a score (e.g. a feature "
    "projection), n // k bags of at least k.",
    function=sorted_bags,
)
