"""Intrinsic dataset properties of paper 22 (Konz & Mazurowski, "The Effect of Intrinsic
Dataset Properties on Generalization", ICLR 2024): intrinsic dimension and label sharpness.

Inputs are points ``x[N, ...]`` (NumPy array, torch tensor or nested lists; trailing axes are
flattened, so images ``[N, H, W, C]`` are points of ``R^{HWC}``), computed in float64. Results
are Python floats. ``T_j(x_i)`` is the Euclidean distance from ``x_i`` to its ``j``-th nearest
other point. Distances come from the expansion ``||a||^2 + ||b||^2 - 2 a.b`` of the centred
points in row chunks (no ``N x N`` matrix for ``N`` above the chunk); where it cancels
(a squared distance below ``1e-4 (||a||^2 + ||b||^2)``) the distance is recomputed from
``a - b``, as is the maximising pair of every row in label sharpness, so near-duplicates
get their true distance.

- **MLE** (Levina & Bickel, NeurIPS 2004), the estimator paper 22 uses for ``d_data`` and
  ``d_repr`` with ``k = 20``: per point ``u_i = 1/(k-2) sum_{j=1}^{k-1} log(T_k(x_i) /
  T_j(x_i))`` (the ``k - 2`` normalisation makes ``1/u_i`` unbiased; the paper's estimator
  code uses it too). ``average="inverse"`` (default) returns ``1 / mean_i u_i``, the
  MacKay & Ghahramani (2005) correction and the value the paper reports;
  ``average="mean"`` returns ``mean_i 1/u_i``, Levina & Bickel's average of local estimates.
- **TwoNN** (Facco, d'Errico, Rodriguez & Laio, Sci. Rep. 2017): with ``mu_i = T_2(x_i) /
  T_1(x_i)`` sorted ascending and ``F_i = i / N``, ``-log(1 - F_i) = d log(mu_i)`` is fitted
  by least squares through the origin after discarding the largest ``discard_fraction`` of
  the ``mu`` (Facco et al. discard 10 %; at least the last point, where ``F = 1``).
- **Label sharpness** (paper 22, Eq. 1): ``K_F = max_{j,k} |y_j - y_k| / ||x_j - x_k||``, the
  Lipschitz constant of the labelling on the sample; the paper evaluates it on ``M = 1000``
  randomly drawn training images. Integer labels use ``1[y_j != y_k]`` as the numerator,
  which is ``|y_j - y_k|`` for binary 0/1 labels and the max-norm of the difference of
  one-hot labels, so ``K_F = 1 / min ||x_j - x_k||`` over pairs with **different** labels
  (the reference code's multiclass branch uses same-label pairs instead, which measures
  something else). Floating labels use ``|y_j - y_k|``. All labels equal give ``K_F = 0``.
  ``K_F(c x) = K_F(x) / c``.

**Duplicate points** (identical rows) make ``T_1 = 0``, so the logarithms above are undefined.
``duplicates="raise"`` (default) raises ``ValueError`` naming two identical rows;
``duplicates="drop"`` keeps one copy of each distinct point before estimating a dimension. For
label sharpness, identical points with equal labels carry no information (0/0) and are always
skipped; identical points with different labels make ``K_F`` infinite: ``"raise"`` raises,
``"drop"`` skips those pairs (the maximum over the remaining pairs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register

_CHUNK = 1 << 22  # float64 entries per row chunk (32 MiB)
_LOOSE = 1e-4  # squared distances below this fraction of ||a||^2 + ||b||^2 are recomputed
DUPLICATES = ("raise", "drop")


def _points(x: Any, name: str = "x") -> np.ndarray:
    """``x`` as a finite float64 matrix ``[N, D]`` (trailing axes flattened, -0.0 -> 0.0)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers") from None
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    if a.ndim < 2 or a.shape[0] == 0 or a[0].size == 0:
        raise ValueError(f"{name} must have shape [N, D, ...] with N, D >= 1, got {a.shape}")
    a = a.reshape(a.shape[0], -1).astype(np.float64) + 0.0
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return np.ascontiguousarray(a)


