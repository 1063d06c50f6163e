"""RCAL's distributional calibration (paper 32): robust per-class Gaussians of representations,
tail classes calibrated with their nearest head classes, and sampling from the result.

Given representations ``z_i`` (from unsupervised contrastive learning, so labels did not shape
them) and noisy labels ``y_i`` of a long-tailed training set:

1. **Outliers out** (mislabelled samples sit away from their labelled class): within each
   labelled class, the Local Outlier Factor (Breunig et al. 2000) with ``k`` neighbours,
   ``k = min(n_neighbors, n_c - 1)``::

       k-dist(o) = distance from o to its k-th nearest neighbour
       reach(p, o) = max(k-dist(o), ||p - o||)
       lrd(p) = 1 / (mean_{o in N_k(p)} reach(p, o) + 1e-10)
       LOF(p) = mean_{o in N_k(p)} lrd(o) / lrd(p)

   exactly scikit-learn's ``LocalOutlierFactor.negative_outlier_factor_`` (negated; tested).
   A sample with ``LOF > threshold`` is dropped; ``threshold = 1.5`` is scikit-learn's
   ``contamination="auto"`` rule. With ``contamination = f`` the threshold is instead the
   class's ``100 (1 - f)``-th LOF percentile (scikit-learn's ``contamination=f``; tested), so
   about a fraction ``f`` of every class goes. With the threshold rule a class keeps at least
   its densest sample (that sample's LOF is at most 1). In hundreds of dimensions LOF values
   crowd around 1 and the 1.5 rule drops next to nothing; ``contamination`` still ranks.
2. **Gaussians**: per class, the mean ``mu_c`` and the unbiased covariance ``Sigma_c``
   (``n_c - 1`` in the denominator; zero for a single sample) of the kept representations.
3. **Tail calibration**: the ``num_head`` classes with the most labelled samples are the
   head (ties: smaller class id first), the others the tail. A tail class ``k`` borrows from
   the ``q`` head classes ``C_k^q`` whose means are nearest to ``mu_k`` in Euclidean
   distance (ties: smaller class id)::

       mu'_k    = (mu_k + sum_{j in C_k^q} mu_j) / (q + 1)
       Sigma'_k = (Sigma_k + sum_{j in C_k^q} Sigma_j) / (q + 1) + alpha I

   Head classes keep their estimates; ``q = 0`` with ``alpha = 0`` leaves every estimate as
   it is.
4. **Sampling**: ``x = mu'_c + L_c e``, ``e ~ N(0, I)``, ``L_c = V_c sqrt(max(w_c, 0))`` from
   the eigendecomposition ``Sigma'_c = V_c diag(w_c) V_c^T`` (works for the singular
   covariances of small classes).

Provenance: the steps (LOF, per-class Gaussians, top-``q`` head classes by the distance of
the means, averaging with them, sampling) follow the paper's text; its equations could not
be read and no reference code is public, so the averaging with weight ``1 / (q + 1)``, the
ridge ``alpha I`` (the form of "Free Lunch for Few-Shot Learning", which the paper builds
on, adds a constant) and the head/tail split by ``num_head`` (default ``C // 2``) are
losskit's reading. Everything here is float64 (NumPy, with the matrix products and the
eigendecomposition done by torch, which keeps to its own thread setting).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit.labels.noise import check_class_labels, check_num_classes

LOF_THRESHOLD = 1.5  # scikit-learn's contamination="auto"


def _features(z: Tensor | np.ndarray, name: str = "z") -> np.ndarray:
    a = z.detach().cpu().numpy() if isinstance(z, Tensor) else np.asarray(z)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be representations of shape [N, D], got {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return a


def _int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _labels(y: Tensor | np.ndarray, n: int, num_classes: int) -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    a = check_class_labels(a, num_classes, name="labels")
    if a.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) like the representations, got {a.shape}")
    return a


def local_outlier_factor(z: Tensor | np.ndarray, *, n_neighbors: int = 20) -> np.ndarray:
    """LOF of every row of ``z[N, D]`` (``N >= 2``) among the others, float64 ``[N]``;
    about 1 inside a cluster, larger for isolated points. See the module docstring."""
    a = _features(z)
    if len(a) < 2:
        raise ValueError(f"z needs at least 2 rows for the local outlier factor, got {len(a)}")
    k = min(_int("n_neighbors", n_neighbors, 1), len(a) - 1)
    t = torch.from_numpy(a)
    d = torch.cdist(t, t, compute_mode="donot_use_mm_for_euclid_dist").numpy()
    np.fill_diagonal(d, np.inf)
    nbr = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, nbr, axis=1)
    reach = np.maximum(dist, dist[:, -1][nbr])
    lrd = 1.0 / (reach.mean(axis=1) + 1e-10)
    return (lrd[nbr] / lrd[:, None]).mean(axis=1)


def lof_inliers(
    z: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int,
    *,
    n_neighbors: int = 20,
    threshold: float = LOF_THRESHOLD,
    contamination: float | None = None,
) -> np.ndarray:
    """Boolean ``[N]``: ``True`` where the sample's LOF within its labelled class is at most
    ``threshold`` (or, with ``contamination`` in ``(0, 0.5]``, at most the class's
    ``100 (1 - contamination)``-th LOF percentile). A class with one sample keeps it."""
    a = _features(z)
    y = _labels(labels, len(a), check_num_classes(num_classes))
    th = check_number("threshold", threshold, low=1.0)
    if contamination is not None:
        contamination = check_number("contamination", contamination, low=0.0, high=0.5,
                                     low_open=True)  # fmt: skip
    _int("n_neighbors", n_neighbors, 1)
    keep = np.ones(len(a), dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if idx.size > 1:
            lof = local_outlier_factor(a[idx], n_neighbors=n_neighbors)
            cut = th if contamination is None else np.percentile(lof, 100 * (1 - contamination))
            keep[idx] = lof <= cut
    return keep


def class_gaussians(
    z: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int,
    *,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class mean ``[C, D]``, unbiased covariance ``[C, D, D]`` and count ``[C]`` of the
    rows of ``z`` with ``keep`` (all rows by default). Every class needs a kept row."""
    a = _features(z)
    y = _labels(labels, len(a), check_num_classes(num_classes))
    if keep is not None:
        keep = np.asarray(keep)
        if keep.shape != (len(a),) or keep.dtype != bool:
            raise ValueError(f"keep must be a boolean mask of shape ({len(a)},)")
        a, y = a[keep], y[keep]
    counts = np.bincount(y, minlength=num_classes)
    if counts.min() == 0:
        raise ValueError(f"class {int(counts.argmin())} has no sample to estimate its Gaussian")
    d = a.shape[1]
    means = np.zeros((num_classes, d))
    covs = np.zeros((num_classes, d, d))
    for c in range(num_classes):
        zc = a[y == c]
        means[c] = zc.mean(axis=0)
        if len(zc) > 1:
            centred = torch.from_numpy(zc - means[c])
            covs[c] = (centred.T @ centred).numpy() / (len(zc) - 1)
    return means, covs, counts.astype(np.int64)


