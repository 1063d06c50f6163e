"""Paper 8's embedding measures (uniformity, tolerance, alignment) against slow loops,
closed forms and their exact properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import losskit
from losskit.diagnostics.embedding import alignment, tolerance, uniformity


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _slow_uniformity(x: np.ndarray, t: float) -> float:
    z = _unit(np.asarray(x, dtype=np.float64))
    n = len(z)
    vals = [
        math.exp(-t * float(((z[i] - z[j]) ** 2).sum()))
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    return math.log(sum(vals) / len(vals))


def _slow_tolerance(x: np.ndarray, labels: np.ndarray) -> float:
    z = _unit(np.asarray(x, dtype=np.float64))
    n = len(z)
    sims = [
        float(z[i] @ z[j]) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]
    ]
    return sum(sims) / len(sims)


def _slow_alignment(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    z, w = _unit(np.asarray(x, np.float64)), _unit(np.asarray(y, np.float64))
    return sum(float(np.linalg.norm(a - b)) ** alpha for a, b in zip(z, w, strict=True)) / len(z)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ---------------------------------------------------------------- reference loops


@pytest.mark.parametrize("t", [0.5, 2.0, 7.0])
def test_uniformity_matches_slow_loop(rng, t):
    x = rng.normal(size=(13, 5)) * rng.uniform(0.1, 5.0, size=(13, 1))
    assert uniformity(x, t=t) == pytest.approx(_slow_uniformity(x, t), rel=1e-12, abs=1e-12)
    got = uniformity(torch.from_numpy(x), t=t)
    assert got == pytest.approx(_slow_uniformity(x, t), rel=1e-12, abs=1e-12)


def test_uniformity_equals_wang_isola_pdist_form(rng):
    x = torch.from_numpy(rng.normal(size=(20, 4)))
    z = torch.nn.functional.normalize(x, dim=1)
    ref = torch.pdist(z, p=2).pow(2).mul(-2.0).exp().mean().log()
    assert uniformity(x) == pytest.approx(float(ref), rel=1e-12)


def test_tolerance_matches_slow_loop(rng):
    x = rng.normal(size=(17, 6)) + 0.5
    labels = rng.integers(0, 4, size=17)
    labels[0] = 9  # a singleton class adds no pair
    ref = _slow_tolerance(x, labels)
    assert tolerance(x, labels) == pytest.approx(ref, rel=1e-12, abs=1e-14)
    got = tolerance(torch.from_numpy(x), torch.from_numpy(labels))
    assert got == pytest.approx(ref, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
def test_alignment_matches_slow_loop(rng, alpha):
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 3))
    assert alignment(x, y, alpha=alpha) == pytest.approx(_slow_alignment(x, y, alpha), rel=1e-12)


def test_float32_torch_close_to_float64(rng):
    x = rng.normal(size=(50, 8))
    labels = rng.integers(0, 3, size=50)
    x32 = torch.from_numpy(x).float()
    assert uniformity(x32) == pytest.approx(uniformity(x), abs=1e-5)
    assert tolerance(x32, torch.from_numpy(labels)) == pytest.approx(tolerance(x, labels), abs=1e-6)
    assert alignment(x32, x32.flip(0)) == pytest.approx(alignment(x, x[::-1]), abs=1e-5)
    assert uniformity(x32.half()) == pytest.approx(uniformity(x), abs=1e-2)


# ---------------------------------------------------------------- exact properties


def test_uniformity_of_coincident_points_is_zero_the_maximum(rng):
    x = np.tile(rng.normal(size=(1, 4)), (6, 1)) * np.arange(1, 7)[:, None]  # same direction
    assert uniformity(x) == pytest.approx(0.0, abs=1e-12)
    assert uniformity(rng.normal(size=(6, 4))) < 0.0


@pytest.mark.parametrize("n", [2, 3, 4, 7])
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_uniformity_of_regular_simplex(n, t):
    # n points of a regular simplex: e_k - mean, unit after normalisation; |z_i - z_j|^2 = 2n/(n-1)
    x = np.eye(n) - 1.0 / n
    assert uniformity(x, t=t) == pytest.approx(-2.0 * t * n / (n - 1), rel=1e-12)


def test_uniformity_of_antipodal_pair():
    assert uniformity(np.array([[0.0, 3.0], [0.0, -0.5]]), t=2.0) == pytest.approx(-8.0)


def test_uniformity_decreases_as_points_spread(rng):
    centre = np.array([1.0, 0.0, 0.0])
    noise = rng.normal(size=(30, 3))
    values = [uniformity(centre + s * noise) for s in (0.01, 0.1, 0.5, 2.0)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_tolerance_of_class_one_hot_is_one(rng):
    labels = rng.integers(0, 5, size=40)
    x = np.eye(5)[labels] * rng.uniform(0.5, 2.0, size=(40, 1))
    assert tolerance(x, labels) == pytest.approx(1.0, rel=1e-12)
    # distinct one-hots grouped in pairs: every same-label pair is orthogonal
    assert tolerance(np.eye(4), np.array([0, 0, 1, 1])) == pytest.approx(0.0, abs=1e-15)


def test_alignment_properties(rng):
    x = rng.normal(size=(8, 4))
    assert alignment(x, 3.0 * x) == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x, alpha=2.0) == pytest.approx(4.0)
    z, w = _unit(x), _unit(rng.normal(size=(8, 4)))
    assert alignment(z, w) == pytest.approx(2.0 - 2.0 * float((z * w).sum(1).mean()))


def test_invariant_to_row_scale(rng):
    x = rng.normal(size=(12, 3))
    labels = rng.integers(0, 2, size=12)
    s = rng.uniform(0.1, 10.0, size=(12, 1))
    assert uniformity(x * s) == pytest.approx(uniformity(x), rel=1e-12)
    assert tolerance(x * s, labels) == pytest.approx(tolerance(x, labels), rel=1e-12)


# ---------------------------------------------------------------- chunked = unchunked


@pytest.mark.parametrize("chunk", [1, 3, 7, 40, 1000])
def test_chunked_uniformity_equals_unchunked(rng, chunk):
    x = rng.normal(size=(40, 5))
    full = uniformity(x, chunk_size=40)
    assert uniformity(x, chunk_size=chunk) == pytest.approx(full, rel=1e-13)
    x32 = torch.from_numpy(x).float()
    assert uniformity(x32, chunk_size=chunk) == pytest.approx(
        uniformity(x32, chunk_size=40), abs=1e-6
    )


def test_large_t_no_underflow():
    # every pair is antipodal-ish: exp(-4t) underflows float64 for t = 300, logsumexp does not
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]]), t=300.0) == pytest.approx(-1200.0)


def test_large_n_runs_in_bounded_memory():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 16, generator=g)
    u = uniformity(x)
    # uniform on S^15: E exp(-2|z-w|^2) = exp(-4) * E exp(4 z.w), close to exp(-4 + 8/16)
    assert -4.0 < u < -3.0
    assert -0.01 < tolerance(x, torch.arange(20_000) % 10) < 0.01


# ---------------------------------------------------------------- registry


def test_registered():
    for name, fn in [
        ("uniformity", uniformity),
        ("tolerance", tolerance),
        ("alignment", alignment),
    ]:
        entry = losskit.get(name)
        assert entry.kind == "diagnostic" and entry.family == "embedding"
        assert entry.papers == (8,) and entry.function is fn


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: uniformity(np.ones(5)), "embeddings must have shape"),
        (lambda: uniformity(np.ones((4, 0))), "embeddings must have shape"),
        (lambda: uniformity(np.ones((1, 3))), "embeddings must have at least 2 points"),
        (lambda: uniformity(np.ones((3, 2)), t=0.0), "t must be"),
        (lambda: uniformity(np.ones((3, 2)), t=-1.0), "t must be"),
        (lambda: uniformity(np.ones((3, 2)), t=math.nan), "t must be"),
        (lambda: uniformity(np.ones((3, 2)), chunk_size=0), "chunk_size"),
        (lambda: uniformity(np.array([[1.0, 0.0], [0.0, 0.0]])), "embeddings row 1 is zero"),
        (lambda: uniformity(np.array([[1.0, np.nan], [0.0, 1.0]])), "embeddings must be finite"),
        (lambda: uniformity(np.array([["a"], ["b"]])), "embeddings must be real"),
        (lambda: tolerance(np.ones((1, 3)), [0]), "embeddings must have at least 2 points"),
        (lambda: tolerance(np.ones((4, 3)), [0, 0, 1]), "labels must have shape"),
        (lambda: tolerance(np.ones((4, 3)), np.zeros((4, 1), int)), "labels must have shape"),
        (lambda: tolerance(np.ones((4, 3)), np.zeros(4)), "labels must hold integer"),
        (lambda: tolerance(np.ones((3, 3)), [0, 1, 2]), "labels must give some class"),
        (lambda: alignment(np.ones((3, 2)), np.ones((4, 2))), "y must have shape"),
        (lambda: alignment(np.ones((0, 2)), np.ones((0, 2))), "x must have at least 1"),
        (lambda: alignment(np.ones((3, 2)), np.ones((3, 2)), alpha=0), "alpha must be"),
        (lambda: alignment(np.ones(3), np.ones((3, 2))), "x must have shape"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
