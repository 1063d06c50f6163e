"""The scaled non-central chi-squared law ``X / scale ~ chi'^2(df, nc)`` in log space, exact
where its CDF and density underflow float64 (used by paper 30's inductive-bias estimate).

- :func:`ncx2_logcdf`: ``log F`` from the Poisson mixture

      F(y; k, lambda) = sum_j Pois(j; lambda / 2) P(k / 2 + j, y / 2),

  ``P`` the regularised lower incomplete gamma function, whose logarithm comes from
  ``scipy.special.gammainc`` where that is above ``1e-200`` and otherwise from the series
  ``log P(a, z) = a log z - z - log Gamma(a + 1) + log sum_n z^n / ((a + 1) ... (a + n))``;
  the terms are combined by ``logsumexp``. Above the median ``log F = log1p(-Q)`` with the
  upper functions ``Q``. The mixture keeps ``j <= lambda/2 + 12 sqrt(lambda/2) + 50``: beyond
  the Poisson mode the terms decrease, and the neglected rest is below ``1e-25`` of the sum.
  ``scipy.stats.ncx2.logcdf`` returns ``-inf`` below about ``1e-308`` and loses digits well
  before (at df 50, nc 200, x 0.26 it is off by 3e-4 relative).
- :func:`ncx2_logpdf`: ``log f(y) = -log 2 - (y + nc)/2 + (df/4 - 1/2) log(y / nc) +
  log I_{df/2-1}(sqrt(nc y))`` with ``log I`` from ``scipy.special.ive`` or, where that
  underflows, its power series in log space (``scipy.stats.ncx2.logpdf`` is ``-inf``
  everywhere at, e.g., df 700, nc 0.5).

Inputs are float64 arrays; SciPy (the arena extra) is imported on first use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from losskit._core.checks import check_number

_TINY = 1e-200  # below this, P(a, z) and I_v(t) e^-t come from their log-space series


def checked_array(
    x: Any, name: str, *, positive: bool = False, ndim: int | None = None
) -> np.ndarray:
    """``x`` as a finite float64 array (non-negative, or positive with ``positive``)."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    if (a <= 0).any() if positive else (a < 0).any():
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}")
    return a


def _log_terms(log_w: np.ndarray, a: np.ndarray, z: float) -> np.ndarray:
    """``log(w_j P(a_j, z))`` for ``z > 0``; terms below ``e^-60`` of the largest are ``-inf``.

    Where ``P(a, z) < 1e-200`` (so ``z < a``) the leading factor ``z^a e^-z / Gamma(a+1)``
    bounds ``P`` from below and, times ``1 / (1 - z/(a+1))``, from above; the series is summed
    only for the terms whose upper bound reaches the largest lower bound minus 60."""
    from scipy import special

    p = special.gammainc(a, z)
    out = log_w + np.log(np.maximum(p, _TINY))
    deep = p < _TINY
    if not deep.any():
        return out
    ad = a[deep]
    lead = log_w[deep] + ad * math.log(z) - z - special.gammaln(ad + 1.0)
    floor = max(float(lead.max()), float(out[~deep].max(initial=-math.inf))) - 60.0
    need = lead - np.log1p(-z / (ad + 1.0)) > floor
    ad = ad[need]
    term, total = np.ones_like(ad), np.ones_like(ad)
    n = 0
    while ad.size:
        n += 1
        term = term * z / (ad + n)
        total += term
        ratio = z / (ad + n + 1.0)
        if (term * ratio <= 1e-17 * total * (1.0 - ratio)).all():
            break
    deep_out = np.full(lead.shape, -math.inf)
    deep_out[need] = lead[need] + np.log(total)
    out[deep] = deep_out
    return out


