"""Shared-variance Gaussian naive Bayes (paper 13) and the learning-curve helper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from losskit.diagnostics.generative_linear import (
    GaussianNaiveBayes,
    merge_nb_statistics,
    nb_statistics,
)
from losskit.diagnostics.learning_curves import (
    learning_curves,
    logistic_probe,
    minmax_scale,
)


def _data(seed=0, n=60, d=5, k=3):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]  # every class present
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + 2.0 * y[:, None]
    return x, y


def _slow_reference(x, y, k, floor):
    """Loops over samples and features: priors, means, pooled variance, log p(x, y = k)."""
    n, d = len(x), len(x[0])
    counts = [sum(1 for yi in y if yi == c) for c in range(k)]
    means = [[sum(x[i][j] for i in range(n) if y[i] == c) / counts[c] for j in range(d)]
             for c in range(k)]  # fmt: skip
    var = []
    for j in range(d):
        ss = sum((x[i][j] - means[y[i]][j]) ** 2 for i in range(n))
        var.append(ss / n + floor)
    # the paper's form: prior-weighted average of per-class population variances
    for j in range(d):
        per_class = [
            sum((x[i][j] - means[c][j]) ** 2 for i in range(n) if y[i] == c) / counts[c]
            for c in range(k)
        ]
        assert math.isclose(var[j], sum(counts[c] / n * per_class[c] for c in range(k)) + floor)

    def jll(row):
        return [
            math.log(counts[c] / n)
            - 0.5
            * sum(
                math.log(2 * math.pi * var[j]) + (row[j] - means[c][j]) ** 2 / var[j]
                for j in range(d)
            )  # fmt: skip
            for c in range(k)
        ]

    return [c / n for c in counts], means, var, jll


@pytest.mark.parametrize("floor", [1e-9, 0.5])
def test_matches_slow_loop_reference(floor):
    x, y = _data(seed=1)
    xq = np.random.default_rng(2).normal(size=(7, 5)) * 3
    nb = GaussianNaiveBayes(3, var_floor=floor).fit(x, y)
    priors, means, var, jll = _slow_reference(x.tolist(), y.tolist(), 3, floor)
    np.testing.assert_allclose(nb.priors, priors, rtol=1e-12)
    np.testing.assert_allclose(nb.means, means, rtol=1e-12)
    np.testing.assert_allclose(nb.variance, var, rtol=1e-12)
    want = np.array([jll(r) for r in xq.tolist()])
    np.testing.assert_allclose(nb.joint_log_likelihood(xq), want, rtol=1e-12)
    post = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(nb.predict_proba(xq), post / post.sum(1, keepdims=True), atol=1e-12)
    assert (nb.predict(xq) == want.argmax(1)).all()


def test_equals_its_closed_form_linear_classifier():
    x, y = _data(seed=3, n=200, d=8, k=4)
    xq = np.random.default_rng(4).normal(size=(50, 8)) * 4
    nb = GaussianNaiveBayes(4).fit(x, y)
    w, b = nb.to_linear()
    var = nb.variance
    logits = xq @ w.T + b
    # W_k = mu_k / sigma^2, b_k = log pi_k - sum_j mu_kj^2 / (2 sigma_j^2)
    np.testing.assert_allclose(w, nb.means / var, rtol=1e-12)
    # the joint log-likelihood minus the linear logits is the class-independent constant
    const = -0.5 * ((xq**2 / var).sum(1) + np.log(2 * np.pi * var).sum())
    diff = nb.joint_log_likelihood(xq) - logits
    np.testing.assert_allclose(diff, np.repeat(const[:, None], 4, axis=1), rtol=1e-10)
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    np.testing.assert_allclose(nb.predict_log_proba(xq), log_softmax, atol=1e-10)
    assert (nb.predict(xq) == logits.argmax(1)).all()
    assert len(set(nb.predict(xq).tolist())) > 1  # a non-trivial decision


def test_incremental_fit_equals_one_shot():
    x, y = _data(seed=5, n=301, d=6, k=4)
    one = GaussianNaiveBayes(4).fit(x, y)
    inc = GaussianNaiveBayes(4)
    # uneven chunks; the first misses class 3, one holds a single sample
    order = np.r_[np.flatnonzero(y != 3), np.flatnonzero(y == 3)]
    for part in np.split(order, [40, 41, 150, 260]):
        inc.partial_fit(x[part], y[part])
    assert (inc.stats.counts == one.stats.counts).all()
    for attr in ("priors", "means", "variance"):
        np.testing.assert_allclose(getattr(inc, attr), getattr(one, attr), rtol=1e-12)
    np.testing.assert_allclose(inc.stats.sq_dev, one.stats.sq_dev, rtol=1e-10)
    w1, b1 = one.to_linear()
    w2, b2 = inc.to_linear()
    np.testing.assert_allclose(w2, w1, rtol=1e-10)
    np.testing.assert_allclose(b2, b1, rtol=1e-10)
    # merge is symmetric and fit() starts afresh
    a, b = nb_statistics(x[:100], y[:100], 4), nb_statistics(x[100:], y[100:], 4)
    ab, ba = merge_nb_statistics(a, b), merge_nb_statistics(b, a)
    np.testing.assert_allclose(ab.means, ba.means, rtol=1e-12)
    np.testing.assert_allclose(ab.sq_dev, ba.sq_dev, rtol=1e-12)
    inc.fit(x[:100], y[:100])
    assert inc.stats.counts.sum() == 100


def test_one_sample_per_class_is_nearest_mean():
    """Zero within-class variance: the floor makes every feature's variance equal, so naive
    Bayes with equal priors is the nearest class mean (Euclidean)."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(3, 4)), np.arange(3)
    nb = GaussianNaiveBayes(3).fit(x, y)
    np.testing.assert_allclose(nb.variance, 1e-9)
    xq = rng.normal(size=(40, 4))
    nearest = ((xq[:, None] - x[None]) ** 2).sum(-1).argmin(1)
    assert (nb.predict(xq) == nearest).all()
    p = nb.predict_proba(xq)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)


