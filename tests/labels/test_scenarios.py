"""Label scenarios: achieved noise rates, noise matrices, long tails, partial labels, specs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

import losskit
from losskit.labels import (
    Corrupted,
    apply_scenario,
    canonical_scenario,
    class_counts,
    class_groups,
    drop_positives,
    is_long_tailed,
    list_scenarios,
    long_tail_counts,
    noise_matrix_from_trace,
    parse_scenario,
    sample_from_noise_matrix,
)

C = 10
N_PER_CLASS = 2000
Y = np.repeat(np.arange(C), N_PER_CLASS)
rng_shuffle = np.random.default_rng(123)
Y = Y[rng_shuffle.permutation(Y.size)]


def four_sigma(p: float, n: int) -> float:
    """Four binomial standard deviations of a proportion p over n trials."""
    return 4.0 * math.sqrt(p * (1.0 - p) / n)


def multilabel(n: int = 3000, c: int = 20, p: float = 0.2, seed: int = 100) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, c)) < p).astype(np.int64)


# ------------------------------------------------------------------ symmetric and pair-flip
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_achieves_the_rate_and_never_keeps_a_flipped_class(rate):
    out = apply_scenario(f"symmetric:{rate}", Y, C, seed=1)
    assert np.array_equal(out.clean, Y) and np.array_equal(out.index, np.arange(Y.size))
    assert abs(out.noise_rate - rate) <= four_sigma(rate, Y.size) + 1e-12
    # destinations of class-0 flips are uniform over the other C - 1 classes
    moved = out.labels[(out.clean == 0) & (out.labels != 0)]
    if rate >= 0.4:
        freq = np.bincount(moved, minlength=C)[1:] / moved.size
        assert np.all(np.abs(freq - 1 / (C - 1)) <= four_sigma(1 / (C - 1), moved.size))


def test_symmetric_any_convention_lands_on_the_true_class_sometimes():
    rate = 0.9
    other = apply_scenario(f"symmetric:{rate}", Y, C, seed=2)
    anyc = apply_scenario(f"symmetric:{rate}:any", Y, C, seed=2)
    expected_any = rate * (C - 1) / C
    assert abs(other.noise_rate - rate) <= four_sigma(rate, Y.size)
    assert abs(anyc.noise_rate - expected_any) <= four_sigma(expected_any, Y.size)


@pytest.mark.parametrize("rate", [0.1, 0.45])
def test_pairflip_flips_only_to_the_next_class(rate):
    out = apply_scenario(f"pairflip:{rate}", Y, C, seed=3)
    changed = out.labels != out.clean
    assert np.array_equal(out.labels[changed], (out.clean[changed] + 1) % C)
    assert abs(out.noise_rate - rate) <= four_sigma(rate, Y.size)
    assert set(out.clean[changed].tolist()) == set(range(C))  # the last class wraps to 0


# ------------------------------------------------------------------ noise matrix
@pytest.mark.parametrize(("c", "trace"), [(2, 1.5), (10, 7.0), (10, 2.0), (10, 10.0), (50, 30.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_matrix_is_valid_with_the_given_trace(c, trace, seed):
    t = noise_matrix_from_trace(c, trace, np.random.default_rng(seed))
    assert t.shape == (c, c) and t.min() >= 0
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-12)
    assert math.isclose(np.trace(t), trace, rel_tol=1e-12)
    off = t - np.diag(np.diag(t))
    assert np.all(np.diag(t) > off.max(axis=1)) and np.all(np.diag(t) > off.max(axis=0))
    if trace == c:
        np.testing.assert_array_equal(t, np.eye(c))


def test_noise_matrix_diagonal_is_random_around_trace_over_c():
    t = noise_matrix_from_trace(10, 7.0, np.random.default_rng(0))
    assert np.ptp(np.diag(t)) > 0 and np.abs(np.diag(t) - 0.7).max() <= 0.1 + 1e-12


def test_samples_follow_the_noise_matrix():
    c, n = 5, 20000
    t = noise_matrix_from_trace(c, 3.0, np.random.default_rng(4))
    y = np.repeat(np.arange(c), n)
    obs = sample_from_noise_matrix(y, t, np.random.default_rng(5))
    freq = np.stack([np.bincount(obs[y == k], minlength=c) / n for k in range(c)])
    tol = 4 * np.sqrt(t * (1 - t) / n) + 1e-3
    assert np.all(np.abs(freq - t) <= tol)


def test_matrix_scenario_uses_the_matrix_drawn_first_from_the_seed():
    seed, trace = 6, 6.0
    t = noise_matrix_from_trace(C, trace, np.random.default_rng(seed))
    out = apply_scenario(f"matrix:trace={trace}", Y, C, seed=seed)
    freq = np.stack([np.bincount(out.labels[k == Y], minlength=C) / N_PER_CLASS for k in range(C)])
    assert np.all(np.abs(freq - t) <= 4 * np.sqrt(t * (1 - t) / N_PER_CLASS) + 1e-3)
    same = apply_scenario(f"matrix:diag={trace / C}", Y, C, seed=seed)
    np.testing.assert_array_equal(same.labels, out.labels)
    expected = 1 - trace / C  # balanced classes: mean of the off-diagonal mass
    assert abs(out.noise_rate - expected) <= four_sigma(expected, Y.size)


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize(
    "spec", ["symmetric:0.3", "pairflip:0.3", "matrix:7", "longtail:50", "longtail:10+pairflip:0.2"]
)
def test_same_seed_same_labels_other_seed_other_labels(spec):
    a, b = apply_scenario(spec, Y, C, seed=7), apply_scenario(spec, Y, C, seed=7)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = apply_scenario(spec, Y, C, seed=8)
    assert not (np.array_equal(a.index, c.index) and np.array_equal(a.labels, c.labels))


def test_input_is_not_modified():
    y = Y.copy()
    apply_scenario("longtail:10+symmetric:0.5", y, C, seed=0)
    np.testing.assert_array_equal(y, Y)


# ------------------------------------------------------------------ long tail
@pytest.mark.parametrize("rho", [1.0, 10.0, 100.0])
def test_long_tail_profile(rho):
    out = apply_scenario(f"longtail:{rho}", Y, C, seed=0)
    counts = class_counts(out.labels, C)
    expected = np.floor(N_PER_CLASS * rho ** (-np.arange(C) / (C - 1)) + 1e-9).astype(int)
    np.testing.assert_array_equal(counts, expected)
    assert np.all(np.diff(counts) <= 0) and counts[0] == N_PER_CLASS
    assert counts[0] / counts[-1] >= rho and counts[0] / (counts[-1] + 1) < rho
    assert np.all(np.diff(out.index) > 0)  # sorted, unique
    np.testing.assert_array_equal(out.labels, Y[out.index])
    np.testing.assert_array_equal(out.clean, Y[out.index])
    assert out.noise_rate == 0.0


def test_long_tail_head_size_fits_every_class_of_an_unbalanced_set():
    available, rho = np.array([50, 400, 400, 30]), 8.0
    counts = long_tail_counts(available, rho)
    powers = rho ** (np.arange(4) / 3)
    np.testing.assert_array_equal(counts, np.floor(counts[0] / powers + 1e-9))
    assert np.all(counts <= available) and np.all(np.diff(counts) <= 0)
    # the head is as large as possible: one more would not fit some class
    assert np.any(np.floor((counts[0] + 1) / powers + 1e-9) > available)


def test_long_tail_that_would_empty_a_class_raises():
    with pytest.raises(ValueError, match="no sample"):
        apply_scenario("longtail:5000", Y, C, seed=0)


def test_class_groups_rank_and_partition_classes():
    for c in (6, 10, 50):
        counts = long_tail_counts(np.full(c, 1000), 100.0)[np.random.default_rng(c).permutation(c)]
        groups = class_groups(counts)
        ids = np.concatenate([groups["head"], groups["medium"], groups["tail"]])
        assert sorted(ids.tolist()) == list(range(c))
        sizes = [groups[g].size for g in ("head", "medium", "tail")]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        assert counts[groups["head"]].min() >= counts[groups["medium"]].max()
        assert counts[groups["medium"]].min() >= counts[groups["tail"]].max()


def test_natural_keeps_everything_and_is_long_tailed():
    out = apply_scenario("natural", Y, C, seed=0)
    np.testing.assert_array_equal(out.labels, Y)
    assert is_long_tailed("natural") and is_long_tailed("longtail:10+symmetric:0.1")
    assert not is_long_tailed("symmetric:0.1")


# ------------------------------------------------------------------ partial multi-label
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5])
def test_partial_drops_the_right_fraction_of_positives_only(rate):
    y = multilabel()
    out = apply_scenario(f"partial:{rate}", y, y.shape[1], seed=0)
    assert np.all(out.labels <= y)  # negatives never become positive
    dropped = 1 - out.labels.sum() / y.sum()
    assert abs(dropped - rate) <= four_sigma(rate, int(y.sum())) + 1e-12
    differ = (out.labels != y).any(axis=1).mean()
    assert math.isclose(out.noise_rate, differ)


def test_partial_can_empty_a_sample_unless_keep_one():
    y = multilabel()
    had = y.sum(axis=1) > 0
    free = drop_positives(y, y.shape[1], 0.6, np.random.default_rng(0))
    assert np.any(had & (free.sum(axis=1) == 0))
    kept = apply_scenario("partial:0.6:keep_one", y, y.shape[1], seed=0)
    assert not np.any(had & (kept.labels.sum(axis=1) == 0))
    assert np.all(kept.labels <= y)


# ------------------------------------------------------------------ composition and real labels
def test_composition_subsamples_then_adds_noise():
    lt = apply_scenario("longtail:100", Y, C, seed=9)
    both = apply_scenario("longtail:100+symmetric:0.2", Y, C, seed=9)
    np.testing.assert_array_equal(both.index, lt.index)
    np.testing.assert_array_equal(both.clean, Y[both.index])
    assert abs(both.noise_rate - 0.2) <= four_sigma(0.2, both.index.size)
    other_order = apply_scenario("symmetric:0.2+longtail:10", Y, C, seed=9)
    np.testing.assert_array_equal(other_order.clean, Y[other_order.index])


def test_cifar10n_reads_the_human_labels_from_extras():
    noisy = (Y + (np.arange(Y.size) % 3 == 0)) % C
    out = apply_scenario("cifar10n:worst", Y, C, seed=0, extras={"cifar10n/worst": noisy})
    np.testing.assert_array_equal(out.labels, noisy)
    assert math.isclose(out.noise_rate, float((noisy != Y).mean()))
    lt = apply_scenario(
        "longtail:10+cifar10n:worst", Y, C, seed=0, extras={"cifar10n/worst": noisy}
    )
    np.testing.assert_array_equal(lt.labels, noisy[lt.index])
    with pytest.raises(ValueError, match="extras"):
        apply_scenario("cifar10n:aggre", Y, C, seed=0, extras={"cifar10n/worst": noisy})
    with pytest.raises(ValueError, match="shape"):
        apply_scenario("cifar10n:worst", Y, C, seed=0, extras={"cifar10n/worst": noisy[:-1]})


def test_cifar10n_on_the_real_label_file():
    root = os.environ.get("LOSSKIT_DATA")
    path = Path(root) / "cifar10" / "cifar10n_labels.npz" if root else None
    if path is None or not path.exists():
        pytest.skip("LOSSKIT_DATA with cifar10/cifar10n_labels.npz is not available")
    with np.load(path, allow_pickle=False) as data:
        clean, worst = data["clean_label"], data["worse_label"]
    out = apply_scenario("cifar10n:worst", clean, 10, seed=0, extras={"cifar10n/worst": worst})
    assert math.isclose(out.noise_rate, float((worst != clean).mean()))
    assert 0.3 < out.noise_rate < 0.5  # the README's "worst" set is about 40 % noisy


# ------------------------------------------------------------------ specs, registry, errors
def test_parse_and_canonical_spellings():
    assert parse_scenario("symmetric:0.40") == ("symmetric", {"rate": 0.4, "target": "other"})
    assert parse_scenario("matrix:trace=7") == parse_scenario("matrix:7")
    name, params = parse_scenario("longtail:100+symmetric:0.2")
    assert name == "longtail+symmetric"
    assert params == {"longtail.rho": 100.0, "symmetric.rate": 0.2, "symmetric.target": "other"}
    assert canonical_scenario(" symmetric:rate=0.40:target=other ") == "symmetric:0.4"
    for spec in ["symmetric:0.4:any", "matrix:diag=0.7", "longtail:100+pairflip:0.1", "clean"]:
        assert canonical_scenario(spec) == spec
        assert canonical_scenario(canonical_scenario(spec)) == spec


def test_registry_lists_every_scenario():
    names = list_scenarios()
    expected = {"clean", "symmetric", "pairflip", "matrix", "cifar10n", "longtail", "natural"}
    assert expected | {"partial", "subset"} == set(names)
    assert {e.name for e in losskit.catalog(kind="scenario", family="labels")} == set(names)
    assert losskit.get("longtail").papers == (15,)
    index, labels = losskit.get("symmetric").function(Y, C, np.random.default_rng(0), rate=0.5)
    assert index.size == Y.size and 0 < (labels != Y).mean() < 1


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("symmetric:1", "rate"),
        ("symmetric:1.5", "rate"),
        ("pairflip:-0.1", "rate"),
        ("symmetric:nan", "rate"),
        ("longtail:0.5", "rho"),
        ("longtail:inf", "rho"),
        ("cifar10n:best", "label_set"),
        ("gaussian:0.2", "unknown scenario"),
        ("symmetric", "needs 'rate'"),
        ("symmetric:abc", "number"),
        ("symmetric:0.2:sideways", "target"),
        ("symmetric:rate=0.1:0.2", "malformed"),
        ("symmetric:0.1:rate=0.2", "malformed"),
        ("symmetric::any", "malformed"),
        ("clean:1", "malformed"),
        ("symmetric:0.2+", "malformed"),
        ("symmetric:0.2+symmetric:0.1", "twice"),
        ("matrix:trace=7:diag=0.7", "exactly one"),
        ("matrix:0.9", "trace"),
        ("matrix:11", r"\(1, 10\]"),
        ("", "non-empty"),
    ],
)
def test_bad_specs_raise_value_error(spec, match):
    with pytest.raises(ValueError, match=match):
        apply_scenario(spec, Y, C, seed=0)


def test_bad_labels_and_seeds_raise_value_error():
    with pytest.raises(ValueError, match="integer"):
        apply_scenario("clean", Y.astype(float), C, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        apply_scenario("clean", Y + 1, C, seed=0)
    with pytest.raises(ValueError, match="seed"):
        apply_scenario("clean", Y, C, seed=-1)
    with pytest.raises(ValueError, match="shape"):
        apply_scenario("symmetric:0.1", multilabel(c=C), C, seed=0)
    with pytest.raises(ValueError, match="multi-label"):
        apply_scenario("partial:0.1", Y, C, seed=0)
    with pytest.raises(ValueError, match="rho"):
        long_tail_counts(np.full(C, 10), 0.99)
    with pytest.raises(ValueError, match="rows"):
        Corrupted(np.arange(3), np.zeros(2), np.zeros(2))


def test_subset_is_stratified_and_composes_with_real_labels():
    y = np.repeat(np.arange(4), [100, 50, 30, 7])
    out = apply_scenario("subset:0.5", y, 4, seed=3)
    assert np.bincount(out.labels, minlength=4).tolist() == [50, 25, 15, 3]
    assert np.array_equal(out.labels, y[out.index]) and np.all(np.diff(out.index) > 0)
    again = apply_scenario("subset:0.5", y, 4, seed=3)
    assert np.array_equal(out.index, again.index)
    human = (y + (np.arange(y.size) % 3 == 0)) % 4  # every third label wrong
    both = apply_scenario(
        "subset:0.5+cifar10n:worst", y, 4, seed=3, extras={"cifar10n/worst": human}
    )
    assert np.array_equal(both.index, out.index)
    assert np.array_equal(both.labels, human[both.index])
    assert np.array_equal(both.clean, y[both.index])
    for bad in ("subset:0", "subset:1.5"):
        with pytest.raises(ValueError, match="fraction"):
            apply_scenario(bad, y, 4, seed=0)
