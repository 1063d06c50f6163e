"""Paper 55's measures: Fourier IPR (single mode, flat spectrum, slow DFT reference),
per-neuron IPR, the accuracy splits against a loop, the phase rule, bad inputs."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from losskit.diagnostics.grokking import (
    PHASES,
    classify_phase,
    fourier_ipr,
    neuron_ipr,
    split_accuracies,
)
from losskit.labels.modular import modular_dataset


def _slow_ipr(x: np.ndarray, r: float) -> float:
    """The one-sided DFT by its definition, then sum_j (|x~_j| / ||x~||_2)^(2r)."""
    p = len(x)
    coeffs = [
        sum(x[i] * cmath.exp(-2j * math.pi * k * i / p) for i in range(p))
        for k in range(p // 2 + 1)
    ]
    mags = [abs(c) for c in coeffs]
    norm = math.sqrt(sum(m * m for m in mags))
    return sum((m / norm) ** (2 * r) for m in mags)


@pytest.mark.parametrize("p", [7, 12, 23])
@pytest.mark.parametrize("r", [2.0, 1.5, 3.0])
def test_matches_slow_dft(p, r):
    x = np.random.default_rng(p).normal(size=(5, p))
    fast = fourier_ipr(x, r=r)
    assert fast.shape == (5,)
    np.testing.assert_allclose(fast, [_slow_ipr(row, r) for row in x], rtol=1e-12)
    assert fourier_ipr(x[0], r=r).shape == () and np.isclose(fourier_ipr(x[0], r=r), fast[0])


@pytest.mark.parametrize("p", [11, 23, 97])
def test_single_fourier_mode_has_ipr_one(p):
    i = np.arange(p)
    rng = np.random.default_rng(0)
    for k in range(1, p // 2 + 1):
        amp, phase = rng.uniform(0.1, 3.0), rng.uniform(-math.pi, math.pi)
        for r in (2.0, 3.0):
            ipr = fourier_ipr(amp * np.cos(2 * math.pi * k * i / p + phase), r=r)
            assert ipr == pytest.approx(1.0, abs=1e-12)
    assert fourier_ipr(np.full(p, 0.7)) == pytest.approx(1.0)  # the constant mode


@pytest.mark.parametrize("p", [10, 23, 31])
@pytest.mark.parametrize("r", [2.0, 2.5])
def test_flat_spectrum_is_the_minimum(p, r):
    n = p // 2 + 1
    floor = n ** (1.0 - r)
    # A one-hot (delta) vector has |x~_j| = 1 at every frequency: the flat spectrum.
    for j in range(p):
        assert fourier_ipr(np.eye(p)[j], r=r) == pytest.approx(floor, rel=1e-12)
    x = np.random.default_rng(1).normal(size=(500, p))
    ipr = fourier_ipr(x, r=r)
    assert np.all(ipr >= floor - 1e-12) and np.all(ipr <= 1 + 1e-12)
    assert ipr.min() > floor  # random vectors are not exactly flat


def test_two_equal_modes_halve_the_ipr():
    i = np.arange(23)
    x = np.cos(2 * math.pi * 3 * i / 23) + np.sin(2 * math.pi * 7 * i / 23 + 0.4)
    assert fourier_ipr(x) == pytest.approx(0.5, abs=1e-12)


def test_zero_row_has_no_ipr():
    ipr = fourier_ipr(np.vstack([np.zeros(5), np.arange(5.0)]))
    assert math.isnan(ipr[0]) and 0 < ipr[1] <= 1


def test_ipr_is_scale_invariant():
    x = np.random.default_rng(2).normal(size=(3, 13))
    np.testing.assert_allclose(fourier_ipr(x), fourier_ipr(-4.5 * x), rtol=1e-12)


def test_neuron_ipr_is_the_mean_of_u_v_and_w_columns():
    rng = np.random.default_rng(3)
    u, v, w = rng.normal(size=(6, 11)), rng.normal(size=(6, 11)), rng.normal(size=(11, 6))
    got = neuron_ipr(u, v, w)
    for k in range(6):
        expected = (_slow_ipr(u[k], 2) + _slow_ipr(v[k], 2) + _slow_ipr(w[:, k], 2)) / 3
        assert got[k] == pytest.approx(expected, rel=1e-12)


def test_split_accuracies_against_a_loop():
    d = modular_dataset(13, train_fraction=0.5, corruption=0.4, seed=4)
    rng = np.random.default_rng(5)
    # Predictions: true label on some pairs, the (corrupted) train label on others, noise else.
    pred = d.labels.copy()
    pred[d.train[::3]] = d.train_labels[::3]
    noisy = rng.random(169) < 0.2
    pred[noisy] = rng.integers(0, 13, size=int(noisy.sum()))
    got = split_accuracies(pred, d)
    counts = {k: [0, 0] for k in got}
    for pos, pair in enumerate(d.train):
        true, given = d.labels[pair], d.train_labels[pos]
        counts["train"][0] += int(pred[pair] == given)
        counts["train"][1] += 1
        part = "train_corrupted" if given != true else "train_clean"
        counts[part][0] += int(pred[pair] == given)
        counts[part][1] += 1
        if given != true:
            counts["train_corrupted_true"][0] += int(pred[pair] == true)
            counts["train_corrupted_true"][1] += 1
    for pair in d.test:
        counts["test"][0] += int(pred[pair] == d.labels[pair])
        counts["test"][1] += 1
    for key, (hit, total) in counts.items():
        assert got[key] == pytest.approx(hit / total)
    # Predicting the truth everywhere: clean and test perfect, corrupted labels never matched.
    perfect = split_accuracies(d.labels.copy(), d)
    assert perfect["test"] == perfect["train_clean"] == perfect["train_corrupted_true"] == 1.0
    assert perfect["train_corrupted"] == 0.0
    assert perfect["train"] == pytest.approx(1 - d.wrong.mean())
    assert math.isnan(split_accuracies(d.labels.copy(), modular_dataset(13))["train_corrupted"])


@pytest.mark.parametrize(
    "train, test, xi, phase",
    [
        (1.0, 1.0, 0.35, "coexistence"),
        (0.9, 0.9, 0.35, "coexistence"),
        (0.75, 0.99, 0.35, "partial inversion"),
        (0.72, 0.99, 0.35, "partial inversion"),
        (0.66, 0.99, 0.35, "full inversion"),
        (0.85, 0.99, 0.1, "full inversion"),  # 1.05 - xi = 0.95 > 0.9: no partial band
        (1.0, 0.2, 0.35, "memorization"),
        (0.3, 0.2, 0.35, "forgetting"),
        (0.95, 0.5, 0.0, "memorization"),
    ],
)
def test_phase_rule(train, test, xi, phase):
    assert classify_phase(train, test, xi) == phase
    assert phase in PHASES


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fourier_ipr(np.ones((2, 2, 5))), "shape"),
        (lambda: fourier_ipr(np.ones(1)), "shape"),
        (lambda: fourier_ipr(np.array([1.0, np.nan, 2.0])), "finite"),
        (lambda: fourier_ipr(np.ones(5), r=1.0), "r must be"),
        (lambda: neuron_ipr(np.ones((3, 5)), np.ones((3, 5)), np.ones((3, 5))), "shape"),
        (lambda: split_accuracies(np.zeros(10, dtype=int), modular_dataset(5)), "pred"),
        (lambda: split_accuracies(np.zeros(25), modular_dataset(5)), "integer"),
        (lambda: classify_phase(1.2, 0.5, 0.1), "train_accuracy"),
        (lambda: classify_phase(0.5, -0.1, 0.1), "test_accuracy"),
        (lambda: classify_phase(0.5, 0.5, 2.0), "corruption"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
