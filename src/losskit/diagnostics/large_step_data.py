"""Datasets and separability measures for the large-step GD probe (paper 36).

- :func:`separable_dataset`: ``x = Q diag(s) g`` with ``g ~ N(0, I_d)``, a random rotation
  ``Q`` and axis scales ``s_k = stretch^(-k/(d-1))`` from 1 down to ``1/stretch`` (a
  stretched Gaussian: with ``stretch = 1`` the mean of ``y_i x_i`` points along the
  separator and one step solves the problem), and a random unit normal ``u``; points with
  ``|u^T x| < margin`` are redrawn and ``y = sign(u^T x)``, so the homogeneous separator
  ``u`` has margin at least ``margin`` (the max-margin ``mu`` of Assumption 1.1 is at least
  that).
- :func:`nonseparable_dataset`: the same points without the margin condition and a fraction
  ``flip`` of labels flipped; usually not linearly separable (check with
  :func:`is_linearly_separable`).
- :func:`worst_case_dataset`: the dataset of the paper's Theorem 5.1, one point
  ``(0.5, -1)`` of class ``+1`` and ``n - 1`` points ``(-0.5, -1)`` of class ``-1``
  (``mu = 0.5``, ``R^2 = 1.25``), on which the Batch Perceptron needs ``Omega(n)``
  iterations.
- :func:`is_linearly_separable`: a linear programme, feasibility of ``y_i a_i^T w >= 1``.
- :func:`max_margin`: ``mu = max_{||w|| = 1} min_i y_i a_i^T w``, which for separable data
  equals the distance from the origin to the convex hull of the ``z_i = y_i a_i``
  (minimax duality), ``min_{lambda in simplex} ||sum_i lambda_i z_i||``. The simplex
  constraint is imposed by a heavily weighted row ``c sum_i lambda_i = c`` in a
  non-negative least-squares problem (``scipy.optimize.nnls``); the returned value is
  ``min_i z_i^T p / ||p||`` at the solution's ``p = sum_i lambda_i z_i``, a margin that
  ``p`` attains, hence a lower bound on ``mu`` that is exact at the optimum.

All separators are homogeneous (through the origin); add a column of ones for an intercept.
The two measures need SciPy (the ``arena`` extra).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from losskit._core.checks import check_number
from losskit.diagnostics.large_step_gd import _signed_rows


def _size(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class _Gaussian:
    """The stretched Gaussian of :func:`separable_dataset` and a random unit normal ``u``."""

    def __init__(self, d: int, stretch: float, rng: np.random.Generator) -> None:
        self.rng = rng
        self.scale = stretch ** -(np.arange(d) / max(d - 1, 1))
        self.rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
        u = rng.normal(size=d)
        self.u = u / np.linalg.norm(u)

    def sample(self, n: int) -> np.ndarray:
        return (self.rng.normal(size=(n, len(self.u))) * self.scale) @ self.rotation.T


def separable_dataset(
    n: int, d: int = 2, *, margin: float = 0.05, stretch: float = 10.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stretched-Gaussian points in ``R^d`` labelled ``+-1`` by a random hyperplane
    through the origin, none within ``margin`` of it. Returns ``(a[n, d], y[n])``."""
    n, d = _size("n", n, 1), _size("d", d, 1)
    margin = check_number("margin", margin, low=0.0, high=0.5)
    stretch = check_number("stretch", stretch, low=1.0, high=1e6)
    gauss = _Gaussian(d, stretch, np.random.default_rng(seed))
    kept: list[np.ndarray] = []
    while sum(len(k) for k in kept) < n:
        x = gauss.sample(2 * n)
        kept.append(x[np.abs(x @ gauss.u) >= margin])
    a = np.concatenate(kept)[:n]
    return a, np.where(a @ gauss.u > 0, 1.0, -1.0)


def nonseparable_dataset(
    n: int, d: int = 2, *, flip: float = 0.1, stretch: float = 10.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stretched-Gaussian points labelled by a random hyperplane through the origin,
    with ``round(flip * n)`` labels (chosen at random) flipped. Returns ``(a[n, d], y[n])``."""
    n, d = _size("n", n, 1), _size("d", d, 1)
    flip = check_number("flip", flip, low=0.0, high=1.0)
    stretch = check_number("stretch", stretch, low=1.0, high=1e6)
    gauss = _Gaussian(d, stretch, np.random.default_rng(seed))
    rng = gauss.rng
    a = gauss.sample(n)
    y = np.where(a @ gauss.u > 0, 1.0, -1.0)
    y[rng.choice(n, size=round(flip * n), replace=False)] *= -1.0
    return a, y


def worst_case_dataset(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's Theorem 5.1 dataset: ``(0.5, -1)`` with label ``+1`` and ``n - 1`` copies
    of ``(-0.5, -1)`` with label ``-1``."""
    n = _size("n", n, 2)
    a = np.tile([-0.5, -1.0], (n, 1))
    a[0] = [0.5, -1.0]
    y = -np.ones(n)
    y[0] = 1.0
    return a, y


def is_linearly_separable(a: ArrayLike, y: ArrayLike) -> bool:
    """Whether some ``w`` has ``y_i a_i^T w > 0`` for every ``i`` (an LP, SciPy's HiGHS)."""
    from scipy.optimize import linprog

    z = _signed_rows(a, y)
    res = linprog(
        np.zeros(z.shape[1]),
        A_ub=-z,
        b_ub=-np.ones(len(z)),
        bounds=[(None, None)] * z.shape[1],
        method="highs",
    )
    if res.status not in (0, 2):
        raise RuntimeError(f"the separability LP did not finish: {res.message}")
    return res.status == 0


def max_margin(a: ArrayLike, y: ArrayLike) -> float:
    """The max-margin ``mu`` of Assumption 1.1 (see the module docstring); 0 for data that
    are not linearly separable."""
    z = _signed_rows(a, y)
    if not is_linearly_separable(z, np.ones(len(z))):
        return 0.0
    from scipy.optimize import nnls

    weight = 1e3 * float(np.linalg.norm(z, axis=1).max())
    design = np.vstack([z.T, np.full((1, len(z)), weight)])
    target = np.concatenate([np.zeros(z.shape[1]), [weight]])
    lam, _ = nnls(design, target, maxiter=50 * len(z))
    p = lam @ z
    return float((z @ p).min() / np.linalg.norm(p))