@dataclass(frozen=True)
class ClassGaussians:
    """Calibrated per-class Gaussians: ``means[C, D]``, ``covariances[C, D, D]``,
    ``counts[C]`` (samples behind each estimate), ``tail[C]`` (calibrated classes) and
    ``borrowed[C, q]`` (the head classes a tail class averaged with; ``-1`` on head rows)."""

    means: np.ndarray
    covariances: np.ndarray
    counts: np.ndarray
    tail: np.ndarray
    borrowed: np.ndarray


def calibrate_tail(
    means: np.ndarray,
    covariances: np.ndarray,
    class_sizes: np.ndarray,
    *,
    q: int = 1,
    num_head: int | None = None,
    alpha: float = 0.0,
    counts: np.ndarray | None = None,
) -> ClassGaussians:
    """Average each tail class's mean and covariance with those of its ``q`` nearest head
    classes (by the distance of the means) and add ``alpha I`` to the tail covariances.
    ``class_sizes[C]`` decide the head (the ``num_head`` largest, default ``C // 2``);
    ``counts`` (default ``class_sizes``) are stored in the result."""
    mu = _features(means, "means")
    c, d = mu.shape
    cov = np.asarray(covariances, dtype=np.float64)
    if cov.shape != (c, d, d) or not np.isfinite(cov).all():
        raise ValueError(f"covariances must be finite of shape {(c, d, d)}, got {cov.shape}")
    sizes = np.asarray(class_sizes)
    if sizes.shape != (c,) or not np.issubdtype(sizes.dtype, np.number) or (sizes < 0).any():
        raise ValueError(f"class_sizes must be {c} non-negative numbers, got {sizes}")
    heads = c // 2 if num_head is None else _int("num_head", num_head, 1)
    if not 1 <= heads <= c:
        raise ValueError(f"num_head must be in [1, {c}], got {heads}")
    q = _int("q", q, 0)
    if q > heads:
        raise ValueError(f"q must be at most num_head={heads} (head classes to borrow from)")
    ridge = check_number("alpha", alpha, low=0.0)
    order = np.lexsort((np.arange(c), -sizes.astype(np.float64)))
    head = np.sort(order[:heads])
    tail = np.zeros(c, dtype=bool)
    tail[order[heads:]] = True
    out_mu, out_cov = mu.copy(), cov.copy()
    borrowed = np.full((c, q), -1, dtype=np.int64)
    for k in np.flatnonzero(tail):
        dist = ((mu[head] - mu[k]) ** 2).sum(axis=1)
        near = head[np.lexsort((head, dist))[:q]]
        borrowed[k] = near
        out_mu[k] = (mu[k] + mu[near].sum(axis=0)) / (q + 1)
        out_cov[k] = (cov[k] + cov[near].sum(axis=0)) / (q + 1) + ridge * np.eye(d)
    kept = sizes if counts is None else np.asarray(counts)
    return ClassGaussians(out_mu, out_cov, kept.astype(np.int64), tail, borrowed)


