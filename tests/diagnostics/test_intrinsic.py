"""Paper 22's intrinsic properties: MLE / TwoNN intrinsic dimension and label sharpness K_F,
against brute-force loops, known-dimension data and their exact properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from losskit.diagnostics.intrinsic import (
    knn_distances,
    label_sharpness,
    mle_intrinsic_dim,
    twonn_intrinsic_dim,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _subspace(rng: np.random.Generator, n: int, d: int, ambient: int) -> np.ndarray:
    """Gaussian points of a random d-dimensional affine subspace of R^ambient."""
    basis, _ = np.linalg.qr(rng.normal(size=(ambient, d)))
    return rng.normal(size=(n, d)) @ basis.T + rng.normal(size=ambient)


def _all_distances(x: np.ndarray) -> np.ndarray:
    n = len(x)
    return np.array(
        [
            [
                math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True)))
                for j in range(n)
            ]
            for i in range(n)
        ]
    )


def _slow_knn(x: np.ndarray, k: int) -> np.ndarray:
    d = _all_distances(x)
    return np.array([sorted(d[i, j] for j in range(len(x)) if j != i)[:k] for i in range(len(x))])


def _slow_mle(x: np.ndarray, k: int, average: str) -> float:
    local = []
    for t in _slow_knn(x, k):
        local.append(sum(math.log(t[k - 1] / t[j]) for j in range(k - 1)) / (k - 2))
    if average == "inverse":
        return 1.0 / (sum(local) / len(local))
    return sum(1.0 / u for u in local) / len(local)


def _slow_twonn(x: np.ndarray, discard: float) -> float:
    t = _slow_knn(x, 2)
    n = len(x)
    mu = sorted(t[i, 1] / t[i, 0] for i in range(n))
    keep = min(int(math.floor(n * (1 - discard))), n - 1)
    xs = np.array([math.log(m) for m in mu[:keep]])
    ys = np.array([-math.log(1 - (i + 1) / n) for i in range(keep)])
    return float(np.linalg.lstsq(xs[:, None], ys, rcond=None)[0][0])


def _slow_sharpness(x: np.ndarray, y: np.ndarray) -> float:
    """max over pairs j < k with different labels (integers) or |y_j - y_k| (floats) of
    numerator / distance; pairs of identical points are skipped."""
    best = 0.0
    flat = x.reshape(len(x), -1)
    for j in range(len(x)):
        for k in range(j + 1, len(x)):
            dist = math.sqrt(sum((a - b) ** 2 for a, b in zip(flat[j], flat[k], strict=True)))
            real = y.dtype.kind == "f"
            num = abs(float(y[j]) - float(y[k])) if real else float(y[j] != y[k])
            if dist > 0 and num > 0:
                best = max(best, num / dist)
    return best


# ---------------------------------------------------------------- known dimension


@pytest.mark.parametrize("d, ambient", [(5, 50), (2, 10)])
def test_estimators_recover_subspace_dimension(rng, d, ambient):
    x = _subspace(rng, 2000, d, ambient)
    for est in (
        mle_intrinsic_dim(x),
        mle_intrinsic_dim(x, average="mean"),
        twonn_intrinsic_dim(x),
    ):
        assert abs(est - d) <= 0.1 * d


def test_estimators_tell_dimensions_apart(rng):
    low = [mle_intrinsic_dim(_subspace(rng, 800, d, 30)) for d in (2, 4, 8)]
    assert low[0] < low[1] < low[2]


# ---------------------------------------------------------------- against slow loops


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_knn_distances_match_sorted_brute_force(rng, chunk):
    x = rng.normal(size=(40, 6)) * rng.uniform(0.1, 3.0, size=(40, 1))
    np.testing.assert_allclose(knn_distances(x, 5, chunk_size=chunk), _slow_knn(x, 5), rtol=1e-10)


def test_knn_distances_get_near_duplicates_right(rng):
    x = rng.uniform(size=(30, 16)) + 1e3  # a pair 1e-6 apart far from the origin
    x[1] = x[0]
    x[1, 3] += 1e-6
    np.testing.assert_allclose(knn_distances(x, 3), _slow_knn(x, 3), rtol=1e-6)


@pytest.mark.parametrize("k, average", [(3, "inverse"), (6, "mean"), (10, "inverse")])
def test_mle_matches_slow_formula(rng, k, average):
    x = rng.normal(size=(45, 4)) @ rng.normal(size=(4, 9))
    got = mle_intrinsic_dim(x, k=k, average=average, chunk_size=11)
    assert got == pytest.approx(_slow_mle(x, k, average), rel=1e-9)


@pytest.mark.parametrize("discard", [0.0, 0.1, 0.3])
def test_twonn_matches_slow_regression(rng, discard):
    x = rng.normal(size=(50, 7))
    got = twonn_intrinsic_dim(x, discard_fraction=discard, chunk_size=9)
    assert got == pytest.approx(_slow_twonn(x, discard), rel=1e-9)


def test_dimension_invariant_to_similarity_transforms_and_order(rng):
    x = _subspace(rng, 300, 3, 12)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    moved = 7.5 * x[rng.permutation(300)] @ q + 3.0
    for f in (mle_intrinsic_dim, twonn_intrinsic_dim):
        assert f(moved) == pytest.approx(f(x), rel=1e-8)


def test_images_are_flattened_and_torch_accepted(rng):
    x = rng.normal(size=(60, 2, 3, 2))
    flat = x.reshape(60, -1)
    assert mle_intrinsic_dim(torch.from_numpy(x), k=5) == pytest.approx(
        mle_intrinsic_dim(flat, k=5), rel=1e-12
    )


# ---------------------------------------------------------------- label sharpness


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_sharpness_matches_brute_force_multiclass(rng, chunk):
    x = rng.normal(size=(30, 5)) * rng.uniform(0.2, 2.0, size=(30, 1))
    y = rng.integers(0, 4, size=30)
    assert label_sharpness(x, y, chunk_size=chunk) == pytest.approx(
        _slow_sharpness(x, y), rel=1e-10
    )


def test_sharpness_matches_brute_force_binary_and_real_labels(rng):
    x = rng.uniform(size=(25, 3, 4))  # image-shaped points
    binary = rng.integers(0, 2, size=25)
    real = rng.normal(size=25)
    assert label_sharpness(x, binary) == pytest.approx(_slow_sharpness(x, binary), rel=1e-10)
    assert label_sharpness(x, real.astype(np.float64)) == pytest.approx(
        _slow_sharpness(x, real), rel=1e-10
    )
    # binary labels as floats: |y_j - y_k| = 1[y_j != y_k]
    assert label_sharpness(x, binary.astype(float)) == pytest.approx(
        label_sharpness(x, binary), rel=1e-12
    )


def test_sharpness_uses_pairs_with_different_labels():
    # points 0, 1, 3 on a line, labels a, a, b: the closest pair (0, 1) shares a label, so
    # K_F = 1 / |3 - 1| = 1/2 (the same-label variant would give 1 / |1 - 0| = 1)
    x = np.array([[0.0], [1.0], [3.0]])
    assert label_sharpness(x, np.array([0, 0, 1])) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("c", [1e-3, 0.5, 3.0, 1e4])
def test_sharpness_scales_as_one_over_c(rng, c):
    x = rng.uniform(size=(40, 8))
    y = rng.integers(0, 3, size=40)
    assert label_sharpness(c * x, y) == pytest.approx(label_sharpness(x, y) / c, rel=1e-9)


def test_sharpness_invariant_to_permutation_and_zero_for_one_label(rng):
    x = rng.normal(size=(35, 4))
    y = rng.integers(0, 3, size=35)
    p = rng.permutation(35)
    assert label_sharpness(x[p], y[p]) == pytest.approx(label_sharpness(x, y), rel=1e-12)
    assert label_sharpness(x, np.full(35, 2)) == 0.0


def test_sharpness_gets_near_duplicates_right(rng):
    # far from the origin, a pair 1e-6 apart: the distance expansion alone would cancel
    x = rng.uniform(size=(20, 16)) + 1e3
    x[1] = x[0]
    x[1, 3] += 1e-6
    y = np.zeros(20, dtype=np.int64)
    y[1] = 1
    assert label_sharpness(x, y) == pytest.approx(_slow_sharpness(x, y), rel=1e-6)


# ---------------------------------------------------------------- duplicate points


def test_duplicates_raise_or_are_dropped_for_dimension(rng):
    x = rng.normal(size=(80, 5))
    dup = np.concatenate([x, x[:7]])
    for f in (mle_intrinsic_dim, twonn_intrinsic_dim):
        with pytest.raises(ValueError, match="identical"):
            f(dup)
        assert f(dup, duplicates="drop") == pytest.approx(f(x), rel=1e-12)


def test_duplicates_for_sharpness(rng):
    x = rng.normal(size=(20, 3))
    y = rng.integers(0, 3, size=20)
    same = (np.concatenate([x, x[:3]]), np.concatenate([y, y[:3]]))
    # identical points with the same label carry no information: skipped silently
    assert label_sharpness(*same) == pytest.approx(label_sharpness(x, y), rel=1e-12)
    clash = (np.concatenate([x, x[:1]]), np.concatenate([y, [(y[0] + 1) % 3]]))
    with pytest.raises(ValueError, match="identical but their labels differ"):
        label_sharpness(*clash)
    assert label_sharpness(*clash, duplicates="drop") == pytest.approx(
        _slow_sharpness(*clash), rel=1e-10
    )


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y: mle_intrinsic_dim(x[:, 0]), "shape"),
        (lambda x, y: mle_intrinsic_dim(np.where(x > 1, np.nan, x)), "finite"),
        (lambda x, y: mle_intrinsic_dim(x, k=2), "k must be"),
        (lambda x, y: mle_intrinsic_dim(x, k=3.0), "k must be"),
        (lambda x, y: mle_intrinsic_dim(x[:5]), "more than k"),
        (lambda x, y: mle_intrinsic_dim(x, average="median"), "average"),
        (lambda x, y: mle_intrinsic_dim(x, duplicates="keep"), "duplicates"),
        (lambda x, y: mle_intrinsic_dim(x, chunk_size=0), "chunk_size"),
        (lambda x, y: twonn_intrinsic_dim(x, discard_fraction=1.0), "discard_fraction"),
        (lambda x, y: twonn_intrinsic_dim(x[:2]), "at least 3"),
        (lambda x, y: knn_distances(x, 30), "k must be <="),
        (lambda x, y: label_sharpness(x, y[:-1]), "shape"),
        (lambda x, y: label_sharpness(x, y.astype(str)), "dtype"),
        (lambda x, y: label_sharpness(x, np.full(30, np.inf)), "finite"),
        (lambda x, y: label_sharpness(x[:1], y[:1]), "at least 2"),
        (lambda x, y: label_sharpness(np.array(["a", "b"]), y[:2]), "real numbers"),
    ],
)
def test_bad_input_raises(rng, call, match):
    x = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, size=30)
    with pytest.raises(ValueError, match=match):
        call(x, y)


def test_equidistant_neighbours_raise_for_mean_average():
    # the centre of a plus sign has its k = 3 nearest neighbours at distance 1 exactly, so
    # its local estimate is infinite
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="equidistant"):
        mle_intrinsic_dim(x, k=3, average="mean")
    assert math.isfinite(mle_intrinsic_dim(x, k=3))
