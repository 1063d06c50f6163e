"""Confident learning (paper 34): confident joint, calibration, noise estimates and
find_label_issues, against slow loops, exact properties and cleanlab (test-only dependency)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from losskit.labels.confident_learning import (
    calibrate_confident_joint,
    compute_confident_joint,
    confident_thresholds,
    estimate_joint,
    estimate_noise_matrices,
)
from losskit.labels.label_issues import FILTERS, find_label_issues
from losskit.labels.quality_scores import METHODS, label_quality_scores

# Jaccard asserted against cleanlab where probabilities tie: the two break ties differently
# (cleanlab: numpy's unstable quicksort; here: the lower index, which the batched path needs).
# Measured on the quantised case below: 0.990 to 1.000.
TIED_JACCARD = 0.98


def make_case(seed, n=1500, k=6, *, imbalance=1.0, noise=0.15, signal=2.5, decimals=None):
    """Labels with ``noise`` flipped at random, and softmax probabilities peaked at the true
    class; ``imbalance`` < 1 gives a geometric class prior, ``decimals`` rounds (ties)."""
    rng = np.random.default_rng(seed)
    prior = imbalance ** np.arange(k)
    truth = rng.choice(k, n, p=prior / prior.sum())
    logits = rng.normal(size=(n, k)) * 1.5
    logits[np.arange(n), truth] += signal
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if decimals is not None:
        p = np.round(p, decimals)
        p /= p.sum(axis=1, keepdims=True)
    given = truth.copy()
    flip = rng.random(n) < noise
    given[flip] = rng.integers(0, k, int(flip.sum()))
    return given, p, truth


CASES = {
    "balanced": dict(seed=0),
    "imbalanced": dict(seed=1, k=8, imbalance=0.6),
    "many_classes": dict(seed=2, n=2500, k=20, noise=0.3),
    "near_perfect": dict(seed=3, signal=12.0, noise=0.02),
    "binary": dict(seed=4, k=2, noise=0.2),
}


def jaccard(a, b) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def slow_thresholds(y, p):
    return np.array(
        [np.mean([p[i, j] for i in range(len(y)) if y[i] == j]) for j in range(p.shape[1])]
    )


def slow_confident_joint(y, p, t):
    """Straight from the definition: count (given, guessed) over rows with a passing class."""
    k = p.shape[1]
    cj = np.zeros((k, k), dtype=int)
    for i in range(len(y)):
        passing = [j for j in range(k) if p[i, j] >= t[j] - 1e-6]
        if passing:
            cj[y[i], passing[0] if len(passing) == 1 else int(np.argmax(p[i]))] += 1
    for j in range(k):
        cj[j, j] = max(cj[j, j], 1)
    return cj


def test_thresholds_and_joint_match_slow_loops():
    y, p, _ = make_case(0, n=400, k=5)
    t = confident_thresholds(y, p)
    np.testing.assert_allclose(t, slow_thresholds(y, p), rtol=1e-14, atol=0)
    np.testing.assert_array_equal(
        compute_confident_joint(y, p, calibrate=False), slow_confident_joint(y, p, t)
    )


def test_one_hot_agreeing_probabilities_give_a_diagonal_joint_and_no_issues():
    y = np.repeat(np.arange(4), [30, 5, 12, 50])
    p = np.eye(4)[y]
    cj = compute_confident_joint(y, p, calibrate=False)
    np.testing.assert_array_equal(cj, np.diag(np.bincount(y)))
    np.testing.assert_array_equal(compute_confident_joint(y, p), np.diag(np.bincount(y)))
    est = estimate_noise_matrices(y, p)
    assert est.noise_rate == 0.0 and est.num_issues == 0
    np.testing.assert_allclose(est.noise_matrix, np.eye(4))
    for f in FILTERS:
        assert not find_label_issues(y, p, filter_by=f).any()
        assert (
            len(find_label_issues(y, p, filter_by=f, return_indices_ranked_by="self_confidence"))
            == 0
        )


@pytest.mark.parametrize("name", list(CASES))
def test_calibration_rows_sum_to_label_counts(name):
    y, p, _ = make_case(**CASES[name])
    cal = compute_confident_joint(y, p)
    np.testing.assert_array_equal(cal.sum(axis=1), np.bincount(y, minlength=p.shape[1]))
    assert cal.sum() == len(y)
    raw = compute_confident_joint(y, p, calibrate=False)
    np.testing.assert_array_equal(calibrate_confident_joint(raw, y), cal)
    joint = estimate_joint(y, p)
    np.testing.assert_allclose(joint.sum(axis=1), np.bincount(y, minlength=p.shape[1]) / len(y))
    est = estimate_noise_matrices(y, p)
    np.testing.assert_allclose(est.noise_matrix.sum(axis=0), 1.0)
    np.testing.assert_allclose(est.inverse_noise_matrix.sum(axis=0), 1.0)
    np.testing.assert_allclose(est.true_prior.sum(), 1.0)
    assert est.noise_rate == pytest.approx(1 - np.trace(joint))


def test_noise_rate_tracks_injected_noise_with_a_good_model():
    y, p, truth = make_case(5, n=4000, k=5, noise=0.2, signal=6.0)
    true_rate = (y != truth).mean()
    assert abs(estimate_noise_matrices(y, p).noise_rate - true_rate) < 0.03


def slow_prune(y, p, filter_by):
    """prune_by_noise_rate / prune_by_class with sorted() on (key, index): obviously correct
    selections given the calibrated joint (min_examples_per_class = 1)."""
    k = p.shape[1]
    m = compute_confident_joint(y, p).T.astype(float)
    diag = m.diagonal().copy()
    raised = np.maximum(diag, 1)
    per_col = np.maximum(np.count_nonzero(m, axis=0) - 1.0, 1.0)
    m = np.clip(m - (raised - diag) / per_col, 0, None)
    np.fill_diagonal(m, raised)
    m = m.astype(int)
    flagged = set()
    for c in range(k):
        rows = [i for i in range(len(y)) if y[i] == c]
        if len(rows) <= 1:
            continue
        if filter_by == "prune_by_class":
            flagged |= set(sorted(rows, key=lambda i: (p[i, c], i))[: len(rows) - m[c, c]])
        else:
            for j in range(k):
                if j != c and m[j, c] > 0:
                    flagged |= set(sorted(rows, key=lambda i: (-(p[i, j] - p[i, c]), i))[: m[j, c]])
    mask = np.zeros(len(y), dtype=bool)
    mask[list(flagged)] = True
    bumped = p.copy()
    bumped[np.arange(len(y)), y] += 1e-6
    return mask & (bumped.argmax(axis=1) != y)


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "prune_by_class"])
@pytest.mark.parametrize("decimals", [None, 2])
def test_pruning_matches_slow_reference(filter_by, decimals):
    y, p, _ = make_case(6, n=500, k=4, decimals=decimals)
    np.testing.assert_array_equal(
        find_label_issues(y, p, filter_by=filter_by), slow_prune(y, p, filter_by)
    )


@pytest.mark.parametrize("decimals", [None, 2])
@pytest.mark.parametrize(("n", "batch_size"), [(150, 1), (1200, 97), (1200, 1000), (1200, 5000)])
def test_low_memory_path_equals_in_memory(decimals, n, batch_size):
    y, p, _ = make_case(7, n=n, k=5, decimals=decimals)
    for f in FILTERS:
        full = find_label_issues(y, p, filter_by=f)
        lm = find_label_issues(y, p, filter_by=f, low_memory=True, batch_size=batch_size)
        np.testing.assert_array_equal(lm, full)
    for method in METHODS:
        full = find_label_issues(y, p, return_indices_ranked_by=method)
        lm = find_label_issues(
            y, p, return_indices_ranked_by=method, low_memory=True, batch_size=batch_size
        )
        np.testing.assert_array_equal(lm, full)


def test_low_memory_reads_torch_tensors_and_memmaps(tmp_path):
    y, p, _ = make_case(8, n=800)
    full = find_label_issues(y, p)
    np.testing.assert_array_equal(
        find_label_issues(torch.as_tensor(y), torch.as_tensor(p), low_memory=True, batch_size=100),
        full,
    )
    path = tmp_path / "p.npy"
    np.save(path, p)
    np.testing.assert_array_equal(
        find_label_issues(y, np.load(path, mmap_mode="r"), low_memory=True, batch_size=64), full
    )
    np.testing.assert_array_equal(
        find_label_issues(torch.as_tensor(y), torch.as_tensor(p).float()),
        find_label_issues(y, torch.as_tensor(p).float().numpy()),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_every_filter_flags_a_subset_of_the_argmax_disagreements(name):
    y, p, _ = make_case(**CASES[name])
    baseline = find_label_issues(y, p, filter_by="predicted_neq_given")
    np.testing.assert_array_equal(baseline, p.argmax(axis=1) != y)
    for f in FILTERS:
        assert not (find_label_issues(y, p, filter_by=f) & ~baseline).any()
    both = find_label_issues(y, p, filter_by="both")
    assert not (both & ~find_label_issues(y, p, filter_by="prune_by_class")).any()


def test_ranked_indices_are_the_mask_sorted_by_score():
    y, p, _ = make_case(9)
    mask = find_label_issues(y, p)
    for method in METHODS:
        idx = find_label_issues(y, p, return_indices_ranked_by=method)
        assert set(idx) == set(np.flatnonzero(mask))
        assert np.all(np.diff(label_quality_scores(y, p, method=method)[idx]) >= 0)


def test_absent_class_is_allowed_and_never_a_confident_true_class():
    y, p, _ = make_case(10, k=5)
    keep = y != 3
    y, p = y[keep], p[keep]
    t = confident_thresholds(y, p)
    assert t[3] == 2.0
    cj = compute_confident_joint(y, p, calibrate=False)
    assert cj[:, 3].sum() == 1 and cj[3, 3] == 1  # only the diagonal clip
    assert compute_confident_joint(y, p)[3].sum() == 0
    assert find_label_issues(y, p).dtype == bool


@pytest.mark.parametrize(
    ("labels", "probs", "match"),
    [
        (np.array([0, 1]), np.array([[0.5, 0.6], [0.5, 0.5]]), "sum to 1"),
        (np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), "class id 2"),
        (np.array([0, -1]), np.array([[0.5, 0.5], [0.5, 0.5]]), "class id -1"),
        (np.array([0, 1, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), "must match"),
        (np.array([0.0, 1.0]), np.array([[0.5, 0.5], [0.5, 0.5]]), "integer"),
        (np.array([0, 1]), np.array([[np.nan, 1.0], [0.5, 0.5]]), "finite"),
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 0.5]]), r"\[0, 1\]"),
        (np.array([0, 1]), np.array([0.5, 0.5]), r"\[N, K\]"),
        (np.array([0, 0]), np.array([[1.0], [1.0]]), "at least 2 classes"),
    ],
)
def test_bad_inputs_raise_clear_errors(labels, probs, match):
    for fn in (find_label_issues, compute_confident_joint, estimate_noise_matrices):
        with pytest.raises(ValueError, match=match):
            fn(labels, probs)
    with pytest.raises(ValueError, match=match):
        find_label_issues(labels, probs, low_memory=True, batch_size=1)


def test_bad_arguments():
    y, p, _ = make_case(11, n=50)
    with pytest.raises(ValueError, match="filter_by"):
        find_label_issues(y, p, filter_by="prune")
    with pytest.raises(ValueError, match="return_indices_ranked_by"):
        find_label_issues(y, p, return_indices_ranked_by="margin")
    with pytest.raises(ValueError, match="batch_size"):
        find_label_issues(y, p, low_memory=True, batch_size=0)
    with pytest.raises(ValueError, match="min_examples_per_class"):
        find_label_issues(y, p, min_examples_per_class=-1)
    with pytest.raises(ValueError, match="thresholds"):
        compute_confident_joint(y, p, thresholds=np.ones(3))
    with pytest.raises(ValueError, match="multi-label"):
        find_label_issues(np.zeros((50, 2)), p, multi_label=True)


# --- against cleanlab ------------------------------------------------------------------------


def _cleanlab():
    pytest.importorskip("cleanlab")
    import cleanlab.count
    import cleanlab.filter

    return cleanlab


@pytest.mark.parametrize("name", list(CASES))
def test_joint_and_noise_matrices_equal_cleanlab(name):
    cl = _cleanlab()
    y, p, _ = make_case(**CASES[name])
    for calibrate in (False, True):
        np.testing.assert_array_equal(
            compute_confident_joint(y, p, calibrate=calibrate),
            cl.count.compute_confident_joint(y, p, calibrate=calibrate),
        )
    np.testing.assert_allclose(
        confident_thresholds(y, p), cl.count.get_confident_thresholds(y, p), rtol=1e-14
    )
    py, nm, inv, cj = cl.count.estimate_py_and_noise_matrices_from_probabilities(y, p)
    est = estimate_noise_matrices(y, p)
    np.testing.assert_array_equal(est.calibrated_joint, cj)
    np.testing.assert_allclose(est.true_prior, py, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.noise_matrix, nm, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.inverse_noise_matrix, inv, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(estimate_joint(y, p), cl.count.estimate_joint(y, p), rtol=1e-12)
    off = cl.count.num_label_issues(y, p, estimation_method="off_diagonal_calibrated")
    assert est.num_issues == off


@pytest.mark.parametrize("name", list(CASES))
def test_issue_masks_and_rankings_equal_cleanlab(name):
    cl = _cleanlab()
    y, p, _ = make_case(**CASES[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in FILTERS:
            ours = find_label_issues(y, p, filter_by=f)
            np.testing.assert_array_equal(
                ours, cl.filter.find_label_issues(y, p, filter_by=f, n_jobs=1)
            )
            for method in METHODS:
                theirs = cl.filter.find_label_issues(
                    y, p, filter_by=f, return_indices_ranked_by=method, n_jobs=1
                )
                ranked = find_label_issues(y, p, filter_by=f, return_indices_ranked_by=method)
                if method == "confidence_weighted_entropy" and name == "near_perfect":
                    # label probabilities below 1e-6: cleanlab's clip changes this score there
                    # (quality_scores docstring); the flagged set is the same
                    np.testing.assert_array_equal(np.sort(ranked), np.sort(theirs))
                    continue
                np.testing.assert_array_equal(ranked, theirs)


def test_tied_probabilities_agree_with_cleanlab_up_to_tie_breaking():
    cl = _cleanlab()
    y, p, _ = make_case(12, n=3000, k=6, decimals=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in FILTERS:
            ours = find_label_issues(y, p, filter_by=f)
            theirs = cl.filter.find_label_issues(y, p, filter_by=f, n_jobs=1)
            assert jaccard(ours, theirs) >= TIED_JACCARD, f
            if f in ("confident_learning", "predicted_neq_given"):  # no selection, no ties
                np.testing.assert_array_equal(ours, theirs)
        ours = find_label_issues(
            y, p, filter_by="confident_learning", return_indices_ranked_by="self_confidence"
        )
        theirs = cl.filter.find_label_issues(
            y,
            p,
            filter_by="confident_learning",
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
        scores = label_quality_scores(y, p)
        np.testing.assert_array_equal(scores[ours], scores[theirs])  # same order of scores


def test_released_cifar10_probabilities_equal_cleanlab():
    import os
    from pathlib import Path

    cl = _cleanlab()
    folder = Path(os.environ.get("LOSSKIT_DATA", "") or "/nonexistent") / "cifar10"
    if not (folder / "cifar10_test_set_pyx.npy").is_file():
        pytest.skip("LOSSKIT_DATA does not hold the cleanlab CIFAR-10 artefacts")
    p = np.load(folder / "cifar10_test_set_pyx.npy")
    y = np.load(folder / "cifar10_test_set_original_labels.npy").astype(np.int64)
    for f in FILTERS:
        np.testing.assert_array_equal(
            find_label_issues(y, p, filter_by=f),
            cl.filter.find_label_issues(y, p, filter_by=f, n_jobs=1),
        )


def test_multilabel_equals_cleanlab():
    _cleanlab()
    from cleanlab.multilabel_classification.filter import find_label_issues as ml_issues

    rng = np.random.default_rng(13)
    n, k = 800, 4
    y = (rng.random((n, k)) < 0.3).astype(int)
    p = np.clip(y * 0.6 + rng.random((n, k)) * 0.4, 0, 1)
    p = np.where(rng.random((n, k)) < 0.05, 1 - p, p)
    lists = [list(np.flatnonzero(r)) for r in y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in FILTERS:
            ours = find_label_issues(y, p, filter_by=f, multi_label=True)
            np.testing.assert_array_equal(ours, ml_issues(lists, p, filter_by=f, n_jobs=1))
            np.testing.assert_array_equal(
                find_label_issues(
                    lists, p, filter_by=f, multi_label=True, low_memory=True, batch_size=77
                ),
                ours,
            )
        for method in METHODS:
            np.testing.assert_array_equal(
                find_label_issues(y, p, multi_label=True, return_indices_ranked_by=method),
                ml_issues(lists, p, return_indices_ranked_by=method, n_jobs=1),
            )
