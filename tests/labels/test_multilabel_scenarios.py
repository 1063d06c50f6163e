"""Multi-label scenarios: achieved drop rates, frequency dependence, masks, determinism, specs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import losskit
from losskit.labels import apply_scenario
from losskit.labels.multilabel import (
    PROPENSITY_A,
    PROPENSITY_B,
    apply_multilabel_scenario,
    canonical_multilabel_scenario,
    frequency_drop_rates,
    list_multilabel_scenarios,
    parse_multilabel_scenario,
)

N, L = 4000, 12


def zipf_targets(n: int = N, num_labels: int = L, seed: int = 7) -> np.ndarray:
    """Label l positive with prob. 0.5 / (l + 1): frequencies from ~2000 down to ~150."""
    p = 0.5 / np.arange(1, num_labels + 1)
    return (np.random.default_rng(seed).random((n, num_labels)) < p).astype(np.int64)


Y = zipf_targets()


def four_sigma(p: float, n: int) -> float:
    return 4.0 * math.sqrt(p * (1.0 - p) / n)


@pytest.mark.parametrize("name", ["partial", "partial_freq", "partial_known"])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.6])
def test_drop_only_positives_at_the_expected_rate(name, rate):
    y = Y.copy()
    out = apply_multilabel_scenario(f"{name}:{rate}", y, seed=3)
    assert np.array_equal(y, Y)  # the input is not modified
    assert np.array_equal(out.clean, Y) and out.labels.dtype == np.int64
    assert not ((out.labels == 1) & (Y == 0)).any()  # no negative becomes positive
    assert abs(out.drop_rate - rate) <= four_sigma(rate, int(Y.sum())) + 1e-12


def test_clean_is_identity_and_has_no_mask():
    out = apply_multilabel_scenario("clean", Y, seed=0)
    assert np.array_equal(out.labels, Y) and out.mask is None and out.drop_rate == 0.0


def test_partial_matches_the_generic_partial_step_and_rows_may_lose_every_positive():
    ours = apply_multilabel_scenario("partial:0.6", Y, seed=11)
    generic = apply_scenario("partial:0.6", Y, L, seed=11)
    assert np.array_equal(ours.labels, generic.labels) and ours.mask is None
    had = Y.sum(axis=1) > 0
    assert ((ours.labels.sum(axis=1) == 0) & had).any()  # documented: nothing is given back


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6, 0.9])
def test_frequency_rates_hit_the_overall_rate_and_fall_with_frequency(rate):
    counts = Y.sum(axis=0)
    d = frequency_drop_rates(counts, rate)
    assert np.isclose((counts * d).sum() / counts.sum(), rate, rtol=0, atol=1e-9)
    order = np.argsort(counts)  # rare first
    assert np.all(np.diff(d[order]) <= 1e-15) and d[order[0]] > d[order[-1]]
    assert np.all((d > 0) & (d < 1))
    # the shape is the propensity model: logit(d) + A log(n + B) is the same for every label
    logit = np.log(d / (1 - d)) + PROPENSITY_A * np.log(counts + PROPENSITY_B)
    assert np.ptp(logit) < 1e-9


def test_frequency_dependent_drop_is_per_label_as_designed():
    out = apply_multilabel_scenario("partial_freq:0.4", Y, seed=5)
    d = frequency_drop_rates(Y.sum(axis=0), 0.4)
    pos = Y.sum(axis=0)
    achieved = ((Y == 1) & (out.labels == 0)).sum(axis=0) / pos
    tol = np.array([four_sigma(p, int(n)) for p, n in zip(d, pos, strict=True)])
    assert np.all(np.abs(achieved - d) <= tol)
    assert achieved[-1] > achieved[0]  # the rarest label loses more than the most frequent


def test_frequency_drop_rates_edge_cases():
    assert not frequency_drop_rates(np.array([5, 0, 3]), 0.0).any()
    assert not frequency_drop_rates(np.zeros(3), 0.5).any()
    with pytest.raises(ValueError, match="counts"):
        frequency_drop_rates(np.array([-1, 2]), 0.5)
    with pytest.raises(ValueError, match="rate"):
        frequency_drop_rates(np.array([1, 2]), 1.0)


def test_partial_known_masks_exactly_the_dropped_and_as_many_negatives():
    out = apply_multilabel_scenario("partial_known:0.3", Y, seed=9)
    plain = apply_multilabel_scenario("partial:0.3", Y, seed=9)
    assert np.array_equal(out.labels, plain.labels)  # same draws, same observed labels
    dropped = (Y == 1) & (out.labels == 0)
    unknown = ~out.mask
    assert np.array_equal(unknown & (Y == 1), dropped)  # every dropped positive, no kept one
    hidden_negatives = unknown & (Y == 0)
    assert hidden_negatives.sum() == dropped.sum()
    # hidden negatives are spread over the labels, not just copies of the dropped entries
    assert (hidden_negatives.sum(axis=0) > 0).sum() == L
    # unknown entries hold no information: about half of them are true positives
    assert out.unknown_rate == pytest.approx(2 * dropped.sum() / Y.size)


def test_partial_known_caps_at_the_number_of_negatives_and_rate_zero_knows_everything():
    dense = np.ones((50, 4), dtype=np.int64)
    dense[0, 0] = 0
    out = apply_multilabel_scenario("partial_known:0.9", dense, seed=1)
    assert (~out.mask & (dense == 0)).sum() == 1
    zero = apply_multilabel_scenario("partial_known:0", Y, seed=1)
    assert zero.mask.all() and np.array_equal(zero.labels, Y)


@pytest.mark.parametrize("spec", ["partial:0.5", "partial_freq:0.5", "partial_known:0.5"])
def test_deterministic_by_seed(spec):
    a, b = (apply_multilabel_scenario(spec, Y, seed=4) for _ in range(2))
    c = apply_multilabel_scenario(spec, Y, seed=5)
    assert np.array_equal(a.labels, b.labels)
    assert (a.mask is None and b.mask is None) or np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.labels, c.labels)


def test_spec_spellings_and_registry():
    assert parse_multilabel_scenario("multilabel_partial:rate=0.30") == ("partial", 0.3)
    assert canonical_multilabel_scenario(" partial_freq : 0.60 ") == "partial_freq:0.6"
    assert canonical_multilabel_scenario("multilabel_clean") == "clean"
    names = {e.name for e in losskit.catalog(kind="scenario", family="multilabel")}
    assert names == {"multilabel_" + n for n in list_multilabel_scenarios()}
    assert losskit.get("multilabel_partial").papers == (19, 43)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("partial", "needs a rate"),
        ("partial:1.0", "rate"),
        ("partial:-0.1", "rate"),
        ("partial:abc", "needs a rate"),
        ("partial:mode=0.3", "only 'rate'"),
        ("clean:0.2", "takes no argument"),
        ("symmetric:0.2", "unknown multi-label scenario"),
        ("", "non-empty"),
    ],
)
def test_bad_specs_raise(spec, match):
    with pytest.raises(ValueError, match=match):
        apply_multilabel_scenario(spec, Y, seed=0)


def test_bad_targets_and_seed_raise():
    with pytest.raises(ValueError, match="0 or 1"):
        apply_multilabel_scenario("partial:0.3", Y * 2, seed=0)
    with pytest.raises(ValueError, match=r"\[n, L\]"):
        apply_multilabel_scenario("partial:0.3", Y[:, 0], seed=0)
    with pytest.raises(ValueError, match="seed"):
        apply_multilabel_scenario("partial:0.3", Y, seed=-1)
