"""Paper 36's large-step LR+GD, Batch Perceptron and Normalized LR+GD against slow loops,
finite differences and the paper's theorems (3.2, 3.3, 4.1, 5.1, 5.3, 6.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import losskit
from losskit.diagnostics.large_step_data import (
    is_linearly_separable,
    max_margin,
    nonseparable_dataset,
    separable_dataset,
    worst_case_dataset,
)
from losskit.diagnostics.large_step_gd import (
    METHODS,
    logistic_gradient,
    logistic_loss,
    perceptron_agreement,
    run_large_step_gd,
    signed_labels,
)


def _sigma(u: float) -> float:
    return 1.0 / (1.0 + math.exp(-u)) if u > -700 else 0.0


def _slow_step(a, y, w, method, gamma, t):
    """One step of each method written from the paper's formulas with Python loops."""
    n, d = a.shape
    m = [y[i] * sum(a[i, k] * w[k] for k in range(d)) for i in range(n)]
    if method in ("gd", "normalized_gd"):
        grad = [-sum(_sigma(-m[i]) * y[i] * a[i, k] for i in range(n)) / n for k in range(d)]
        beta = 1.0 if method == "gd" else 1.0 / (sum(_sigma(-mi) for mi in m) / n)
        return np.array([w[k] - gamma * beta * grad[k] for k in range(d)])
    if method == "batch_perceptron" and t == 0:
        return w + gamma * sum(y[i] * a[i] for i in range(n)) / (2 * n)
    s = [i for i in range(n) if m[i] <= 0]
    if not s:
        return w.copy()
    scale = n if method == "batch_perceptron" else len(s)
    return w + gamma * sum(y[i] * a[i] for i in s) / scale


def _grid_margin(a, y, k=200_000):
    """Brute-force 2-D max-margin over ``k`` directions (a lower bound on mu)."""
    th = np.linspace(0.0, 2 * np.pi, k, endpoint=False)
    z = np.unique(y[:, None] * a, axis=0)
    return float((z @ np.stack([np.cos(th), np.sin(th)])).min(axis=0).max())


@pytest.fixture
def data():
    """Separable 2-D data that one step does not solve."""
    return separable_dataset(60, 2, margin=0.05, seed=2)


# ---------------------------------------------------------------- formulas


