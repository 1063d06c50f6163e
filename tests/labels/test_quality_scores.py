"""Label-quality scores (paper 34): slow references, properties, cleanlab, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from losskit.labels.confident_learning import confident_thresholds
from losskit.labels.quality_scores import (
    METHODS,
    exponential_moving_average,
    label_quality_scores,
    multilabel_quality_scores,
)


def random_case(seed, n=200, k=5):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.7), size=n)
    return rng.integers(0, k, n), p


def slow_score(method, label, row):
    """One example at a time, straight from the formulas."""
    own = row[label]
    if method == "self_confidence":
        return own
    if method == "normalized_margin":
        return (own - max(v for j, v in enumerate(row) if j != label) + 1) / 2
    entropy = -sum(v * math.log(v) for v in row if v > 0) / math.log(len(row))
    if own == 0:
        return 0.0
    s = entropy / own
    return math.log(1 + s) / s if s > 0 else 1.0


@pytest.mark.parametrize("method", METHODS)
def test_scores_match_slow_formulas_and_lie_in_unit_interval(method):
    y, p = random_case(0)
    p[0] = np.eye(5)[y[0]]  # a one-hot row: entropy 0
    fast = label_quality_scores(y, p, method=method)
    slow = np.array([slow_score(method, y[i], p[i]) for i in range(len(y))])
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-15)
    assert fast.min() >= 0 and fast.max() <= 1


@pytest.mark.parametrize("method", METHODS)
def test_agreeing_one_hot_scores_highest_and_disagreeing_lowest(method):
    y = np.array([0, 1, 2])
    p = np.eye(3)[[0, 1, 0]]
    s = label_quality_scores(y, p, method=method)
    assert s[0] == s[1] == 1.0 and s[2] == 0.0


def test_confidence_weighted_entropy_is_monotone_in_the_label_probability():
    """From near-certain right to near-certain wrong the score falls from ~1 to ~0 (cleanlab's
    clips give near 0 at both ends)."""
    y = np.zeros(7, dtype=np.int64)
    eps = np.array([1e-15, 1e-9, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-9, 1 - 1e-15])
    s = label_quality_scores(
        y, np.stack([1 - eps, eps], axis=1), method="confidence_weighted_entropy"
    )
    assert s[0] > 0.999 and s[-1] < 0.1 and np.all(np.diff(s) < 0)


def test_normalized_margin_orders_like_the_papers_raw_margin():
    y, p = random_case(1)
    raw = p[np.arange(len(y)), y] - np.where(np.eye(5, dtype=bool)[y], -1.0, p).max(axis=1)
    np.testing.assert_allclose(
        label_quality_scores(y, p, method="normalized_margin"), (raw + 1) / 2
    )


def test_adjusted_probabilities_subtract_thresholds():
    y, p = random_case(2)
    t = confident_thresholds(y, p)
    adj = p - t + t.max()
    adj /= adj.sum(axis=1, keepdims=True)
    s = label_quality_scores(y, p, adjust_pred_probs=True)
    np.testing.assert_allclose(s, adj[np.arange(len(y)), y])
    with pytest.raises(ValueError, match="adjust_pred_probs"):
        label_quality_scores(y, p, method="confidence_weighted_entropy", adjust_pred_probs=True)


def test_torch_inputs_give_the_numpy_result():
    y, p = random_case(3)
    np.testing.assert_array_equal(
        label_quality_scores(torch.as_tensor(y), torch.as_tensor(p)), label_quality_scores(y, p)
    )


def test_exponential_moving_average_slow_loop():
    rng = np.random.default_rng(4)
    s = rng.random((6, 4))
    for row, fast in zip(s, exponential_moving_average(s, 0.8), strict=True):
        ordered = sorted(row, reverse=True)
        ema = ordered[0]
        for v in ordered[1:]:
            ema = 0.8 * v + 0.2 * ema
        assert fast == pytest.approx(ema, rel=1e-14)


def test_multilabel_scores_from_lists_and_matrices_agree():
    rng = np.random.default_rng(5)
    y = (rng.random((50, 4)) < 0.4).astype(int)
    p = rng.random((50, 4))
    lists = [list(np.flatnonzero(r)) for r in y]
    for method in METHODS:
        a = multilabel_quality_scores(y, p, method=method)
        np.testing.assert_array_equal(a, multilabel_quality_scores(lists, p, method=method))
    perfect = multilabel_quality_scores(y, y.astype(float))
    np.testing.assert_allclose(perfect, 1.0)


def test_scores_equal_cleanlab():
    pytest.importorskip("cleanlab")
    from cleanlab.internal.multilabel_scorer import ClassLabelScorer, MultilabelScorer
    from cleanlab.internal.multilabel_scorer import get_label_quality_scores as ml_scores
    from cleanlab.rank import get_label_quality_scores

    y, p = random_case(6, n=500, k=7)
    p = np.clip(p, 1e-4, None)  # away from cleanlab's 1e-6 clips (see the module docstring)
    p /= p.sum(axis=1, keepdims=True)
    for method in METHODS:
        np.testing.assert_allclose(
            label_quality_scores(y, p, method=method),
            get_label_quality_scores(y, p, method=method),
            rtol=1e-13,
        )
    for method in ("self_confidence", "normalized_margin"):
        np.testing.assert_allclose(
            label_quality_scores(y, p, method=method, adjust_pred_probs=True),
            get_label_quality_scores(y, p, method=method, adjust_pred_probs=True),
            rtol=1e-13,
        )
    rng = np.random.default_rng(7)
    ym = (rng.random((300, 5)) < 0.3).astype(int)
    pm = rng.uniform(1e-3, 1 - 1e-3, (300, 5))
    for method in METHODS:
        scorer = MultilabelScorer(base_scorer=ClassLabelScorer.from_str(method))
        np.testing.assert_allclose(
            multilabel_quality_scores(ym, pm, method=method),
            ml_scores(ym, pm, method=scorer),
            rtol=1e-13,
        )


def test_bad_inputs():
    y, p = random_case(8, n=10)
    with pytest.raises(ValueError, match="method"):
        label_quality_scores(y, p, method="margin")
    with pytest.raises(ValueError, match="sum to 1"):
        label_quality_scores(y, p * 0.9)
    with pytest.raises(ValueError, match="class id 9"):
        label_quality_scores(np.full(10, 9), p)
    with pytest.raises(ValueError, match="must match"):
        label_quality_scores(y[:5], p)
    with pytest.raises(ValueError, match="alpha"):
        multilabel_quality_scores(np.zeros((10, 5)), p, alpha=1.5)
    with pytest.raises(ValueError, match="class id 7"):
        multilabel_quality_scores([[7]] * 10, p)