def robust_class_gaussians(
    z: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int,
    *,
    lof_neighbors: int = 20,
    lof_threshold: float | None = LOF_THRESHOLD,
    lof_contamination: float | None = None,
    q: int = 1,
    num_head: int | None = None,
    alpha: float = 0.0,
) -> tuple[ClassGaussians, np.ndarray]:
    """Steps 1-3 of the module docstring: ``(calibrated Gaussians, inlier mask [N])``.
    ``lof_threshold=None`` keeps every sample (unless ``lof_contamination`` is given, which
    replaces the threshold rule); the head is chosen by labelled class size."""
    a = _features(z)
    y = _labels(labels, len(a), check_num_classes(num_classes))
    if lof_threshold is None and lof_contamination is None:
        keep = np.ones(len(a), dtype=bool)
    else:
        keep = lof_inliers(
            a, y, num_classes, n_neighbors=lof_neighbors,
            threshold=LOF_THRESHOLD if lof_threshold is None else lof_threshold,
            contamination=lof_contamination,
        )  # fmt: skip
    means, covs, counts = class_gaussians(a, y, num_classes, keep=keep)
    sizes = np.bincount(y, minlength=num_classes)
    stats = calibrate_tail(means, covs, sizes, q=q, num_head=num_head, alpha=alpha, counts=counts)
    return stats, keep


def sample_class_gaussians(
    gaussians: ClassGaussians,
    per_class: int | np.ndarray,
    rng: np.random.Generator | int,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` draws (an int, or one count per class) from every class's Gaussian:
    ``(x float64 [M, D], y int64 [M])``, classes in order."""
    mu, cov = gaussians.means, gaussians.covariances
    c = len(mu)
    n = np.asarray(per_class)
    if n.shape not in ((), (c,)) or not np.issubdtype(n.dtype, np.integer) or (n < 0).any():
        raise ValueError(f"per_class must be non-negative integers (one or {c}), got {per_class}")
    n = np.broadcast_to(n, (c,))
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    xs, ys = [], []
    for k in range(c):
        w, v = torch.linalg.eigh(torch.from_numpy(cov[k]))
        factor = v * w.clamp(min=0.0).sqrt()
        e = torch.from_numpy(gen.standard_normal((int(n[k]), mu.shape[1])))
        xs.append(mu[k] + (e @ factor.T).numpy())
        ys.append(np.full(int(n[k]), k, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)
