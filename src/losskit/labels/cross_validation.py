"""Out-of-sample predicted probabilities by stratified K-fold cross-validation (paper 34).

Confident learning needs probabilities from a model that did not see the example: paper 34
uses cross-validated ``p̂`` for every dataset. Each example's row here comes from the model
of the one fold that held it out.

- :func:`stratified_folds`: fold ids ``[N]``; within every class the examples are shuffled
  (seeded) and dealt to the folds in turn, continuing where the previous class stopped, so
  class counts per fold differ by at most one and fold sizes by at most one.
- :func:`cross_val_pred_probs`: any torch model, from ``model_factory()`` (a fresh module per
  fold, seeded) and ``train_fn(model, x_train, y_train)`` (trains it in place); the
  probabilities are ``softmax(forward_fn(model, x_batch))`` in float64, the model in eval
  mode without gradients.
- :func:`cross_val_pred_probs_features`: features ``[N, D]`` and a linear head:
  ``"softmax"`` (a torch linear layer, full-batch L-BFGS on cross-entropy + ``l2/2 |W|^2``),
  ``"logistic_regression"`` (scikit-learn, ``C = 1 / (l2 n_train)`` so both minimise the same
  objective), or a factory of any object with scikit-learn's ``fit`` / ``predict_proba`` /
  ``classes_``. Features are standardised with the training fold's statistics. A class
  missing from a training fold gets probability 0 from scikit-learn heads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.labels._issue_inputs import check_labels, to_numpy

HEADS = ("softmax", "logistic_regression")


def _int_arg(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    check_number(name, value, low=low)
    return int(value)


def _labels(labels: Any, n: int | None = None) -> np.ndarray:
    y = to_numpy(labels, "labels")
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be non-empty class ids of shape [N], got {y.shape}")
    if n is not None and len(y) != n:
        raise ValueError(f"labels has {len(y)} entries but x has {n} rows; they must match")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("labels must hold non-negative integer class ids")
    return y.astype(np.int64)


def stratified_folds(labels: Any, n_folds: int = 5, *, seed: int = 0) -> np.ndarray:
    """Fold id in ``[0, n_folds)`` of every example, stratified by class (module docstring)."""
    y = _labels(labels)
    n_folds = _int_arg("n_folds", n_folds, 2)
    if n_folds > len(y):
        raise ValueError(f"n_folds={n_folds} exceeds the number of examples {len(y)}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    folds = np.empty(len(y), dtype=np.int64)
    folds[order] = np.arange(len(y)) % n_folds
    return folds


def _take(x: Any, index: np.ndarray) -> Any:
    return x[torch.as_tensor(index)] if isinstance(x, Tensor) else np.asarray(x)[index]


def _default_forward(model: nn.Module, x: Any) -> Tensor:
    return model(torch.as_tensor(x))


def cross_val_pred_probs(
    x: Any,
    labels: Any,
    *,
    model_factory: Callable[[], nn.Module],
    train_fn: Callable[[nn.Module, Any, np.ndarray], Any],
    num_classes: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    batch_size: int = 1024,
    forward_fn: Callable[[nn.Module, Any], Tensor] | None = None,
    folds: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold ``softmax`` probabilities ``[N, K]`` (float64) of a torch model.

    ``x`` is anything indexable by rows (numpy array or tensor); ``train_fn`` receives the
    training rows of ``x`` and their labels (int64 numpy); ``forward_fn(model, x_batch)``
    returns logits (default ``model(torch.as_tensor(x_batch))``). Fold ``f`` builds its model
    under ``torch.manual_seed(seed * 1000 + f)``. ``folds`` overrides
    :func:`stratified_folds` (ids in ``[0, n_folds)``).
    """
    n = len(x)
    y = _labels(labels, n)
    k = int(y.max()) + 1 if num_classes is None else _int_arg("num_classes", num_classes, 2)
    check_labels(y, n, k)
    batch_size = _int_arg("batch_size", batch_size, 1)
    folds = stratified_folds(y, n_folds, seed=seed) if folds is None else _check_folds(folds, n)
    forward = forward_fn or _default_forward
    out = np.full((n, k), np.nan)
    for f in np.unique(folds):
        train, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + int(f))
            model = model_factory()
            train_fn(model, _take(x, train), y[train])
        model.eval()
        with torch.no_grad():
            for s in range(0, len(held), batch_size):
                rows = held[s : s + batch_size]
                logits = forward(model, _take(x, rows))
                if tuple(logits.shape) != (len(rows), k):
                    raise ValueError(
                        f"forward_fn must return logits [B, {k}], got {tuple(logits.shape)}"
                    )
                out[rows] = torch.softmax(logits.double(), dim=1).numpy()
    return out


