"""Memorization and influence estimated by subsampling (paper 39).

Feldman (paper 39) defines how much a learning algorithm ``A`` memorizes training example
``i`` of ``S`` as

    mem(A, S, i) = P_{h ~ A(S)}[h(x_i) = y_i] - P_{h ~ A(S \\ i)}[h(x_i) = y_i],

and the influence of training example ``i`` on a test example ``(x'_j, y'_j)`` as the same
difference measured on ``x'_j``. Feldman & Zhang (2020) estimate both at once from ``m``
models, each trained on a random subset of ``round(fraction * n)`` training examples
(``fraction = 0.7`` and 2,000 runs in their code), by conditioning on membership:

    mem(i)     = mean_{k: i in S_k} c_k(i)  - mean_{k: i not in S_k} c_k(i)
    infl(i, j) = mean_{k: i in S_k} c'_k(j) - mean_{k: i not in S_k} c'_k(j)

where ``c_k(i) = 1[h_k(x_i) = y_i]`` is the correctness of model ``k`` on training example
``i`` and ``c'_k(j)`` that on test example ``j``. This estimates the memorization of the
algorithm on random subsets of size ``fraction * n`` rather than on ``S`` itself (the price of
reusing every model for every example).

Inputs (numpy, computed in float64):

- ``membership[m, n_train]``: boolean, ``membership[k, i]`` is whether model ``k`` saw ``i``;
- ``correct[m, n_train]`` / ``correct_test[m, n_test]``: booleans, or numbers in ``[0, 1]``
  (e.g. the probability a model gives the true label, for a smoother estimate).

An example that every model saw (``n_out = 0``) or none saw (``n_in = 0``) has no estimate:
its score is NaN (the reference code divides by ``max(count, 1e-10)`` and so reports the
other side's accuracy, with the sign, as if it were a memorization score). The counts come
back with the estimates.

:func:`subsample_models` is the driver: it draws the subsets, trains any model through
``train_fn`` and records the predictions of every model on the training and test sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from losskit._core.checks import check_number
from losskit._core.registry import register

FRACTION = 0.7  # Feldman & Zhang's subset ratio


@dataclass(frozen=True)
class MemorizationEstimate:
    """Per training example [n]: ``score = acc_in - acc_out`` (NaN where ``n_in`` or
    ``n_out`` is 0), the mean correctness of the models that saw it (``acc_in``) and of
    those that did not (``acc_out``; NaN without any such model), and the model counts."""

    score: np.ndarray
    acc_in: np.ndarray
    acc_out: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray


@dataclass(frozen=True)
class InfluenceEstimate:
    """``score[i, j]``: influence of training example ``i`` on test example ``j``
    ([n_train, n_test], NaN in the rows where ``n_in`` or ``n_out`` is 0); the counts
    ``n_in`` / ``n_out`` [n_train] of models with and without ``i`` are those of every
    cell of row ``i``."""

    score: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray


@dataclass(frozen=True)
class SubsampleRuns:
    """What :func:`subsample_models` records: ``membership[m, n_train]``, the predictions
    ``train_pred[m, n_train]`` / ``test_pred[m, n_test]`` and their correctness
    ``train_correct`` / ``test_correct`` (booleans). The test fields are None without a
    test set."""

    membership: np.ndarray
    train_pred: np.ndarray
    train_correct: np.ndarray
    test_pred: np.ndarray | None = None
    test_correct: np.ndarray | None = None


def _membership(membership: object) -> np.ndarray:
    m = np.asarray(membership)
    if m.dtype != np.bool_:
        raise ValueError(f"membership must be a boolean array, got dtype {m.dtype}")
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"membership must have shape [models, n_train] (non-empty), got {m.shape}")
    return m


def _correctness(name: str, correct: object, models: int, n: int | None) -> np.ndarray:
    c = np.asarray(correct)
    if c.dtype == np.bool_:
        c = c.astype(np.float64)
    elif np.issubdtype(c.dtype, np.number) and not np.iscomplexobj(c):
        c = c.astype(np.float64)
        if not np.isfinite(c).all() or (c < 0).any() or (c > 1).any():
            raise ValueError(f"{name} must hold booleans or finite numbers in [0, 1]")
    else:
        raise ValueError(f"{name} must be a boolean or numeric array, got dtype {c.dtype}")
    want = f"[{models}, {'n' if n is None else n}]"
    if c.ndim != 2 or c.shape[0] != models or (n is not None and c.shape[1] != n):
        raise ValueError(f"{name} must have shape {want} like membership, got {c.shape}")
    return c


def _ratio(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def memorization_estimate(membership: object, correct: object) -> MemorizationEstimate:
    """Subsampling estimate of ``mem(i)`` for every training example (paper 39).

    ``membership[m, n]`` (bool) says which examples model ``k`` was trained on and
    ``correct[m, n]`` whether it gets them right (bool or numbers in [0, 1]);
    ``mem(i) = mean_{k: i in S_k} c_k(i) - mean_{k: i not in S_k} c_k(i)``."""
    mask = _membership(membership)
    c = _correctness("correct", correct, *mask.shape)
    inside = mask.astype(np.float64)
    n_in = mask.sum(axis=0)
    n_out = mask.shape[0] - n_in
    sum_in = (c * inside).sum(axis=0)
    acc_in, acc_out = _ratio(sum_in, n_in), _ratio(c.sum(axis=0) - sum_in, n_out)
    return MemorizationEstimate(acc_in - acc_out, acc_in, acc_out, n_in, n_out)


def influence_estimate(membership: object, correct_test: object) -> InfluenceEstimate:
    """Subsampling estimate of ``infl(i, j)`` of every training example ``i`` on every
    test example ``j`` (paper 39), shape [n_train, n_test].

    ``correct_test[m, n_test]``: whether model ``k`` gets test example ``j`` right;
    ``infl(i, j) = mean_{k: i in S_k} c'_k(j) - mean_{k: i not in S_k} c'_k(j)``. With the
    training set as the test set, the diagonal is :func:`memorization_estimate`."""
    mask = _membership(membership)
    c = _correctness("correct_test", correct_test, mask.shape[0], None)
    n_in = mask.sum(axis=0)
    n_out = mask.shape[0] - n_in
    sum_in = mask.T.astype(np.float64) @ c
    sum_out = c.sum(axis=0)[None, :] - sum_in
    score = _ratio(sum_in, n_in[:, None]) - _ratio(sum_out, n_out[:, None])
    return InfluenceEstimate(score, n_in, n_out)


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def subset_membership(num_models: int, n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean [num_models, n]: every row marks ``round(fraction * n)`` examples drawn
    without replacement (``fraction`` in (0, 1); the subset must leave at least one example
    in and one out)."""
    num_models = _int_at_least("num_models", num_models, 1)
    n = _int_at_least("n", n, 2)
    fraction = check_number("fraction", fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    size = int(round(fraction * n))
    if not 0 < size < n:
        raise ValueError(f"fraction={fraction} of n={n} gives a subset of {size}; need 1..{n - 1}")
    rng = np.random.default_rng(seed)
    out = np.zeros((num_models, n), dtype=bool)
    for row in out:
        row[rng.choice(n, size=size, replace=False)] = True
    return out


def _predict(predict_fn: Callable[..., Any], model: Any, x: Any, n: int, what: str) -> np.ndarray:
    pred = np.asarray(predict_fn(model, x))
    if pred.shape != (n,):
        raise ValueError(
            f"predict_fn must return one label per row: shape ({n},) on {what}, got {pred.shape}"
        )
    return pred


def subsample_models(
    train_fn: Callable[[Any, np.ndarray, int], Any],
    predict_fn: Callable[[Any, Any], Any],
    X: Any,
    y: object,
    X_test: Any = None,
    y_test: object = None,
    *,
    num_models: int,
    fraction: float = FRACTION,
    seed: int = 0,
    progress: bool = False,
) -> SubsampleRuns:
    """Train ``num_models`` models on random subsets and record their predictions.

    Model ``k`` is ``train_fn(X[S_k], y[S_k], seed_k)`` with ``S_k`` from
    :func:`subset_membership` (sorted indices) and ``seed_k`` an int drawn from ``seed``;
    ``predict_fn(model, X)`` must return one label per row. ``X`` / ``X_test`` are anything
    indexed by rows (features, or row ids into a precomputed kernel); ``y`` / ``y_test``
    are label arrays. Feed the result to :func:`memorization_estimate`
    (``membership``, ``train_correct``) and :func:`influence_estimate` (``membership``,
    ``test_correct``)."""
    labels = np.asarray(y)
    n = len(labels)
    if labels.ndim != 1 or len(X) != n:
        raise ValueError(
            f"X and y must have the same number of rows, got {len(X)} and {labels.shape}"
        )
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together")
    labels_test = None if y_test is None else np.asarray(y_test)
    if labels_test is not None and (labels_test.ndim != 1 or len(X_test) != len(labels_test)):
        raise ValueError(
            f"X_test and y_test must have the same number of rows, got {len(X_test)} and "
            f"{labels_test.shape}"
        )
    membership = subset_membership(num_models, n, fraction, seed)
    seeds = np.random.default_rng([seed, 1]).integers(0, 2**31 - 1, size=num_models)
    train_pred, test_pred = [], []
    rows = range(num_models)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="subsampled models", unit="model")
    for k in rows:
        idx = np.flatnonzero(membership[k])
        model = train_fn(X[idx], labels[idx], int(seeds[k]))
        train_pred.append(_predict(predict_fn, model, X, n, "X"))
        if labels_test is not None:
            test_pred.append(_predict(predict_fn, model, X_test, len(labels_test), "X_test"))
    tr = np.stack(train_pred)
    te = np.stack(test_pred) if labels_test is not None else None
    return SubsampleRuns(
        membership, tr, tr == labels, te, None if te is None else te == labels_test
    )


_SUMMARY = "by subsampling: accuracy of the models trained with i minus those without i"
register(
    "subsampled_memorization",
    kind="diagnostic",
    family="diagnostics",
    papers=(39,),
    summary=f"Memorization score of every training example {_SUMMARY}.",
    defaults={"fraction": FRACTION},
    function=memorization_estimate,
)
register(
    "subsampled_influence",
    kind="diagnostic",
    family="diagnostics",
    papers=(39,),
    summary=f"Influence of every training example on every test example {_SUMMARY}.",
    defaults={"fraction": FRACTION},
    function=influence_estimate,
)
