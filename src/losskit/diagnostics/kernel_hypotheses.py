"""Kernel hypotheses that fit the training set: Gaussian-process posterior samples (paper 30's
kernel hypothesis space) and the test errors of any sampled hypotheses.

Each of the ``K`` output columns is an independent Gaussian process with the RBF kernel
``k(a, b) = exp(-||a - b||^2 / (2 l^2))`` conditioned on the training targets ``Y[N, K]``
(one-hot rows for ``K`` classes, or ``+-1`` in one column for two). At evaluation points
``X*`` the posterior is Gaussian with

    mean = K(X*, X) (K(X, X) + s^2 I)^-1 Y,
    cov  = K(X*, X*) - K(X*, X) (K(X, X) + s^2 I)^-1 K(X, X*),

and a hypothesis is ``f = mean + cov^(1/2) xi``, ``xi ~ N(0, I)`` per column, drawn with the
symmetric square root of ``cov`` (negative eigenvalues from rounding clipped to 0). With noise
``s = 0`` every sample interpolates the training targets; a ``jitter`` added to the diagonal
of ``K(X, X)`` (default ``1e-10``; the RBF diagonal is 1) keeps its Cholesky factor defined.
The paper's code fits the two solves by Adam; here they are exact, in float64.

A hypothesis's test error is the paper's per-entry test MSE ``mean_(i,c) (f_ic - Y*_ic)^2``;
the classification error (argmax over columns, the sign for one column) is reported beside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from losskit._core.checks import check_number
from losskit._core.registry import register


def _matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite float64 matrix ``[N, D]`` with ``N >= 1``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, D] with N, D >= 1, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return a


def class_targets(labels: Any, num_classes: int) -> np.ndarray:
    """Regression targets of class labels ``[N]``: one-hot rows ``[N, C]`` for ``C >= 3``
    classes, one column of ``+-1`` (class 1 -> +1) for ``C = 2``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty integer array [N], got {y.dtype} {y.shape}")
    if (y < 0).any() or (y >= num_classes).any():
        raise ValueError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    if num_classes == 2:
        return (2.0 * y - 1.0).astype(np.float64)[:, None]
    return np.eye(num_classes, dtype=np.float64)[y]


def rbf_kernel(a: Any, b: Any, *, lengthscale: float) -> np.ndarray:
    """``exp(-||a_i - b_j||^2 / (2 lengthscale^2))`` for ``a[N, D]``, ``b[M, D]`` -> ``[N, M]``."""
    ell = check_number(
        "lengthscale", lengthscale, low=0.0, low_open=True, high=math.inf, high_open=True
    )
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same width, got {a.shape} and {b.shape}")
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * ell * ell))


