"""Shared-variance Gaussian naive Bayes, a generative linear-evaluation head (paper 13).

On frozen features ``x[N, D]`` with labels ``y[N]`` in ``[0, K)``, the model is
``p(y = k) = pi_k`` and ``p(x | y = k) = prod_j N(x_j; mu_kj, sigma_j^2)``: one mean per
class and feature, one variance per feature shared by all classes. The estimates (maximum
likelihood, as in the paper's code):

- ``n_k`` samples of class ``k``, ``N = sum_k n_k``, prior ``pi_k = n_k / N``;
- mean ``mu_k = (1 / n_k) sum_{i: y_i = k} x_i``;
- shared variance, the pooled within-class variance with divisor ``N``:
  ``sigma_j^2 = (1 / N) sum_k sum_{i: y_i = k} (x_ij - mu_kj)^2 + var_floor``. This is the
  prior-weighted average ``sum_k pi_k v_kj`` of the per-class population variances
  ``v_kj`` (``ddof = 0``), as the paper writes it. ``var_floor`` (default ``1e-9``, the
  paper's ``var_smoothing``) is an absolute floor that keeps a feature with no within-class
  spread (always the case with one sample per class) from dividing by zero; it must be > 0.

Joint log-likelihood (the generative score)
``log p(x, y = k) = log pi_k - 1/2 sum_j [log(2 pi sigma_j^2) + (x_j - mu_kj)^2 / sigma_j^2]``
and the posterior is its softmax over ``k``. Because the variance is shared, the quadratic
term ``sum_j x_j^2 / (2 sigma_j^2)`` is the same for every class and cancels in the
posterior: naive Bayes is the linear classifier (:meth:`GaussianNaiveBayes.to_linear`)

    ``logits = x @ W.T + b``,  ``W_k = mu_k / sigma^2``,
    ``b_k = log pi_k - sum_j mu_kj^2 / (2 sigma_j^2)``,

whose softmax equals the naive-Bayes posterior and whose argmax its prediction.

The sufficient statistics (counts, means, sums of squared deviations ``M2_k``) merge
exactly (Chan, Golub and LeVeque's pairwise update), so :meth:`GaussianNaiveBayes.partial_fit`
over chunks gives the one-shot fit up to rounding, and a chunk may lack some classes.
Prediction needs every class to have at least one sample.

Arrays are numpy; computation is in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losskit._core.checks import check_number
from losskit._core.registry import register

VAR_FLOOR = 1e-9


@dataclass(frozen=True)
class NBStatistics:
    """Sufficient statistics per class: ``counts`` int64 ``[K]``, ``means`` float64
    ``[K, D]`` (zero for a class without samples) and ``sq_dev`` float64 ``[K, D]``, the sums
    of squared deviations from the class means."""

    counts: np.ndarray
    means: np.ndarray
    sq_dev: np.ndarray


def check_features(x: object, name: str = "x", dim: int | None = None) -> np.ndarray:
    """``x`` as a finite float64 array ``[N, D]`` with ``N >= 1`` (and ``D == dim``)."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, D] with N, D >= 1, got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} features, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return arr


def check_labels(y: object, n: int, num_classes: int, name: str = "y") -> np.ndarray:
    """``y`` as int64 ``[n]`` with values in ``[0, num_classes)``."""
    arr = np.asarray(y)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match x, got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)][0]
        raise ValueError(f"{name} holds class index {bad}, outside [0, {num_classes})")
    return arr.astype(np.int64)


def nb_statistics(x: object, y: object, num_classes: int) -> NBStatistics:
    """Counts, class means and sums of squared deviations of ``(x, y)`` in one pass per class."""
    xs = check_features(x)
    ys = check_labels(y, len(xs), num_classes)
    counts = np.bincount(ys, minlength=num_classes).astype(np.int64)
    means = np.zeros((num_classes, xs.shape[1]))
    sq_dev = np.zeros_like(means)
    for k in np.flatnonzero(counts):
        rows = xs[ys == k]
        means[k] = rows.mean(axis=0)
        sq_dev[k] = ((rows - means[k]) ** 2).sum(axis=0)
    return NBStatistics(counts, means, sq_dev)


def merge_nb_statistics(a: NBStatistics, b: NBStatistics) -> NBStatistics:
    """The statistics of the union of two samples (Chan et al.'s pairwise update):
    ``n = n_a + n_b``, ``delta = mu_b - mu_a``, ``mu = mu_a + delta n_b / n``,
    ``M2 = M2_a + M2_b + delta^2 n_a n_b / n`` (classes empty in both stay empty)."""
    if a.means.shape != b.means.shape:
        raise ValueError(
            f"statistics must have the same [K, D] shape, got {a.means.shape} and {b.means.shape}"
        )
    n = a.counts + b.counts
    safe = np.maximum(n, 1)[:, None].astype(np.float64)
    delta = b.means - a.means
    means = a.means + delta * (b.counts[:, None] / safe)
    sq_dev = a.sq_dev + b.sq_dev + delta**2 * (a.counts[:, None] * b.counts[:, None] / safe)
    return NBStatistics(n, means, sq_dev)


