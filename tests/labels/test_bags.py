"""Bag construction and aggregation (paper 48): partitions of the right sizes, random bags
uniform over pairs, sorted bags contiguous in the score, bag means against a loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from losskit.labels.bags import (
    bag_folds,
    bag_responses,
    check_bag_ids,
    random_bags,
    sorted_bags,
)


@pytest.mark.parametrize("n, k", [(10, 1), (10, 3), (12, 4), (9, 5), (7, 7)])
def test_random_bags_partition_sizes(n, k):
    ids = random_bags(n, k, seed=1)
    m = n // k
    counts = np.bincount(ids)
    assert ids.dtype == np.int64 and ids.shape == (n,) and counts.size == m
    assert counts.min() >= k and counts.sum() == n
    assert set(counts.tolist()) <= {n // m, -(-n // m)}
    np.testing.assert_array_equal(ids, random_bags(n, k, seed=1))


def test_random_bags_pair_probability():
    # n = 6 in 3 bags of 2: a given pair shares a bag with probability 1 / (n - 1)
    seeds = 3000
    together = np.mean([(lambda b: b[0] == b[1])(random_bags(6, 2, seed=s)) for s in range(seeds)])
    p = 1 / 5
    assert abs(together - p) < 4 * math.sqrt(p * (1 - p) / seeds)


def test_sorted_bags_are_contiguous_in_the_score():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=23)
    ids = sorted_bags(scores, 4)
    m = ids.max() + 1
    assert m == 5 and np.bincount(ids).min() >= 4
    for b in range(m - 1):
        assert scores[ids == b].max() <= scores[ids == b + 1].min()
    # ties keep the input order (stable sort)
    np.testing.assert_array_equal(sorted_bags(np.zeros(6), 2), [0, 0, 1, 1, 2, 2])


def test_bag_responses_match_a_loop():
    rng = np.random.default_rng(1)
    y = rng.normal(size=17)
    ids = random_bags(17, 3, seed=2)
    slow = [np.mean([y[i] for i in range(17) if ids[i] == b]) for b in range(ids.max() + 1)]
    np.testing.assert_allclose(bag_responses(y, ids), slow, rtol=1e-14)


def test_bag_folds():
    f = bag_folds(11, 3, seed=0)
    assert sorted(np.bincount(f).tolist()) == [3, 4, 4]
    np.testing.assert_array_equal(f, bag_folds(11, 3, seed=0))
    for args, match in (((1, 2), "num_bags"), ((5, 1), "folds"), ((3, 4), "folds must be <=")):
        with pytest.raises(ValueError, match=match):
            bag_folds(*args)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: random_bags(5, 6), "bag_size must be <="),
        (lambda: random_bags(5, 0), "bag_size"),
        (lambda: random_bags(0, 1), "n must"),
        (lambda: random_bags(5, 2.0), "bag_size"),
        (lambda: sorted_bags(np.array([1.0, np.nan]), 1), "finite"),
        (lambda: sorted_bags(np.ones((2, 2)), 1), "scores"),
        (lambda: bag_responses(np.ones(4), np.array([0, 0, 2, 2])), "bag 1 is empty"),
        (lambda: bag_responses(np.ones(4), np.array([0, 0, 1])), "4 entries"),
        (lambda: bag_responses(np.ones(3), np.array([0, -1, 1])), ">= 0"),
        (lambda: bag_responses(np.ones(2), np.array([0.0, 1.0])), "integer"),
        (lambda: bag_responses(np.array([1.0, np.inf]), np.array([0, 1])), "finite"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_check_bag_ids_returns_number_of_bags():
    ids, m = check_bag_ids([2, 0, 1, 1])
    assert m == 3 and ids.dtype == np.int64


def test_registered():
    from losskit._core.registry import get

    assert get("aggregate_random_bags").function is random_bags
    assert get("aggregate_random_bags").papers == (48,)
    assert get("aggregate_sorted_bags").function is sorted_bags
