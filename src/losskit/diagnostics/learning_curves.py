"""Learning curves of two linear-evaluation heads on frozen features (paper 13).

Naive Bayes (generative, :class:`~losskit.diagnostics.generative_linear.GaussianNaiveBayes`)
against multiclass logistic regression (discriminative, :func:`logistic_probe`): test error
against the number of training samples per class, over seeds. The paper's theory: naive
Bayes approaches its asymptotic error with ``O(log D)`` samples, logistic regression with
``O(D)`` (``D`` the feature dimension), while logistic regression's asymptotic error is no
worse.

Protocol (the paper's code, ``main_train_offline.py --minmax``):

- per seed, every class's training indices are shuffled once; the training set for ``n``
  samples per class is the first ``min(n, n_k)`` of each class ``k`` (so the sets are nested
  along the curve, and a class smaller than ``n`` contributes all it has);
- ``scale="minmax"`` maps each feature to ``[0, 1]`` with the minimum and maximum of that
  training subset (a constant feature gets range 1) and applies the same map to the test
  set; ``scale=None`` leaves the features as they are (the paper's simulation);
- logistic regression: scikit-learn's ``LogisticRegression`` (multinomial, L2 penalty,
  ``C = 1``, L-BFGS, ``max_iter = 1000``); naive Bayes: shared variance, ``var_floor = 1e-9``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register
from losskit.diagnostics.generative_linear import (
    VAR_FLOOR,
    GaussianNaiveBayes,
    check_features,
    check_labels,
)

HEADS = ("naive_bayes", "logistic")
SCALES = ("minmax", None)


def logistic_probe(x: object, y: object, *, C: float = 1.0, max_iter: int = 1000) -> Any:
    """A fitted scikit-learn ``LogisticRegression`` (multinomial softmax, L2 penalty with
    inverse strength ``C``, L-BFGS, at most ``max_iter`` iterations; the paper's settings).
    ``y`` needs at least two classes."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    C = check_number("C", C, low=0.0, low_open=True)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    xs = check_features(x)
    ys = np.asarray(y)
    if ys.shape != (len(xs),) or not np.issubdtype(ys.dtype, np.integer):
        raise ValueError(f"y must be integer class indices of shape ({len(xs)},), got {ys.shape}")
    if len(np.unique(ys)) < 2:
        raise ValueError("y must hold at least two classes")
    model = LogisticRegression(C=C, solver="lbfgs", max_iter=int(max_iter))
    with warnings.catch_warnings():  # an unconverged fit is still the paper's protocol
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(xs, ys)


def minmax_scale(x_fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``(x - min) / (max - min)`` per feature, with min and max taken on ``x_fit`` (range 1
    where a feature is constant), applied to ``x_fit`` and to each of ``others``."""
    lo = x_fit.min(axis=0)
    span = x_fit.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    return [(a - lo) / span for a in (x_fit, *others)]


def class_orders(y: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One random permutation of the indices of each class (the nested draws' order)."""
    return [rng.permutation(np.flatnonzero(y == k)) for k in range(num_classes)]


@dataclass(frozen=True)
class LearningCurves:
    """Test errors ``errors[head]`` float64 ``[len(seeds), len(sizes)]`` at ``sizes``
    samples per class; ``train_sizes[i]`` is the training-set size at ``sizes[i]`` (smaller
    than ``sizes[i] * K`` where a class has fewer samples)."""

    sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    train_sizes: tuple[int, ...]
    errors: dict[str, np.ndarray]

    def mean(self, head: str) -> np.ndarray:
        return self.errors[head].mean(axis=0)

    def std(self, head: str) -> np.ndarray:
        return self.errors[head].std(axis=0)


def learning_curves(
    x_train: object,
    y_train: object,
    x_test: object,
    y_test: object,
    sizes: Sequence[int],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    scale: str | None = "minmax",
    C: float = 1.0,
    max_iter: int = 1000,
    var_floor: float = VAR_FLOOR,
    progress: bool = False,
    desc: str = "learning curves",
) -> LearningCurves:
    """Test error of naive Bayes and logistic regression trained on ``n`` samples per class
    for each ``n`` in ``sizes`` (see the module docstring for the protocol), per seed. The
    classes are ``0 .. max(y_train)``; each must occur in ``y_train``."""
    check_choice("scale", scale, SCALES)
    xtr = check_features(x_train, "x_train")
    xte = check_features(x_test, "x_test", dim=xtr.shape[1])
    ytr_raw, yte_raw = np.asarray(y_train), np.asarray(y_test)
    if not np.issubdtype(ytr_raw.dtype, np.integer) or ytr_raw.size == 0:
        raise ValueError(f"y_train must hold integer class indices, got dtype {ytr_raw.dtype}")
    num_classes = int(ytr_raw.max()) + 1
    ytr = check_labels(ytr_raw, len(xtr), num_classes, "y_train")
    yte = check_labels(yte_raw, len(xte), num_classes, "y_test")
    if num_classes < 2 or (np.bincount(ytr, minlength=num_classes) == 0).any():
        raise ValueError(f"y_train must hold every class of [0, {num_classes}), at least two")
    sizes = tuple(int(n) for n in sizes)
    if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
        raise ValueError(f"sizes must be increasing positive integers, got {sizes}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    errors = {h: np.empty((len(seeds), len(sizes))) for h in HEADS}
    counts = np.bincount(ytr, minlength=num_classes)
    train_sizes = tuple(int(np.minimum(counts, n).sum()) for n in sizes)
    jobs = [(i, s) for i in range(len(seeds)) for s in range(len(sizes))]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="fit")
    orders = [class_orders(ytr, num_classes, np.random.default_rng(s)) for s in seeds]
    for i, s in jobs:
        idx = np.concatenate([order[: sizes[s]] for order in orders[i]])
        xa, xb = xtr[idx], xte
        if scale == "minmax":
            xa, xb = minmax_scale(xa, xb)
        nb = GaussianNaiveBayes(num_classes, var_floor=var_floor).fit(xa, ytr[idx])
        errors["naive_bayes"][i, s] = float((nb.predict(xb) != yte).mean())
        lr = logistic_probe(xa, ytr[idx], C=C, max_iter=max_iter)
        errors["logistic"][i, s] = float((lr.predict(xb) != yte).mean())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return LearningCurves(sizes, seeds, train_sizes, errors)


register(
    "linear_eval_learning_curves",
    kind="diagnostic",
    family="diagnostics",
    papers=(13,),
    summary="Test error against samples per class of naive Bayes and logistic regression "
    "heads on frozen features, over seeds.",
    defaults={"scale": "minmax", "C": 1.0, "max_iter": 1000, "var_floor": VAR_FLOOR},
    function=learning_curves,
)
