"""Corrupted modular-arithmetic datasets (paper 55): coverage of Z_p x Z_p, labels against a
brute-force loop, the split, the corruption count and its expected wrong fraction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from losskit.labels.modular import modular_dataset, modular_labels


@pytest.mark.parametrize("operation", ["addition", "multiplication"])
def test_every_pair_once_with_brute_force_labels(operation):
    p = 7
    d = modular_dataset(p, operation=operation, train_fraction=0.6, corruption=0.0, seed=1)
    pairs = sorted(zip(d.a.tolist(), d.b.tolist(), strict=True))
    assert pairs == [(i, j) for i in range(p) for j in range(p)]
    for a, b, y in zip(d.a, d.b, d.labels, strict=True):
        expected = (a + b) % p if operation == "addition" else (a * b) % p
        assert y == expected and d.a[a * p + b] == a and d.b[a * p + b] == b
    assert np.array_equal(d.train_labels, d.labels[d.train])  # no corruption at xi = 0
    assert d.corrupted.size == 0 and not d.wrong.any()


def test_split_is_a_partition_of_the_requested_size():
    d = modular_dataset(11, train_fraction=0.37, corruption=0.2, seed=3)
    assert d.train.size == int(0.37 * 121) and d.test.size == 121 - d.train.size
    assert np.array_equal(np.sort(np.concatenate([d.train, d.test])), np.arange(121))
    assert np.array_equal(d.test_labels, d.labels[d.test])
    assert d.corrupted.size == int(0.2 * d.train.size)
    assert np.unique(d.corrupted).size == d.corrupted.size
    # Labels outside the corrupted set are untouched; corrupted labels stay in Z_p.
    clean = np.setdiff1d(np.arange(d.train.size), d.corrupted)
    assert np.array_equal(d.train_labels[clean], d.labels[d.train][clean])
    assert d.train_labels.min() >= 0 and d.train_labels.max() < 11
    assert set(np.flatnonzero(d.wrong)) <= set(d.corrupted.tolist())


def test_seed_fixes_the_dataset_and_changes_it():
    a = modular_dataset(13, corruption=0.3, seed=5)
    b = modular_dataset(13, corruption=0.3, seed=5)
    c = modular_dataset(13, corruption=0.3, seed=6)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.train_labels, b.train_labels)
    assert not np.array_equal(a.train, c.train)


def test_expected_wrong_fraction_is_xi_times_one_minus_one_over_p():
    # p = 23, alpha = 0.5: n_train = 264, xi = 0.25 gives exactly 66 redrawn labels, each
    # wrong with probability 1 - 1/p; over S seeds the wrong count is Binomial(S * 66, 1 - 1/p).
    p, xi, seeds = 23, 0.25, 400
    wrong = [modular_dataset(p, corruption=xi, seed=s).wrong.mean() for s in range(seeds)]
    n_train = int(0.5 * p * p)
    target = xi * (1 - 1 / p)
    q = 1 - 1 / p
    std = math.sqrt(xi * n_train * q * (1 - q)) / n_train / math.sqrt(seeds)
    assert abs(np.mean(wrong) - target) < 4 * std
    # The redraw lands on the true label about 1/p of the time: some labels stay right.
    assert np.mean(wrong) < xi


def test_modular_labels_function():
    a, b = np.array([0, 5, 6]), np.array([6, 6, 6])
    assert modular_labels(a, b, 7).tolist() == [6, 4, 5]
    assert modular_labels(a, b, 7, "multiplication").tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="p must"):
        modular_labels(a, b, 0)
    with pytest.raises(ValueError, match="operation"):
        modular_labels(a, b, 7, "subtraction")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"p": 1}, "p must be"),
        ({"p": 5.0}, "p must be"),
        ({"p": True}, "p must be"),
        ({"p": 7, "train_fraction": 0.0}, "train_fraction"),
        ({"p": 7, "train_fraction": 1.5}, "train_fraction"),
        ({"p": 7, "train_fraction": 0.01}, "no training pair"),
        ({"p": 7, "corruption": -0.1}, "corruption"),
        ({"p": 7, "corruption": float("nan")}, "corruption"),
        ({"p": 7, "operation": "division"}, "operation"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        modular_dataset(**kwargs)