class GaussianNaiveBayes:
    """Gaussian naive Bayes with one variance per feature shared by the ``num_classes``
    classes (see the module docstring for the estimator). ``fit`` starts afresh,
    ``partial_fit`` adds a chunk; both return ``self``."""

    def __init__(self, num_classes: int, *, var_floor: float = VAR_FLOOR) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.var_floor = check_number("var_floor", var_floor, low=0.0, low_open=True)
        self.stats: NBStatistics | None = None

    def fit(self, x: object, y: object) -> GaussianNaiveBayes:
        """Fit on ``(x, y)`` from scratch."""
        self.stats = nb_statistics(x, y, self.num_classes)
        return self

    def partial_fit(self, x: object, y: object) -> GaussianNaiveBayes:
        """Add the chunk ``(x, y)`` to the statistics seen so far (exact merge)."""
        if self.stats is None:
            return self.fit(x, y)
        dim = self.stats.means.shape[1]
        xs = check_features(x, dim=dim)
        self.stats = merge_nb_statistics(self.stats, nb_statistics(xs, y, self.num_classes))
        return self

    def _fitted(self) -> NBStatistics:
        if self.stats is None:
            raise ValueError("the model is not fitted: call fit or partial_fit first")
        empty = np.flatnonzero(self.stats.counts == 0)
        if empty.size:
            raise ValueError(
                f"classes {empty.tolist()} have no samples; every class in "
                f"[0, {self.num_classes}) needs at least one before predicting"
            )
        return self.stats

    @property
    def priors(self) -> np.ndarray:
        """``pi_k = n_k / N``, float64 ``[K]``."""
        s = self._fitted()
        return s.counts / s.counts.sum()

    @property
    def means(self) -> np.ndarray:
        """Class means ``mu_k``, float64 ``[K, D]``."""
        return self._fitted().means.copy()

    @property
    def variance(self) -> np.ndarray:
        """Shared variance ``sigma^2 = sum_k M2_k / N + var_floor``, float64 ``[D]``."""
        s = self._fitted()
        return s.sq_dev.sum(axis=0) / s.counts.sum() + self.var_floor

    def joint_log_likelihood(self, x: object) -> np.ndarray:
        """``log p(x, y = k)`` with the Gaussian density written out, float64 ``[N, K]``."""
        mu, var, prior = self.means, self.variance, self.priors
        xs = check_features(x, dim=mu.shape[1])
        log_norm = np.log(2 * np.pi * var).sum()
        out = np.empty((len(xs), self.num_classes))
        for k in range(self.num_classes):
            out[:, k] = np.log(prior[k]) - 0.5 * (log_norm + ((xs - mu[k]) ** 2 / var).sum(1))
        return out

    def predict_log_proba(self, x: object) -> np.ndarray:
        """``log p(y = k | x)``: the joint log-likelihood minus its logsumexp over classes."""
        jll = self.joint_log_likelihood(x)
        top = jll.max(axis=1, keepdims=True)
        return jll - (top + np.log(np.exp(jll - top).sum(axis=1, keepdims=True)))

    def predict_proba(self, x: object) -> np.ndarray:
        """``p(y = k | x)``, float64 ``[N, K]``, rows sum to one."""
        return np.exp(self.predict_log_proba(x))

    def predict(self, x: object) -> np.ndarray:
        """``argmax_k log p(x, y = k)``, int64 ``[N]`` (ties to the lower class id)."""
        return self.joint_log_likelihood(x).argmax(axis=1).astype(np.int64)

    def to_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The equivalent linear classifier ``(W [K, D], b [K])``: ``W_k = mu_k / sigma^2``,
        ``b_k = log pi_k - sum_j mu_kj^2 / (2 sigma_j^2)``. ``x @ W.T + b`` differs from
        :meth:`joint_log_likelihood` by a per-row constant, so both give the same posterior."""
        mu, var = self.means, self.variance
        return mu / var, np.log(self.priors) - 0.5 * (mu**2 / var).sum(axis=1)


register(
    "gaussian_naive_bayes",
    kind="diagnostic",
    family="diagnostics",
    papers=(13,),
    summary="Shared-variance Gaussian naive Bayes head on frozen features: closed form, "
    "exact incremental fit, equivalent linear classifier.",
    defaults={"var_floor": VAR_FLOOR},
    module=GaussianNaiveBayes,
)