def _logcdf_one(y: float, df: float, nc: float) -> float:
    """``log F(y; df, nc)`` of the unscaled non-central chi-squared law at one point."""
    from scipy import special

    if y <= 0.0:
        return -math.inf
    z, a = 0.5 * y, 0.5 * df
    mu = 0.5 * nc
    j = np.arange(int(mu + 12.0 * math.sqrt(mu) + 50.0) + 1 if nc > 0 else 1, dtype=np.float64)
    log_w = -mu + j * math.log(mu) - special.gammaln(j + 1.0) if nc > 0 else np.zeros(1)
    lower = float(special.logsumexp(_log_terms(log_w, a + j, z)))
    if lower < -math.log(2.0):
        return lower
    upper = float(np.sum(np.exp(log_w) * special.gammaincc(a + j, z)))
    return math.log1p(-upper)


def _params(df: float, nc: float, scale: float) -> tuple[float, float, float]:
    """Validated ``df > 0``, ``0 <= nc <= 1e8`` (the Poisson mixture's reach), ``scale > 0``."""
    return (
        check_number("df", df, low=0.0, low_open=True, high_open=True),
        check_number("nc", nc, low=0.0, high=1e8),
        check_number("scale", scale, low=0.0, low_open=True, high_open=True),
    )


def ncx2_logcdf(x: Any, df: float, nc: float, scale: float = 1.0) -> np.ndarray:
    """``log P(X <= x)`` for ``X / scale ~ chi'^2(df, nc)``, exact in log space (see the
    module docstring); ``-inf`` only at ``x = 0``. Returns float64 with the shape of ``x``."""
    df, nc, scale = _params(df, nc, scale)
    xs = checked_array(x, "x")
    flat = [_logcdf_one(v / scale, df, nc) for v in xs.reshape(-1)]
    return np.asarray(flat, dtype=np.float64).reshape(xs.shape)


def _log_bessel_i(v: float, t: np.ndarray) -> np.ndarray:
    """``log I_v(t)`` for ``v > -1``, ``t > 0``: ``log ive + t``, and where ``ive`` underflows
    (``v`` far above ``t``) the series ``I_v(t) = sum_m (t/2)^(2m+v) / (m! Gamma(v + m + 1))``
    summed outwards from its largest term ``m*`` (the terms are log-concave in ``m``) until
    the next term is below ``1e-17`` of the sum, on both sides."""
    from scipy import special

    r = special.ive(v, t)
    out = np.log(np.maximum(r, _TINY)) + t
    small = r < _TINY
    if small.any():
        q = 0.25 * t[small] ** 2
        mode = np.floor(0.5 * (np.sqrt(v * v + 4.0 * q) - v))
        total = np.ones_like(q)
        for direction in (1.0, -1.0):
            term, m = np.ones_like(q), mode.copy()
            while True:
                if direction > 0:
                    term = term * q / ((m + 1.0) * (v + m + 1.0))
                else:
                    term = np.where(m >= 1.0, term * m * (v + m) / q, 0.0)
                m += direction
                total += term
                if (term <= 1e-17 * total).all():
                    break
        log_top = mode * np.log(q) - special.gammaln(mode + 1.0) - special.gammaln(v + mode + 1.0)
        out[small] = v * np.log(0.5 * t[small]) + log_top + np.log(total)
    return out


def ncx2_logpdf(x: Any, df: float, nc: float, scale: float = 1.0) -> np.ndarray:
    """``log`` density of ``scale * chi'^2(df, nc)`` at ``x > 0``, finite in both tails:
    ``log f(y) = -log 2 - (y + nc)/2 + (df/4 - 1/2) log(y / nc) + log I_{df/2-1}(sqrt(nc y))``
    with ``y = x / scale`` (the central chi-squared log-density at ``nc = 0``)."""
    from scipy import stats

    df, nc, scale = _params(df, nc, scale)
    y = checked_array(x, "x", positive=True) / scale
    if nc == 0.0:
        return stats.chi2.logpdf(y, df) - math.log(scale)
    v = 0.5 * df - 1.0
    t = np.sqrt(nc * y)
    log_i = _log_bessel_i(v, t.reshape(-1)).reshape(t.shape)
    return -math.log(2.0) - 0.5 * (y + nc) + 0.5 * v * np.log(y / nc) + log_i - math.log(scale)