def _groups(x: np.ndarray) -> np.ndarray:
    """Per row, the index of the first row identical to it (itself when unique)."""
    first: dict[int, list[int]] = {}
    out = np.arange(len(x))
    for i, row in enumerate(x):
        bucket = first.setdefault(hash(row.tobytes()), [])
        match = next((j for j in bucket if np.array_equal(x[j], row)), None)
        if match is None:
            bucket.append(i)
        else:
            out[i] = match
    return out


def _distinct(x: np.ndarray, duplicates: str) -> np.ndarray:
    check_choice("duplicates", duplicates, DUPLICATES)
    groups = _groups(x)
    keep = groups == np.arange(len(x))
    if keep.all():
        return x
    if duplicates == "raise":
        i = int(np.flatnonzero(~keep)[0])
        raise ValueError(
            f"x rows {int(groups[i])} and {i} are identical (zero distance); pass "
            "duplicates='drop' to keep one copy of each point"
        )
    return x[keep]


def _rows(chunk_size: int | None, per_row: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK // max(per_row, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
    check_number("chunk_size", chunk_size, low=1)
    return int(chunk_size)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def knn_distances(x: Any, k: int, *, chunk_size: int | None = None) -> np.ndarray:
    """Sorted distances ``T_1 <= ... <= T_k`` from each row to its ``k`` nearest other rows,
    float64 ``[N, k]`` (``1 <= k <= N - 1``); ``chunk_size`` rows are compared at a time."""
    a = _points(x)
    n = len(a)
    k = _int("k", k, 1)
    if k > n - 1:
        raise ValueError(f"k must be <= N - 1 = {n - 1}, got {k}")
    rows = _rows(chunk_size, n)
    c = a - a.mean(axis=0)  # centring shrinks the norms that the expansion cancels
    sq = np.einsum("ij,ij->i", c, c)
    out = np.empty((n, k))
    for s in range(0, n, rows):
        e = min(s + rows, n)
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (c[s:e] @ c.T)
        d2[np.arange(e - s), np.arange(s, e)] = np.inf  # a point is not its own neighbour
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        sel = np.take_along_axis(d2, idx, axis=1)
        r, j = np.nonzero(sel < _LOOSE * (sq[s:e, None] + sq[idx]))
        sel[r, j] = ((a[s + r] - a[idx[r, j]]) ** 2).sum(axis=1)  # exact where it cancels
        out[s:e] = np.sort(np.sqrt(np.maximum(sel, 0.0)), axis=1)
    return out


def mle_intrinsic_dim(
    x: Any,
    *,
    k: int = 20,
    average: str = "inverse",
    duplicates: str = "raise",
    chunk_size: int | None = None,
) -> float:
    """Levina-Bickel MLE of the intrinsic dimension with ``k`` neighbours (paper 22: 20).

    ``x[N, ...]`` with more than ``k`` distinct points, ``k >= 3``; ``average="inverse"``
    (MacKay-Ghahramani, the paper's value) or ``"mean"`` (Levina-Bickel); see the module.
    """
    k = _int("k", k, 3)
    check_choice("average", average, ("inverse", "mean"))
    a = _distinct(_points(x), duplicates)
    if len(a) <= k:
        raise ValueError(f"x must hold more than k = {k} distinct points, got {len(a)}")
    t = knn_distances(a, k, chunk_size=chunk_size)
    u = np.log(t[:, -1:] / t[:, :-1]).sum(axis=1) / (k - 2)
    if average == "inverse":
        if u.mean() <= 0:
            raise ValueError("every point has k equidistant neighbours: the MLE is infinite")
        return float(1.0 / u.mean())
    if (u <= 0).any():
        raise ValueError(
            f"x row {int(np.flatnonzero(u <= 0)[0])} has k equidistant neighbours, so its "
            "local estimate is infinite; use average='inverse'"
        )
    return float((1.0 / u).mean())


def twonn_intrinsic_dim(
    x: Any,
    *,
    discard_fraction: float = 0.1,
    duplicates: str = "raise",
    chunk_size: int | None = None,
) -> float:
    """TwoNN estimate of the intrinsic dimension (Facco et al. 2017).

    ``x[N, ...]`` with at least 3 distinct points; ``discard_fraction`` in ``[0, 1)`` of the
    largest ratios ``mu = T_2 / T_1`` is left out of the fit (Facco et al.: 0.1).
    """
    frac = check_number("discard_fraction", discard_fraction, low=0.0, high=1.0, high_open=True)
    a = _distinct(_points(x), duplicates)
    n = len(a)
    if n < 3:
        raise ValueError(f"x must hold at least 3 distinct points, got {n}")
    t = knn_distances(a, 2, chunk_size=chunk_size)
    mu = np.sort(t[:, 1] / t[:, 0])
    keep = min(int(np.floor(n * (1.0 - frac))), n - 1)
    logmu = np.log(mu[:keep])
    y = -np.log1p(-np.arange(1, keep + 1) / n)
    denom = float(logmu @ logmu)
    if keep == 0 or denom == 0.0:
        raise ValueError(
            "no ratio T_2 / T_1 above 1 is left to fit; lower discard_fraction or pass more points"
        )
    return float(logmu @ y) / denom


def _labels(y: Any, n: int) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    try:
        b = np.asarray(y)
    except (TypeError, ValueError):
        raise ValueError("y must be an array of numbers") from None
    if b.dtype.kind not in "biuf":
        raise ValueError(f"y must hold integer classes or real values, got dtype {b.dtype}")
    if b.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match x, got {b.shape}")
    if b.dtype.kind == "f" and not np.isfinite(b).all():
        raise ValueError("y must be finite, got NaN or Inf values")
    return b.astype(np.int64) if b.dtype.kind in "biu" else b.astype(np.float64)


def label_sharpness(
    x: Any, y: Any, *, duplicates: str = "raise", chunk_size: int | None = None
) -> float:
    """Label sharpness ``K_F = max_{j,k} |y_j - y_k| / ||x_j - x_k||`` (paper 22, Eq. 1).

    ``x[N, ...]`` points (N >= 2), ``y[N]`` integer classes (numerator ``1[y_j != y_k]``:
    pairs with different labels) or real values (numerator ``|y_j - y_k|``). Computed in row
    chunks of ``chunk_size`` rows against all N; see the module for duplicate points.
    """
    check_choice("duplicates", duplicates, DUPLICATES)
    a = _points(x)
    n = len(a)
    if n < 2:
        raise ValueError(f"x must hold at least 2 points, got {n}")
    lab = _labels(y, n)
    groups = _groups(a)
    c = a - a.mean(axis=0)
    sq = np.einsum("ij,ij->i", c, c)
    rows = _rows(chunk_size, n)
    best = 0.0
    for s in range(0, n, rows):
        e = min(s + rows, n)
        if lab.dtype == np.int64:
            num = (lab[s:e, None] != lab[None, :]).astype(np.float64)
        else:
            num = np.abs(lab[s:e, None] - lab[None, :])
        same = groups[s:e, None] == groups[None, :]
        clash = same & (num > 0)
        if duplicates == "raise" and clash.any():
            i, j = np.argwhere(clash)[0]
            raise ValueError(
                f"x rows {s + i} and {j} are identical but their labels differ, so K_F is "
                "infinite; pass duplicates='drop' to skip such pairs"
            )
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (c[s:e] @ c.T)
        np.maximum(d2, np.finfo(np.float64).tiny, out=d2)
        score = np.where(same | (num == 0), -1.0, num * num / d2)
        j = score.argmax(axis=1)
        hit = score[np.arange(e - s), j] > 0
        if hit.any():
            i = np.flatnonzero(hit)
            dist = np.sqrt(((a[s + i] - a[j[i]]) ** 2).sum(axis=1))
            best = max(best, float((num[i, j[i]] / dist).max()))
    return best


register(
    "mle_intrinsic_dim",
    kind="diagnostic",
    family="data",
    papers=(22,),
    summary="Levina-Bickel MLE of intrinsic dimension, MacKay-Ghahramani averaged (k = 20).",
    defaults={"k": 20, "average": "inverse"},
    function=mle_intrinsic_dim,
)
register(
    "twonn_intrinsic_dim",
    kind="diagnostic",
    family="data",
    papers=(22,),
    summary="TwoNN intrinsic dimension (Facco et al.): fit of the T2/T1 ratio distribution.",
    defaults={"discard_fraction": 0.1},
    function=twonn_intrinsic_dim,
)
register(
    "label_sharpness",
    kind="diagnostic",
    family="data",
    papers=(22,),
    summary="K_F = max |y_j - y_k| / ||x_j - x_k|| over pairs with different labels, chunked.",
    function=label_sharpness,
)