def test_loss_and_gradient_match_loops_and_finite_differences():
    rng = np.random.default_rng(0)
    a, y, w = rng.normal(size=(9, 4)), rng.choice([-1.0, 1.0], 9), rng.normal(size=4)
    slow = sum(math.log1p(math.exp(-y[i] * float(a[i] @ w))) for i in range(9)) / 9
    assert logistic_loss(a, y, w) == pytest.approx(slow, rel=1e-13)
    h, grad = 1e-6, logistic_gradient(a, y, w)
    fd = [
        (logistic_loss(a, y, w + h * e) - logistic_loss(a, y, w - h * e)) / (2 * h)
        for e in np.eye(4)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_steps_match_slow_loops(method):
    rng = np.random.default_rng(1)
    a, y = rng.normal(size=(8, 3)), rng.choice([-1.0, 1.0], 8)
    run = run_large_step_gd(
        a, y, method=method, gamma=2.5, max_iter=6, stop_at_separation=False, keep_iterates=True
    )
    w = np.zeros(3)
    for t in range(6):
        w = _slow_step(a, y, w, method, 2.5, t)
        np.testing.assert_allclose(run.iterates[t + 1], w, rtol=1e-12, atol=1e-12)
    margins = (y[:, None] * a) @ run.iterates.T
    np.testing.assert_array_equal(run.misclassified, (margins <= 0).sum(axis=0))
    assert run.losses[3] == pytest.approx(logistic_loss(a, y, run.iterates[3]), rel=1e-14)


def test_labels_zero_one_equal_minus_one_plus_one(data):
    a, y = data
    y01 = ((y + 1) / 2).astype(int)
    np.testing.assert_array_equal(signed_labels(y01), y)
    for method in METHODS:
        r1 = run_large_step_gd(a, y, method=method, gamma=3.0, max_iter=50)
        r2 = run_large_step_gd(a, y01, method=method, gamma=3.0, max_iter=50)
        np.testing.assert_array_equal(r1.w, r2.w)
        assert r1.iterations == r2.iterations


# ---------------------------------------------------------------- the paper's properties


@pytest.mark.parametrize("normalized", [False, True])
def test_large_step_gd_follows_the_batch_perceptron(data, normalized):
    """Theorem 3.2 (and its Normalized analogue): same sets S_t, w_t / gamma -> theta_t."""
    a, y = data
    prefix = "normalized_" if normalized else ""
    gamma = 1e8
    gd = run_large_step_gd(a, y, method=prefix + "gd", gamma=gamma, keep_iterates=True)
    bp = run_large_step_gd(a, y, method=prefix + "batch_perceptron", keep_iterates=True)
    assert bp.iterations is not None and bp.iterations >= 3
    assert gd.iterations == bp.iterations
    z = y[:, None] * a
    np.testing.assert_array_equal(np.sign(gd.iterates @ z.T), np.sign(bp.iterates @ z.T))
    np.testing.assert_allclose(gd.iterates / gamma, bp.iterates, rtol=1e-9, atol=1e-12)
    agree = perceptron_agreement(a, y, gamma, max_iter=200, normalized=normalized)
    assert agree == bp.iterations + 1
    assert perceptron_agreement(a, y, 1e-2, max_iter=200, normalized=normalized) < agree


@pytest.mark.parametrize("method", ["batch_perceptron", "normalized_batch_perceptron"])
def test_perceptron_step_scale_only_scales_the_iterates(data, method):
    a, y = data
    r1 = run_large_step_gd(a, y, method=method, gamma=1.0, keep_iterates=True)
    r7 = run_large_step_gd(a, y, method=method, gamma=7.0, keep_iterates=True)
    np.testing.assert_allclose(r7.iterates, 7.0 * r1.iterates, rtol=1e-14)


def test_theorem_4_1_high_loss_then_solved():
    """The paper's two-point example: f(theta_1) -> inf, theta_2 / gamma solves (1)."""
    a, y = np.array([[1.0, -1.0], [-1.0, -4.0]]), np.array([1.0, -1.0])
    losses = []
    for gamma in (1e2, 1e4, 1e6):
        run = run_large_step_gd(a, y, gamma=gamma, keep_iterates=True)
        assert run.iterations == 2 and run.misclassified[1] > 0
        assert run.losses[1] >= gamma / 8 and run.losses[2] < 1e-6
        losses.append(run.losses[1])
        theta_1 = _slow_step(a, y, np.zeros(2), "batch_perceptron", 1.0, 0)
        limit = _slow_step(a, y, theta_1, "batch_perceptron", 1.0, 1)
        np.testing.assert_allclose(run.iterates[2] / gamma, limit, rtol=1e-8)
    assert losses[0] < losses[1] < losses[2]


def test_theorem_5_1_batch_perceptron_is_linear_in_n_normalized_is_not():
    counts = {}
    for n in (25, 100, 400):
        a, y = worst_case_dataset(n)
        mu, r2 = _grid_margin(a, y), float((a**2).sum(axis=1).max())
        runs = {
            m: run_large_step_gd(a, y, method=m, gamma=g, max_iter=10 * n)
            for m, g in (("batch_perceptron", 1.0), ("normalized_batch_perceptron", 1.0))
        }
        norm_gd = run_large_step_gd(a, y, method="normalized_gd", gamma=100.0, max_iter=10 * n)
        counts[n] = runs["batch_perceptron"].iterations
        assert runs["normalized_batch_perceptron"].iterations <= r2 / mu**2
        assert norm_gd.iterations <= r2 / mu**2 + 2 * math.log(2 * n - 1) / (100.0 * mu**2)
    assert counts[100] >= 3 * counts[25] and counts[400] >= 3 * counts[100]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iteration_bounds_of_theorems_3_3_5_3_6_1(seed):
    a, y = separable_dataset(40, 2, margin=0.1, seed=seed)
    n, mu, r2 = len(a), _grid_margin(a, y), float((a**2).sum(axis=1).max())
    bp = run_large_step_gd(a, y, method="batch_perceptron", max_iter=100_000)
    nbp = run_large_step_gd(a, y, method="normalized_batch_perceptron", max_iter=100_000)
    assert bp.iterations <= n * r2 / mu**2 and nbp.iterations <= r2 / mu**2
    for gamma in (0.1, 10.0, 1e4):
        run = run_large_step_gd(a, y, method="normalized_gd", gamma=gamma, max_iter=100_000)
        assert run.iterations <= r2 / mu**2 + 2 * math.log(2 * n - 1) / (gamma * mu**2)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_separates_separable_data_in_finite_time(data, method):
    a, y = data
    for gamma in (1.0, 10.0, 1e3, 1e6):
        run = run_large_step_gd(a, y, method=method, gamma=gamma, max_iter=10_000)
        assert run.iterations is not None and len(run.losses) == run.iterations + 1
        assert run.misclassified[-1] == 0 and (run.misclassified[:-1] > 0).all()
        full = run_large_step_gd(
            a, y, method=method, gamma=gamma, max_iter=run.iterations + 5, stop_at_separation=False
        )
        assert full.iterations == run.iterations and len(full.losses) == run.iterations + 6


def test_small_steps_decrease_the_loss_monotonically(data):
    a, y = data
    smooth = float(np.linalg.eigvalsh(a.T @ a / len(a)).max()) / 4  # L of f
    run = run_large_step_gd(a, y, gamma=1.0 / smooth, max_iter=300, stop_at_separation=False)
    assert (np.diff(run.losses) <= 1e-15).all()


def test_normalized_gd_is_finite_where_every_sigma_underflows(data):
    a, y = data
    w0 = 1e5 * run_large_step_gd(a, y, method="normalized_batch_perceptron").w
    assert logistic_loss(a, y, w0) == 0.0
    run = run_large_step_gd(
        a, y, method="normalized_gd", gamma=1.0, w0=w0, max_iter=3, stop_at_separation=False
    )
    assert (
        np.isfinite(run.w).all()
        and 0 < np.linalg.norm(run.w - w0) <= 1.0 * np.abs(a).sum(axis=1).max() * 3
    )


# ---------------------------------------------------------------- datasets


def test_datasets_and_separability():
    a, y = separable_dataset(80, 3, margin=0.2, seed=4)
    assert a.shape == (80, 3) and set(np.unique(y)) == {-1.0, 1.0}
    assert is_linearly_separable(a, y) and max_margin(a, y) >= 0.2
    np.testing.assert_array_equal(separable_dataset(80, 3, margin=0.2, seed=4)[0], a)
    assert not is_linearly_separable(*nonseparable_dataset(200, 2, flip=0.1, seed=0))
    assert is_linearly_separable(*nonseparable_dataset(50, 2, flip=0.0, seed=0))
    xor = (np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]), [1, 1, -1, -1])
    assert not is_linearly_separable(*xor) and max_margin(*xor) == 0.0
    wa, wy = worst_case_dataset(5)
    assert wy.tolist() == [1, -1, -1, -1, -1] and is_linearly_separable(wa, wy)


