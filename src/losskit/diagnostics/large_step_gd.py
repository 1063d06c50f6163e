"""Gradient descent on logistic regression with large step sizes, its batch-perceptron limit
and Normalized LR+GD (paper 36, Tyurin, "From Logistic Regression to the Perceptron
Algorithm: Exploring Gradient Descent with Large Step Sizes").

Data: features ``a[n, d]`` (float64, no intercept is added: append a column of ones for an
affine classifier) and labels ``y[n]`` in ``{-1, +1}`` or in ``{0, 1}``; ``0`` is read as
``-1`` and ``1`` as ``+1`` (:func:`signed_labels`), any other value raises ``ValueError``.
With ``z_i = y_i a_i`` and the margins ``m_i(w) = z_i^T w``:

- **Logistic loss** ``f(w) = 1/n sum_i log(1 + exp(-m_i))`` and its gradient
  ``grad f(w) = -1/n sum_i sigma(-m_i) z_i`` (``sigma(u) = 1 / (1 + exp(-u))``), both from
  the per-sample losses ``l_i = logaddexp(0, -m_i)``: ``sigma(-m_i) = -expm1(-l_i)`` and
  ``log sigma(-m_i) = -(m_i + l_i)``, which neither overflow nor lose small values (NumPy
  only).
- **LR+GD** (``method="gd"``): ``w_{t+1} = w_t - gamma grad f(w_t)``, any ``gamma > 0``.
- **Batch Perceptron** (``"batch_perceptron"``), the paper's limit of LR+GD: from
  ``w_0 = 0``, ``w_t / gamma -> theta_t`` as ``gamma -> infinity`` (Theorem 3.2) where
  ``theta_1 = theta_0 + 1/(2n) sum_i z_i`` (every margin is 0 at the start and
  ``sigma(0) = 1/2``) and, for ``t >= 1``, ``theta_{t+1} = theta_t + 1/n sum_{i in S_t} z_i``
  with ``S_t = {i : m_i(theta_t) <= 0}``. Here the step is scaled by ``gamma`` (``w_t =
  gamma theta_t`` from ``w_0 = 0``), so that its iterates sit where LR+GD's do; the set
  sequence ``S_t`` does not depend on ``gamma``. Ties ``m_i = 0`` after the first step have
  probability zero (the paper's Assumption 3.1); the paper counts them in ``S_t``.
- **Normalized LR+GD** (``"normalized_gd"``, the paper's new method, Section 6):
  ``w_{t+1} = w_t - gamma beta_t grad f(w_t)`` with ``beta_t = (1/n sum_i sigma(-m_i))^-1``,
  i.e. ``w_{t+1} = w_t + gamma sum_i sigma(-m_i) z_i / sum_j sigma(-m_j)``: a step of length
  at most ``gamma R`` (``R = max_i ||a_i||``) along a sigma-weighted mean of the ``z_i``,
  computed from ``log sigma`` so it stays defined when every ``sigma(-m_i)`` underflows. From
  ``w_0 = 0`` it separates the data within ``R^2/mu^2 + 2 log(2n - 1)/(gamma mu^2)``
  iterations (Theorem 6.1; ``mu`` the max-margin of Assumption 1.1) against ``n R^2/mu^2``
  for the Batch Perceptron (Theorem 3.3).
- **Normalized Batch Perceptron** (``"normalized_batch_perceptron"``, Theorem 5.3), the
  ``gamma -> infinity`` limit of Normalized LR+GD: ``theta_{t+1} = theta_t + 1/|S_t|
  sum_{i in S_t} z_i`` for all ``t >= 0`` (scaled by ``gamma`` as above); at most
  ``R^2/mu^2`` iterations.

"Iterations" is the first ``t`` with ``S_t`` empty (every point strictly on its side);
``w_0`` counts as iteration 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register

METHODS = ("gd", "normalized_gd", "batch_perceptron", "normalized_batch_perceptron")


def signed_labels(y: ArrayLike, n: int | None = None) -> np.ndarray:
    """Labels as float64 ``+-1``: ``{-1, +1}`` are kept, ``{0, 1}`` map to ``{-1, +1}``.

    A mix of ``-1`` and ``0`` is ambiguous and raises ``ValueError``, as does any other value,
    a shape other than ``[n]`` or an empty array.
    """
    arr = np.asarray(y)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"y must hold numbers in {{-1, 1}} or {{0, 1}}, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0 or (n is not None and arr.shape != (n,)):
        want = f"({n},)" if n is not None else "[n] with n >= 1"
        raise ValueError(f"y must have shape {want}, got {arr.shape}")
    values = set(np.unique(arr).tolist())
    if not (values <= {-1, 1} or values <= {0, 1}):
        raise ValueError(f"y must take values in {{-1, 1}} or in {{0, 1}}, got {sorted(values)}")
    return np.where(arr > 0, 1.0, -1.0)


def _features(a: ArrayLike) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"a must have shape [n, d] with n, d >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("a must be finite, got NaN or Inf values")
    return arr


def _signed_rows(a: ArrayLike, y: ArrayLike) -> np.ndarray:
    """``z_i = y_i a_i`` after validating ``a`` and ``y``."""
    x = _features(a)
    return signed_labels(y, len(x))[:, None] * x


def _weights(w: ArrayLike | None, d: int, name: str = "w") -> np.ndarray:
    if w is None:
        return np.zeros(d)
    arr = np.asarray(w, dtype=np.float64)
    if arr.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return arr.copy()


def _sigma_from_loss(losses: np.ndarray) -> np.ndarray:
    """``sigma(-m) = 1 - exp(-l)`` from the per-sample losses ``l = log(1 + exp(-m))``."""
    return -np.expm1(-losses)


def logistic_loss(a: ArrayLike, y: ArrayLike, w: ArrayLike) -> float:
    """``f(w) = 1/n sum_i log(1 + exp(-y_i a_i^T w))`` (underflows to 0 beyond ~1e-308)."""
    z = _signed_rows(a, y)
    return float(np.logaddexp(0.0, -(z @ _weights(w, z.shape[1]))).mean())


def logistic_gradient(a: ArrayLike, y: ArrayLike, w: ArrayLike) -> np.ndarray:
    """``grad f(w) = -1/n sum_i sigma(-y_i a_i^T w) y_i a_i``."""
    z = _signed_rows(a, y)
    losses = np.logaddexp(0.0, -(z @ _weights(w, z.shape[1])))
    return -(_sigma_from_loss(losses) @ z) / len(z)


def _coefficients(m: np.ndarray, losses: np.ndarray, method: str, t: int) -> np.ndarray:
    """Per-sample coefficients ``c`` of the step ``w_{t+1} = w_t + gamma c^T z`` from the
    margins ``m`` and the per-sample losses ``log(1 + exp(-m))``."""
    n = len(m)
    if method == "gd":
        return _sigma_from_loss(losses) / n
    if method == "normalized_gd":
        log_s = -(m + losses)
        s = np.exp(log_s - log_s.max())
        return s / s.sum()
    if method == "batch_perceptron" and t == 0:
        return np.full(n, 0.5 / n)
    hit = (m <= 0).astype(np.float64)
    if method == "batch_perceptron":
        return hit / n
    return hit / max(hit.sum(), 1.0)


@dataclass(frozen=True)
class LargeStepRun:
    """One run: the final iterate, ``f(w_t)`` and ``|S_t|`` for ``t = 0..T``, the first ``t``
    with ``S_t`` empty (``None`` if none within ``max_iter``) and, when asked, every iterate
    (``[T + 1, d]``)."""

    method: str
    gamma: float
    w: np.ndarray
    losses: np.ndarray
    misclassified: np.ndarray
    iterations: int | None
    iterates: np.ndarray | None = None


def run_large_step_gd(
    a: ArrayLike,
    y: ArrayLike,
    *,
    method: str = "gd",
    gamma: float = 1.0,
    max_iter: int = 1000,
    w0: ArrayLike | None = None,
    stop_at_separation: bool = True,
    keep_iterates: bool = False,
) -> LargeStepRun:
    """Run ``method`` (see the module docstring) for up to ``max_iter`` steps from ``w0``
    (default 0). With ``stop_at_separation`` the run ends at the first iterate that
    classifies every point correctly; otherwise it takes all ``max_iter`` steps and
    ``iterations`` still reports the first separating iterate."""
    check_choice("method", method, METHODS)
    gamma = check_number("gamma", gamma, low=0.0, low_open=True, high=np.inf, high_open=True)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    z = _signed_rows(a, y)
    w = _weights(w0, z.shape[1], "w0")
    losses, counts, kept = [], [], []
    first = None
    for t in range(max_iter + 1):
        m = z @ w
        per_sample = np.logaddexp(0.0, -m)
        losses.append(float(per_sample.mean()))
        counts.append(int((m <= 0).sum()))
        if keep_iterates:
            kept.append(w.copy())
        if counts[-1] == 0 and first is None:
            first = t
        if t == max_iter or (first is not None and stop_at_separation):
            break
        w = w + gamma * (_coefficients(m, per_sample, method, t) @ z)
    return LargeStepRun(
        method=method,
        gamma=gamma,
        w=w,
        losses=np.array(losses),
        misclassified=np.array(counts),
        iterations=first,
        iterates=np.array(kept) if keep_iterates else None,
    )


def perceptron_agreement(
    a: ArrayLike, y: ArrayLike, gamma: float, *, max_iter: int = 100, normalized: bool = False
) -> int:
    """How many leading iterates ``t = 0, 1, ...`` of LR+GD (Normalized LR+GD with
    ``normalized=True``) from ``w_0 = 0`` have the same sign pattern ``sign(y_i a_i^T w_t)``
    as the (Normalized) Batch Perceptron's, over at most ``max_iter + 1`` iterates. Both runs
    stop at separation; the iterate where the first one separates is compared too, so a run
    that separates earlier than the other shows as a mismatch there."""
    prefix = "normalized_" if normalized else ""
    runs = [
        run_large_step_gd(
            a, y, method=prefix + m, gamma=gamma, max_iter=max_iter, keep_iterates=True
        )
        for m in ("gd", "batch_perceptron")
    ]
    z = _signed_rows(a, y)
    signs = [np.sign(r.iterates @ z.T) for r in runs]
    length = min(len(s) for s in signs)
    same = (signs[0][:length] == signs[1][:length]).all(axis=1)
    return int(length if same.all() else np.argmin(same))


register(
    "large_step_gd",
    kind="diagnostic",
    family="optimization",
    papers=(36,),
    summary="Logistic-regression GD at any step size, its batch-perceptron limit and "
    "Normalized LR+GD; iterations to separate the data and the loss trajectory.",
    defaults={"method": "gd", "gamma": 1.0, "max_iter": 1000},
    function=run_large_step_gd,
)