def _check_folds(folds: Any, n: int) -> np.ndarray:
    f = to_numpy(folds, "folds")
    if f.shape != (n,) or not np.issubdtype(f.dtype, np.integer) or f.min() < 0:
        raise ValueError(f"folds must hold {n} non-negative integer fold ids, got {f.shape}")
    if len(np.unique(f)) < 2:
        raise ValueError("folds must name at least 2 folds")
    return f.astype(np.int64)


def fit_softmax_head(x: Tensor, y: Tensor, num_classes: int, l2: float, max_iter: int) -> nn.Linear:
    """A linear softmax head minimising mean cross-entropy + ``l2/2 |W|^2`` (full-batch L-BFGS)."""
    head = nn.Linear(x.shape[1], num_classes, dtype=x.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def _sklearn_probs(model: Any, x_train, y_train, x_held, k: int) -> np.ndarray:
    model.fit(x_train, y_train)
    probs = np.asarray(model.predict_proba(x_held), dtype=np.float64)
    out = np.zeros((len(x_held), k))
    out[:, np.asarray(model.classes_, dtype=np.int64)] = probs
    return out


def cross_val_pred_probs_features(
    features: Any,
    labels: Any,
    *,
    head: str | Callable[[], Any] = "softmax",
    num_classes: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    l2: float = 1e-3,
    max_iter: int = 200,
    standardize: bool = True,
    folds: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold probabilities ``[N, K]`` (float64) of a linear head on ``features[N, D]``.

    ``head``: ``"softmax"`` (torch, float64, L-BFGS), ``"logistic_regression"`` (scikit-learn,
    lbfgs) or a factory of an object with ``fit`` / ``predict_proba`` / ``classes_``;
    ``l2`` is the weight penalty per example (module docstring), ``max_iter`` the optimiser's
    iterations (the factory's own settings apply to a custom head).
    """
    x = to_numpy(features, "features")
    if x.ndim != 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"features must be a numeric [N, D] array, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite, got NaN or Inf values")
    if not callable(head) and head not in HEADS:
        raise ValueError(f"head must be one of {HEADS} or a factory, got {head!r}")
    n = len(x)
    y = _labels(labels, n)
    k = int(y.max()) + 1 if num_classes is None else _int_arg("num_classes", num_classes, 2)
    check_labels(y, n, k)
    l2 = check_number("l2", l2, low=0.0, low_open=True)
    max_iter = _int_arg("max_iter", max_iter, 1)
    folds = stratified_folds(y, n_folds, seed=seed) if folds is None else _check_folds(folds, n)
    out = np.empty((n, k))
    for f in np.unique(folds):
        train, held = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        xt, xh = x[train].astype(np.float64), x[held].astype(np.float64)
        if standardize:
            mean, std = xt.mean(axis=0), xt.std(axis=0)
            std = np.where(std < 1e-12, 1.0, std)
            xt, xh = (xt - mean) / std, (xh - mean) / std
        if head == "softmax":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + int(f))
                lin = fit_softmax_head(
                    torch.from_numpy(xt), torch.from_numpy(y[train]), k, l2, max_iter
                )
            with torch.no_grad():
                out[held] = torch.softmax(lin(torch.from_numpy(xh)), dim=1).numpy()
            continue
        if head == "logistic_regression":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=1.0 / (l2 * len(train)), max_iter=max_iter)
        else:
            model = head()
        out[held] = _sklearn_probs(model, xt, y[train], xh, k)
    return out


register(
    "cross_val_pred_probs",
    kind="procedure",
    family="labels",
    papers=(34,),
    summary="Out-of-sample predicted probabilities by stratified K-fold cross-validation of "
    "a torch model (factory + training function), for confident learning.",
    defaults={"n_folds": 5, "seed": 0},
    function=cross_val_pred_probs,
)
