"""Inductive bias (paper 30): the exact log-space tail of the scaled non-central chi-squared,
its fit, and Gaussian-process posterior hypotheses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from losskit.diagnostics.inductive_bias import (
    ScaledNcx2,
    fit_scaled_ncx2,
    inductive_bias,
    sankaran_inductive_bias,
)
from losskit.diagnostics.kernel_hypotheses import (
    class_targets,
    gp_hypothesis_errors,
    gp_posterior,
    gp_posterior_samples,
    prediction_errors,
    rbf_kernel,
)
from losskit.diagnostics.noncentral_chi2 import ncx2_logcdf, ncx2_logpdf

LAWS = [(5.0, 3.0, 0.1), (50.0, 200.0, 1.0), (3.0, 0.0, 2.0), (1.2, 30.0, 0.5), (400.0, 2.0, 1e-3)]


# ----------------------------------------------------------------------------- log tail


@pytest.mark.parametrize(("df", "nc", "scale"), LAWS)
def test_logcdf_matches_scipy_where_the_cdf_is_representable(df, nc, scale):
    mean = scale * (df + nc)
    x = mean * np.logspace(-2, 0.6, 60)
    direct = stats.ncx2.cdf(x, df, nc, scale=scale)
    # far below 1e-30 scipy's own CDF loses digits (at df 50, nc 200, x 0.26 it is off by
    # 3e-4 relative from a 40-digit evaluation), so it is the reference only above that
    ok = direct > 1e-30
    assert ok.sum() >= 20
    ours = ncx2_logcdf(x[ok], df, nc, scale)
    np.testing.assert_allclose(np.exp(ours), direct[ok], rtol=1e-10)


@pytest.mark.parametrize(("df", "nc", "scale"), [law for law in LAWS if law[0] >= 3])
def test_logcdf_is_finite_and_increasing_where_the_cdf_underflows(df, nc, scale):
    # F(x) ~ x^(df/2) near 0, so with df >= 3 it underflows float64 below x ~ 1e-205
    x = scale * np.logspace(-300, 0, 200) * (df + nc)
    ours = ncx2_logcdf(x, df, nc, scale)
    assert np.isfinite(ours).all()
    assert (np.diff(ours) > 0).all()
    assert (ours < 0).all()
    with np.errstate(divide="ignore"):
        assert np.isneginf(stats.ncx2.logcdf(x[:5], df, nc, scale=scale)).all()


def _mp_logcdf(mp, x: float, df: float, nc: float) -> float:
    """Slow reference: the Poisson mixture of regularised incomplete gammas in 40 digits."""
    mp.mp.dps = 40
    z, a, mu = mp.mpf(x) / 2, mp.mpf(df) / 2, mp.mpf(nc) / 2
    total = mp.mpf(0)
    for j in range(int(nc / 2 + 12 * math.sqrt(nc / 2) + 60)):
        weight = mp.exp(-mu + j * mp.log(mu) - mp.loggamma(j + 1))
        total += weight * mp.gammainc(a + j, 0, z, regularized=True)
    return float(mp.log(total))


@pytest.mark.parametrize(("df", "nc"), [(5.0, 3.0), (50.0, 200.0), (1.5, 40.0)])
def test_logcdf_matches_high_precision_in_the_deep_tail(df, nc):
    mp = pytest.importorskip("mpmath")
    for x in (1e-6, 1e-3, 0.05 * (df + nc), 0.3 * (df + nc)):
        assert ncx2_logcdf(x, df, nc)[()] == pytest.approx(_mp_logcdf(mp, x, df, nc), rel=1e-12)


def test_logpdf_matches_scipy_and_high_precision():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    x = np.logspace(-3, 3.5, 25)
    for df, nc in [(5.0, 3.0), (1.2, 300.0), (0.3, 0.2), (3000.0, 1e4)]:
        direct = stats.ncx2.logpdf(x, df, nc)
        ok = np.isfinite(direct)  # scipy's density underflows far below the bulk
        assert ok.sum() >= 5
        np.testing.assert_allclose(ncx2_logpdf(x, df, nc)[ok], direct[ok], rtol=1e-11)
    # scipy's logpdf is -inf everywhere for df 700, nc 0.5; the Bessel form in 40 digits
    df, nc = 700.0, 0.5
    for xi in (1.0, 300.0, 700.0, 2000.0):
        v, t = mp.mpf(df) / 2 - 1, mp.sqrt(mp.mpf(nc) * xi)
        ref = mp.log(mp.besseli(v, t) / 2) - (xi + nc) / 2 + v / 2 * mp.log(mp.mpf(xi) / nc)
        assert ncx2_logpdf(xi, df, nc)[()] == pytest.approx(float(ref), rel=1e-12)


def test_logcdf_is_the_integral_of_the_density():
    df, nc, scale = 7.0, 12.0, 0.3
    for x in (0.5, 3.0, 6.0):
        area, _ = integrate.quad(lambda t: math.exp(ncx2_logpdf(t, df, nc, scale)[()]), 0, x)
        assert math.exp(ncx2_logcdf(x, df, nc, scale)[()]) == pytest.approx(area, rel=1e-8)


# ----------------------------------------------------------------------------- IB and fit


def test_inductive_bias_is_monotone_vanishes_and_converts_units():
    law = ScaledNcx2(6.0, 4.0, 0.2)
    eps = np.linspace(1e-4, 40.0, 80)
    ib = inductive_bias(law, eps)
    assert (np.diff(ib) < 0).all() and (ib >= 0).all()
    assert ib[-1] < 1e-12
    np.testing.assert_allclose(inductive_bias(law, eps, unit="bits"), ib / math.log(2.0))


def test_reference_fallback_underestimates_the_tail():
    law = ScaledNcx2(5.0, 3.0, 0.1)
    exact = inductive_bias(law, 0.1)[()]
    assert exact == pytest.approx(-stats.ncx2.logcdf(0.1, 5.0, 3.0, scale=0.1), rel=1e-12)
    assert sankaran_inductive_bias(law, 0.1)[()] < 0.6 * exact
    # in the bulk Sankaran's z is a good normal approximation: Phi(-|z|) ~ F below the median
    x = np.array([0.4, 0.5, 0.6])
    z = np.sqrt(2.0 * sankaran_inductive_bias(law, x))
    np.testing.assert_allclose(stats.norm.cdf(-z), stats.ncx2.cdf(x, 5, 3, scale=0.1), rtol=0.02)


def _fisher_se(df: float, nc: float, scale: float, n: int) -> np.ndarray:
    """Standard errors of (df, nc, scale) at sample size n from the Fisher information,
    estimated by finite-difference scores on a large sample."""
    x = stats.ncx2.rvs(df, nc, scale=scale, size=100_000, random_state=np.random.default_rng(9))
    theta = np.array([df, nc, scale])
    scores = []
    for i in range(3):
        h = np.zeros(3)
        h[i] = 1e-5 * theta[i]
        scores.append((ncx2_logpdf(x, *(theta + h)) - ncx2_logpdf(x, *(theta - h))) / (2 * h[i]))
    info = np.cov(np.array(scores))
    return np.sqrt(np.diag(np.linalg.inv(info)) / n)


def test_fit_recovers_the_parameters_of_its_own_law():
    df, nc, scale, n = 4.0, 6.0, 0.05, 4000
    e = stats.ncx2.rvs(df, nc, scale=scale, size=n, random_state=np.random.default_rng(1))
    law = fit_scaled_ncx2(e)
    # stated tolerance: each parameter within 4 standard errors (Fisher information; the
    # shape (df vs nc) is weakly determined, about 10-15 % here), mean and std within 3 %
    se = _fisher_se(df, nc, scale, n)
    assert abs(law.df - df) < 4 * se[0]
    assert abs(law.nc - nc) < 4 * se[1]
    assert abs(law.scale - scale) < 4 * se[2]
    assert law.mean == pytest.approx(scale * (df + nc), rel=0.03)
    assert law.std == pytest.approx(scale * math.sqrt(2 * (df + 2 * nc)), rel=0.03)
    # a maximum of the likelihood: at least as likely as the true law
    assert law.log_likelihood >= ncx2_logpdf(e, df, nc, scale).mean() - 1e-9
    # and the tail it implies is close to the true one a little beyond the sample
    eps = np.quantile(e, 0.001)
    true_ib = -stats.ncx2.logcdf(eps, df, nc, scale=scale)
    assert inductive_bias(law, eps)[()] == pytest.approx(true_ib, rel=0.15)


def test_fit_is_scale_equivariant_and_matches_the_central_law():
    e = stats.chi2.rvs(3.0, scale=0.2, size=1500, random_state=np.random.default_rng(2))
    law, big = fit_scaled_ncx2(e), fit_scaled_ncx2(1000.0 * e)
    assert big.scale == pytest.approx(1000.0 * law.scale, rel=1e-5)
    assert (big.df, big.nc) == pytest.approx((law.df, law.nc), rel=1e-5, abs=1e-9)
    central_df, _, central_scale = stats.chi2.fit(e, floc=0)
    ll_central = stats.chi2.logpdf(e, central_df, scale=central_scale).mean()
    assert law.log_likelihood >= ll_central - 1e-9
    # the profile fit at shape nc / (df + nc) = 0 is the central chi-squared maximum
    central = fit_scaled_ncx2(e, shape=0.0)
    assert central.nc == 0.0
    assert (central.df, central.scale) == pytest.approx((central_df, central_scale), rel=1e-4)
    assert central.log_likelihood == pytest.approx(ll_central, abs=1e-9)
    ridge_end = fit_scaled_ncx2(e, shape=0.9)
    assert ridge_end.nc / (ridge_end.df + ridge_end.nc) == pytest.approx(0.9)
    assert law.log_likelihood >= ridge_end.log_likelihood - 1e-9


# ----------------------------------------------------------------------------- GP hypotheses


def _toy(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, 3))
    y = class_targets(rng.integers(0, 3, 12), 3)
    return x, y, rng.normal(size=(7, 3))


def test_rbf_kernel_matches_a_double_loop():
    x, _, xe = _toy()
    k = rbf_kernel(x, xe, lengthscale=1.7)
    for i in range(len(x)):
        for j in range(len(xe)):
            assert k[i, j] == pytest.approx(math.exp(-np.sum((x[i] - xe[j]) ** 2) / (2 * 1.7**2)))


def test_gp_posterior_matches_the_textbook_formula():
    x, y, xe = _toy()
    mean, cov = gp_posterior(x, y, xe, lengthscale=1.3, noise=0.1)
    k_inv = np.linalg.inv(rbf_kernel(x, x, lengthscale=1.3) + (0.01 + 1e-10) * np.eye(len(x)))
    ks = rbf_kernel(x, xe, lengthscale=1.3)
    np.testing.assert_allclose(mean, ks.T @ k_inv @ y, atol=1e-10)
    np.testing.assert_allclose(
        cov, rbf_kernel(xe, xe, lengthscale=1.3) - ks.T @ k_inv @ ks, atol=1e-10
    )


def test_gp_samples_interpolate_the_training_targets_at_zero_noise():
    x, y, xe = _toy()
    mean, cov = gp_posterior(x, y, x, lengthscale=1.0)
    np.testing.assert_allclose(mean, y, atol=1e-6)
    assert np.abs(cov).max() < 1e-8
    # sample deviations are of order sqrt(jitter) = 1e-5
    f = gp_posterior_samples(x, y, np.vstack([x, xe]), num_samples=50, lengthscale=1.0)
    assert np.abs(f[:, : len(x)] - y).max() < 1e-4
    assert f[:, len(x) :].std(axis=0).min() > 1e-3  # and vary away from them


def test_gp_samples_have_the_posterior_moments_and_the_expected_mse():
    x, y, xe = _toy(3)
    mean, cov = gp_posterior(x, y, xe, lengthscale=1.0)
    f = gp_posterior_samples(x, y, xe, num_samples=20000, lengthscale=1.0, seed=4)
    np.testing.assert_allclose(f.mean(axis=0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(f[:, :, 0].T), cov, atol=0.05)
    y_test = class_targets(np.arange(7) % 3, 3)
    mse, _ = gp_hypothesis_errors(x, y, xe, y_test, num_samples=20000, lengthscale=1.0, batch=999)
    expected = (((mean - y_test) ** 2).sum() + 3 * np.trace(cov)) / y_test.size
    assert abs(mse.mean() - expected) < 5 * mse.std() / math.sqrt(mse.size)


def test_prediction_errors_match_a_loop():
    rng = np.random.default_rng(5)
    f, y = rng.normal(size=(4, 6, 3)), class_targets(rng.integers(0, 3, 6), 3)
    mse, err = prediction_errors(f, y)
    for s in range(4):
        assert mse[s] == pytest.approx(
            np.mean([(f[s, i, c] - y[i, c]) ** 2 for i in range(6) for c in range(3)])
        )
        assert err[s] == pytest.approx(
            np.mean([np.argmax(f[s, i]) != np.argmax(y[i]) for i in range(6)])
        )
    yb = class_targets(np.array([0, 1, 1]), 2)
    assert yb[:, 0].tolist() == [-1.0, 1.0, 1.0]
    _, err_b = prediction_errors(np.array([[[0.5], [0.2], [-1.0]]]), yb)
    assert err_b[0] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_value_error():
    x, y, xe = _toy()
    bad = [
        lambda: ncx2_logcdf(1.0, 0.0, 1.0),
        lambda: ncx2_logcdf(1.0, 2.0, -1.0),
        lambda: ncx2_logcdf(-1.0, 2.0, 1.0),
        lambda: ncx2_logcdf(np.nan, 2.0, 1.0),
        lambda: ncx2_logcdf(1.0, 2.0, 1.0, scale=0.0),
        lambda: fit_scaled_ncx2([1.0, 2.0, 3.0]),
        lambda: fit_scaled_ncx2(np.ones(20)),
        lambda: fit_scaled_ncx2(np.r_[np.ones(19), -1.0]),
        lambda: fit_scaled_ncx2(np.ones((4, 5))),
        lambda: fit_scaled_ncx2(np.arange(1.0, 21.0), shape=1.0),
        lambda: inductive_bias(ScaledNcx2(2.0, 1.0, 1.0), 0.0),
        lambda: inductive_bias(ScaledNcx2(2.0, 1.0, 1.0), 1.0, unit="dits"),
        lambda: rbf_kernel(x, xe, lengthscale=0.0),
        lambda: rbf_kernel(x, xe[:, :2], lengthscale=1.0),
        lambda: gp_posterior(x, y[:5], xe, lengthscale=1.0),
        lambda: gp_posterior(
            np.vstack([x, x[:1]]), np.vstack([y, y[:1]]), xe, lengthscale=1.0, jitter=0.0
        ),
        lambda: gp_posterior(x, y, xe, lengthscale=1.0, noise=-1.0),
        lambda: gp_posterior_samples(x, y, xe, num_samples=0, lengthscale=1.0),
        lambda: gp_hypothesis_errors(x, y, xe, y[:3], num_samples=5, lengthscale=1.0),
        lambda: class_targets(np.array([0, 3]), 3),
        lambda: class_targets(np.array([0.0, 1.0]), 2),
        lambda: prediction_errors(np.zeros((2, 5, 3)), y),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()