def test_bad_input():
    x, y = _data()
    with pytest.raises(ValueError, match="num_classes"):
        GaussianNaiveBayes(1)
    with pytest.raises(ValueError, match="var_floor"):
        GaussianNaiveBayes(3, var_floor=0.0)
    nb = GaussianNaiveBayes(3)
    with pytest.raises(ValueError, match="not fitted"):
        nb.predict(x)
    with pytest.raises(ValueError, match="shape"):
        nb.fit(x[:, 0], y)
    with pytest.raises(ValueError, match="shape"):
        nb.fit(x, y[:-1])
    with pytest.raises(ValueError, match="outside"):
        nb.fit(x, np.where(y == 2, 3, y))
    with pytest.raises(ValueError, match="integer"):
        nb.fit(x, y.astype(float))
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        nb.fit(bad, y)
    with pytest.raises(ValueError, match="shape"):
        nb.fit(x[:0], y[:0])
    nb.fit(x[y != 1], y[y != 1])  # a class with no samples: fitting is fine ...
    with pytest.raises(ValueError, match=r"classes \[1\] have no samples"):
        nb.predict(x)  # ... predicting is not
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        nb.to_linear()
    nb.fit(x, y)
    with pytest.raises(ValueError, match="5 features"):
        nb.predict(x[:, :4])
    with pytest.raises(ValueError, match="5 features"):
        nb.partial_fit(x[:, :4], y)
    with pytest.raises(ValueError, match="finite"):
        nb.predict(bad)


def test_minmax_and_logistic_probe():
    x, y = _data(seed=7)
    lo, hi = minmax_scale(x[:, :3], x[:5, :3] + 100)
    np.testing.assert_allclose(lo.min(0), 0)
    np.testing.assert_allclose(lo.max(0), 1)
    assert (hi > 1).all()
    const = np.c_[x[:, :1], np.full(len(x), 3.0)]
    np.testing.assert_allclose(minmax_scale(const)[0][:, 1], 0.0)  # constant -> range 1
    model = logistic_probe(x, y)
    assert model.C == 1.0 and model.max_iter == 1000 and model.solver == "lbfgs"
    assert (model.predict(x) == y).mean() > 0.8
    with pytest.raises(ValueError, match="C must"):
        logistic_probe(x, y, C=0)
    with pytest.raises(ValueError, match="two classes"):
        logistic_probe(x, np.zeros(len(x), dtype=int))
    with pytest.raises(ValueError, match="max_iter"):
        logistic_probe(x, y, max_iter=0)


def test_learning_curves_protocol():
    """Errors equal a hand-run of the protocol: nested per-class prefixes, min-max on the
    subset, both heads; a class smaller than n gives all it has."""
    x, y = _data(seed=8, n=90, d=4, k=3)
    y[y == 2] = 1
    y[:4] = 2  # class 2 has 4 samples
    xt, yt = _data(seed=9, n=40, d=4, k=3)
    c = learning_curves(x, y, xt, yt, (1, 3, 10), seeds=(11, 12), scale="minmax")
    counts = np.bincount(y)
    assert c.train_sizes == tuple(int(np.minimum(counts, n).sum()) for n in (1, 3, 10))
    for i, seed in enumerate((11, 12)):
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(np.flatnonzero(y == k)) for k in range(3)]
        for s, n in enumerate((1, 3, 10)):
            idx = np.concatenate([o[:n] for o in orders])
            xa, xb = minmax_scale(x[idx], xt)
            nb = GaussianNaiveBayes(3).fit(xa, y[idx])
            assert c.errors["naive_bayes"][i, s] == (nb.predict(xb) != yt).mean()
            lr = logistic_probe(xa, y[idx])
            assert c.errors["logistic"][i, s] == (lr.predict(xb) != yt).mean()
    assert c.mean("logistic").shape == (3,) and c.std("naive_bayes").shape == (3,)


def test_learning_curves_bad_input():
    x, y = _data()
    with pytest.raises(ValueError, match="sizes"):
        learning_curves(x, y, x, y, (5, 2))
    with pytest.raises(ValueError, match="sizes"):
        learning_curves(x, y, x, y, (0, 2))
    with pytest.raises(ValueError, match="scale"):
        learning_curves(x, y, x, y, (1,), scale="zscore")
    with pytest.raises(ValueError, match="x_test must have 5 features"):
        learning_curves(x, y, x[:, :4], y, (1,))
    with pytest.raises(ValueError, match="every class"):
        learning_curves(x, np.where(y == 1, 2, y), x, y, (1,))
    with pytest.raises(ValueError, match="seeds"):
        learning_curves(x, y, x, y, (1,), seeds=())
    with pytest.raises(ValueError, match="y_test holds class index 7"):
        learning_curves(x, y, x, np.full(len(x), 7), (1,))
