"""Linear regression from aggregate responses (paper 48): the interpolating estimator in
closed form, and ``rho`` chosen by cross-validation over bags.

For ``f_i = x_i^T w + c`` the interpolating loss of :mod:`losskit.labels.aggregate`, summed
over bags, is

``sum_b |B_b| (ybar_b - xbar_b^T w - c)^2 + rho sum_i ((x_i - xbar_{b(i)})^T w)^2``

(the intercept cancels in the within-bag term). :func:`fit_aggregate_linear` minimises it,
plus ``ridge * ||w||^2`` if asked, through its normal equations in float64; where the
minimiser is not unique (fewer bags than parameters at ``rho = 0``) it returns the
minimum-norm one. ``rho = 0`` is ordinary least squares of the bag responses on the bag
means of the features, weighted by bag size (the bag-level estimator, unbiased for random
bags); ``rho = 1`` is ordinary least squares of ``ybar_{b(i)}`` on ``x_i`` (the
instance-level estimator, which for random bags shrinks the slope towards 0).

:func:`cross_validate_rho` scores each ``rho`` on held-out bags with the size-weighted
bag-level loss ``sum_b |B_b| (ybar_b - fbar_b)^2 / n_held_out``: for random bags of
independent instances its expectation is ``Var(y - f) + |B| (E[y - f])^2``, which ranks
predictors like the instance-level squared error when the residual mean is near 0. The
instance-level loss on held-out bags would not: it rewards the same shrinkage as the
instance-level fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.labels.bags import bag_folds, check_bag_ids


@dataclass(frozen=True)
class LinearFit:
    """Coefficients ``coef[d]`` and ``intercept`` of ``f(x) = x^T coef + intercept``."""

    coef: np.ndarray
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef + self.intercept


def _data(
    x: np.ndarray, bag_ids: np.ndarray, responses: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or not np.isfinite(x).all():
        raise ValueError(f"x must be a finite array [n, d] with n >= 1, got shape {x.shape}")
    ids, m = check_bag_ids(bag_ids, x.shape[0])
    responses = np.asarray(responses, dtype=np.float64)
    if responses.shape != (m,) or not np.isfinite(responses).all():
        raise ValueError(
            f"bag_responses must be finite with one entry per bag, shape ({m},), "
            f"got {responses.shape}"
        )
    return x, ids, responses, m


def _normal_equations(
    x: np.ndarray, ids: np.ndarray, ybar: np.ndarray, m: int, fit_intercept: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``G, r, W`` with the objective ``theta^T (G + rho W) theta - 2 r^T theta + const`` in
    ``theta = (w, c)``: ``G`` and ``r`` from the bag term, ``W`` the within-bag scatter."""
    d = x.shape[1]
    counts = np.bincount(ids, minlength=m).astype(np.float64)
    sums = [np.bincount(ids, weights=x[:, j], minlength=m) for j in range(d)]
    xbar = np.stack(sums, axis=1).reshape(m, d) / counts[:, None]
    z = np.hstack([xbar, np.ones((m, 1))]) if fit_intercept else xbar
    dev = x - xbar[ids]
    w = np.zeros((z.shape[1], z.shape[1]))
    w[:d, :d] = dev.T @ dev
    return (z * counts[:, None]).T @ z, z.T @ (counts * ybar), w


def _solve(g: np.ndarray, r: np.ndarray, w: np.ndarray, rho: float, ridge: float, d: int):
    """The minimum-norm minimiser: ``pinv(G + rho W + ridge I_w) r`` (singular values below
    1e-10 of the largest count as zero)."""
    a = g + rho * w
    a[np.arange(d), np.arange(d)] += ridge
    return np.linalg.lstsq(a, r, rcond=1e-10)[0]


def fit_aggregate_linear(
    x: np.ndarray,
    bag_ids: np.ndarray,
    bag_responses: np.ndarray,
    *,
    rho: float,
    ridge: float = 0.0,
    fit_intercept: bool = True,
) -> LinearFit:
    """The interpolating linear estimator (see the module docstring) on ``x[n, d]`` with
    bags ``bag_ids[n]`` and their mean responses ``bag_responses[m]``; float64."""
    rho = check_number("rho", rho, low=0.0, high=1.0)
    ridge = check_number("ridge", ridge, low=0.0, high_open=True)
    x, ids, ybar, m = _data(x, bag_ids, bag_responses)
    d = x.shape[1]
    theta = _solve(*_normal_equations(x, ids, ybar, m, fit_intercept), rho, ridge, d)
    return LinearFit(theta[:d], float(theta[d]) if fit_intercept else 0.0)


def _relabel(ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instances of the bags in ``keep`` (a mask over bags) and their bag ids renumbered."""
    rows = np.flatnonzero(keep[ids])
    new = np.cumsum(keep) - 1
    return rows, new[ids[rows]]


def cross_validate_rho(
    x: np.ndarray,
    bag_ids: np.ndarray,
    bag_responses: np.ndarray,
    rhos: tuple[float, ...] | list[float],
    *,
    folds: int = 5,
    seed: int | np.random.Generator = 0,
    ridge: float = 0.0,
) -> tuple[float, np.ndarray]:
    """The ``rho`` among ``rhos`` with the lowest held-out size-weighted bag loss over
    ``min(folds, m)`` folds of bags (the first on ties), and that loss for every ``rho``."""
    rhos = [check_number("rhos", r, low=0.0, high=1.0) for r in rhos]
    if not rhos:
        raise ValueError("rhos must hold at least one value in [0, 1]")
    ridge = check_number("ridge", ridge, low=0.0, high_open=True)
    x, ids, ybar, m = _data(x, bag_ids, bag_responses)
    d = x.shape[1]
    fold = bag_folds(m, min(folds, m), seed=seed)
    counts = np.bincount(ids, minlength=m)
    losses = np.zeros(len(rhos))
    for k in range(fold.max() + 1):
        train, test = fold != k, fold == k
        rows, sub = _relabel(ids, train)
        t_rows, t_sub = _relabel(ids, test)
        size = counts[test]
        eqs = _normal_equations(x[rows], sub, ybar[train], int(train.sum()), True)
        for j, rho in enumerate(rhos):
            theta = _solve(*eqs, rho, ridge, d)
            pred = x[t_rows] @ theta[:d] + theta[d]
            fbar = np.bincount(t_sub, weights=pred) / size
            losses[j] += float((size * (ybar[test] - fbar) ** 2).sum())
    losses /= ids.size
    return rhos[int(np.argmin(losses))], losses


register(
    "aggregate_linear",
    kind="procedure",
    family="aggregate",
    papers=(48,),
    summary="Linear regression from bag-mean responses: the interpolating estimator in closed "
    "form (rho = 0 bag level, rho = 1 instance level).",
    function=fit_aggregate_linear,
)
register(
    "aggregate_rho_cv",
    kind="procedure",
    family="aggregate",
    papers=(48,),
    summary="Choose the interpolating rho by cross-validation over bags with the held-out "
    "size-weighted bag loss.",
    defaults={"folds": 5},
    function=cross_validate_rho,
)