def gp_posterior(
    x_train: Any,
    y_train: Any,
    x_eval: Any,
    *,
    lengthscale: float,
    noise: float = 0.0,
    jitter: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean ``[M, K]`` and covariance ``[M, M]`` (shared by the ``K`` columns) at
    ``x_eval[M, D]`` of the RBF Gaussian process fitted to ``y_train[N, K]`` at ``x_train``."""
    x, y, xe = _matrix(x_train, "x_train"), _matrix(y_train, "y_train"), _matrix(x_eval, "x_eval")
    if len(y) != len(x):
        raise ValueError(f"y_train must have {len(x)} rows like x_train, got {len(y)}")
    if xe.shape[1] != x.shape[1]:
        raise ValueError(f"x_eval must have {x.shape[1]} columns like x_train, got {xe.shape[1]}")
    noise = check_number("noise", noise, low=0.0, high_open=True)
    jitter = check_number("jitter", jitter, low=0.0, high=1.0)
    k = rbf_kernel(x, x, lengthscale=lengthscale)
    k[np.diag_indices_from(k)] += noise**2 + jitter
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        raise ValueError(
            "the training kernel matrix is singular (duplicate training points?): "
            "raise jitter or noise"
        ) from None
    k_cross = rbf_kernel(x, xe, lengthscale=lengthscale)  # [N, M]
    v = np.linalg.solve(chol, k_cross)  # L^-1 K(X, X*)
    mean = v.T @ np.linalg.solve(chol, y)
    cov = rbf_kernel(xe, xe, lengthscale=lengthscale) - v.T @ v
    return mean, 0.5 * (cov + cov.T)


def _sqrt_psd(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance, negative rounding eigenvalues set to 0."""
    w, u = np.linalg.eigh(cov)
    return (u * np.sqrt(np.maximum(w, 0.0))) @ u.T


def _draw(mean: np.ndarray, root: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws ``mean + root xi`` per column, ``xi ~ N(0, I)``: ``[n, M, K]``."""
    m, k = mean.shape
    xi = rng.standard_normal((m, n * k))
    return mean[None] + (root @ xi).reshape(m, n, k).transpose(1, 0, 2)


def gp_posterior_samples(
    x_train: Any,
    y_train: Any,
    x_eval: Any,
    *,
    num_samples: int,
    lengthscale: float,
    noise: float = 0.0,
    jitter: float = 1e-10,
    seed: int = 0,
) -> np.ndarray:
    """``num_samples`` posterior functions at ``x_eval``: ``[S, M, K]`` float64."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    mean, cov = gp_posterior(
        x_train, y_train, x_eval, lengthscale=lengthscale, noise=noise, jitter=jitter
    )
    return _draw(mean, _sqrt_psd(cov), num_samples, np.random.default_rng(seed))


def prediction_errors(predictions: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per hypothesis, the test MSE ``mean_(i,c) (f_ic - Y_ic)^2`` and the classification error
    (argmax over columns; the sign for one ``+-1`` column), for ``predictions[S, M, K]`` and
    ``targets[M, K]``."""
    f = np.asarray(predictions, dtype=np.float64)
    y = _matrix(targets, "targets")
    if f.ndim != 3 or f.shape[1:] != y.shape:
        raise ValueError(
            f"predictions must have shape [S, {y.shape[0]}, {y.shape[1]}], got {f.shape}"
        )
    if not np.isfinite(f).all():
        raise ValueError("predictions must be finite, got NaN or Inf values")
    mse = ((f - y) ** 2).mean(axis=(1, 2))
    if y.shape[1] == 1:
        wrong = np.sign(f[..., 0]) != np.sign(y[:, 0])
    else:
        wrong = f.argmax(axis=2) != y.argmax(axis=1)
    return mse, wrong.mean(axis=1)


def gp_hypothesis_errors(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    num_samples: int,
    lengthscale: float,
    noise: float = 0.0,
    seed: int = 0,
    batch: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Test MSE and classification error ``[S]`` of ``num_samples`` Gaussian-process posterior
    hypotheses (targets ``[N, K]`` and ``[M, K]``, e.g. from :func:`class_targets`), drawn in
    batches of ``batch`` from one generator seeded with ``seed``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    mean, cov = gp_posterior(x_train, y_train, x_test, lengthscale=lengthscale, noise=noise)
    yt = _matrix(y_test, "y_test")
    if yt.shape != mean.shape:
        raise ValueError(f"y_test must have shape {mean.shape}, got {yt.shape}")
    root, rng = _sqrt_psd(cov), np.random.default_rng(seed)
    mse, err = [], []
    for start in range(0, num_samples, batch):
        n = min(batch, num_samples - start)
        m, e = prediction_errors(_draw(mean, root, n, rng), yt)
        mse.append(m)
        err.append(e)
    return np.concatenate(mse), np.concatenate(err)


register(
    "gp_hypothesis_errors",
    kind="diagnostic",
    family="diagnostics",
    papers=(30,),
    summary="Test MSE and error of RBF Gaussian-process posterior samples that fit the training "
    "targets (the kernel hypothesis space of the inductive-bias estimate).",
    defaults={"noise": 0.0},
    function=gp_hypothesis_errors,
)