@pytest.mark.parametrize("seed", [0, 3])
def test_max_margin_matches_brute_force(seed):
    a, y = separable_dataset(50, 2, margin=0.05, seed=seed)
    grid = _grid_margin(a, y)
    assert grid - 1e-9 <= max_margin(a, y) <= grid + 1e-4


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise(data):
    a, y = data
    bad_calls = [
        dict(y=np.where(y > 0, 2, 1)),
        dict(y=np.array([-1, 0, 1] * 20)),
        dict(y=y[:-1]),
        dict(y=y[:, None]),
        dict(y=np.array(["a"] * len(y))),
        dict(y=y > 0),
        dict(a=a[:, 0]),
        dict(a=np.where(np.arange(len(a))[:, None] == 0, np.nan, a)),
        dict(a=np.zeros((0, 2)), y=np.zeros(0)),
        dict(gamma=0.0),
        dict(gamma=-1.0),
        dict(gamma=math.inf),
        dict(gamma=math.nan),
        dict(gamma="big"),
        dict(max_iter=-1),
        dict(max_iter=2.5),
        dict(max_iter=True),
        dict(method="adam"),
        dict(w0=np.zeros(3)),
        dict(w0=np.array([np.inf, 0.0])),
    ]
    for kwargs in bad_calls:
        args = {"a": a, "y": y, **kwargs}
        with pytest.raises(ValueError):
            run_large_step_gd(args.pop("a"), args.pop("y"), **args)
    with pytest.raises(ValueError, match="w must have shape"):
        logistic_loss(a, y, np.zeros(5))
    with pytest.raises(ValueError, match="margin"):
        separable_dataset(10, 2, margin=-0.1)
    with pytest.raises(ValueError, match="flip"):
        nonseparable_dataset(10, 2, flip=1.5)
    with pytest.raises(ValueError, match="n must be"):
        worst_case_dataset(1)


def test_registered():
    entry = losskit.get("large_step_gd")
    assert entry.papers == (36,) and entry.function is run_large_step_gd
