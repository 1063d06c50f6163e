"""Multi-label metrics against scikit-learn, slow loops and exact cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from losskit import get
from losskit.diagnostics import multilabel as ml
from losskit.diagnostics.multilabel import (
    hamming_loss,
    jaccard_score,
    label_propensity,
    macro_f1,
    mean_average_precision,
    micro_f1,
    multilabel_metrics,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psp_at_k,
    threshold_predictions,
)


def _data(n=40, num_labels=9, seed=0, density=0.3, empty_rows=3):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, num_labels))
    target = (rng.random((n, num_labels)) < density).astype(np.int64)
    target[:empty_rows] = 0
    target[:, -1] = 0  # a label without positives
    return scores, target


def _ranked(row):
    return sorted(range(len(row)), key=lambda j: -row[j])


def _slow_precision(scores, target, k, w=None):
    """Per-row (sum of top-k hit weights, best achievable) for rows with a positive."""
    out = []
    for s, t in zip(scores.tolist(), target.tolist(), strict=True):
        if sum(t) == 0:
            continue
        wt = [1.0] * len(t) if w is None else list(w)
        got = sum(t[j] * wt[j] for j in _ranked(s)[:k])
        best = sum(sorted((wt[j] for j in range(len(t)) if t[j]), reverse=True)[:k])
        out.append((got, best))
    return out


def _slow_dcg(scores, target, k, w=None):
    """Per-row (DCG@k, best DCG@k, IDCG@min(k, |y|)) for rows with a positive."""
    out = []
    for s, t in zip(scores.tolist(), target.tolist(), strict=True):
        npos = sum(t)
        if npos == 0:
            continue
        wt = [1.0] * len(t) if w is None else list(w)
        dcg = sum(t[j] * wt[j] / math.log2(r + 2) for r, j in enumerate(_ranked(s)[:k]))
        best_w = sorted((wt[j] for j in range(len(t)) if t[j]), reverse=True)[:k]
        best = sum(v / math.log2(r + 2) for r, v in enumerate(best_w))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, npos)))
        out.append((dcg, best, ideal))
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
def test_ranking_metrics_match_slow_loops(k):
    scores, target = _data()
    rows = _slow_precision(scores, target, k)
    assert precision_at_k(scores, target, k) == pytest.approx(np.mean([g / k for g, _ in rows]))
    dcg = _slow_dcg(scores, target, k)
    assert ndcg_at_k(scores, target, k) == pytest.approx(np.mean([d / i for d, _, i in dcg]))
    prop = label_propensity(target.sum(0), len(target))
    w = 1 / prop
    rows = _slow_precision(scores, target, k, w)
    expected = sum(g for g, _ in rows) / sum(b for _, b in rows)
    assert psp_at_k(scores, target, k, prop) == pytest.approx(expected)
    dcg = _slow_dcg(scores, target, k, w)
    expected = sum(d / i for d, _, i in dcg) / sum(b / i for _, b, i in dcg)
    assert psndcg_at_k(scores, target, k, prop) == pytest.approx(expected)


def test_ndcg_matches_sklearn_on_rows_with_positives():
    scores, target = _data(seed=1)
    rows = target.sum(1) > 0
    for k in (1, 3, 5, 9):
        ref = skm.ndcg_score(target[rows], scores[rows], k=k)
        assert ndcg_at_k(torch.from_numpy(scores), torch.from_numpy(target), k) == pytest.approx(
            ref
        )


def test_exact_properties_of_perfect_and_uniform_rankings():
    scores, target = _data(seed=2)
    rng = np.random.default_rng(3)
    perfect = target + 0.1 * rng.random(target.shape)  # positives first, in random order
    npos = target.sum(1)
    rows = npos > 0
    prop = label_propensity(target.sum(0), len(target))
    uniform = np.full(target.shape[1], 0.4)
    for k in (1, 3, 5):
        assert precision_at_k(perfect, target, k) == pytest.approx(
            np.mean(np.minimum(k, npos[rows]) / k)
        )
        assert ndcg_at_k(perfect, target, k) == pytest.approx(1.0)
        best_ps = target / prop + 0.01 * rng.random(target.shape)
        assert psp_at_k(best_ps, target, k, prop) == pytest.approx(1.0)
        assert psndcg_at_k(best_ps, target, k, prop) == pytest.approx(1.0)
        # uniform propensity: PSP@k is P@k over the P@k of a perfect ranking, PSnDCG is nDCG
        assert psp_at_k(scores, target, k, uniform) == pytest.approx(
            precision_at_k(scores, target, k) / precision_at_k(perfect, target, k)
        )
        assert psndcg_at_k(scores, target, k, uniform) == pytest.approx(
            ndcg_at_k(scores, target, k)
        )
    reverse = -perfect
    assert precision_at_k(reverse, target, 1) == 0.0


def test_rows_without_positives_are_excluded_and_all_empty_gives_nan():
    scores, target = _data(empty_rows=0)
    more = np.vstack([scores, np.ones((5, scores.shape[1]))])
    padded = np.vstack([target, np.zeros((5, target.shape[1]), dtype=target.dtype)])
    for fn in (precision_at_k, ndcg_at_k):
        assert fn(more, padded, 3) == pytest.approx(fn(scores, target, 3))
    empty = np.zeros_like(target)
    assert math.isnan(precision_at_k(scores, empty, 3))
    assert math.isnan(ndcg_at_k(scores, empty, 3))
    assert math.isnan(psp_at_k(scores, empty, 3, np.ones(target.shape[1])))
    assert math.isnan(mean_average_precision(scores, empty))


def test_label_propensity_formula_and_bounds():
    counts = np.array([0, 1, 5, 50, 1000])
    n, a, b = 1000, 0.6, 2.6
    c = (math.log(n) - 1) * (b + 1) ** a
    expected = [1 / (1 + c * math.exp(-a * math.log(m + b))) for m in counts.tolist()]
    np.testing.assert_allclose(label_propensity(torch.tensor(counts), n, a=a, b=b), expected)
    p = label_propensity(counts, n)
    assert (np.diff(p) > 0).all() and (p > 0).all() and (p <= 1).all()


def test_mean_average_precision_matches_sklearn_with_ties():
    scores, target = _data(n=60, seed=4)
    scores = np.round(scores, 1)  # many ties
    keep = target.sum(0) > 0
    ref = skm.average_precision_score(target[:, keep], scores[:, keep], average="macro")
    assert mean_average_precision(scores, target) == pytest.approx(ref)
    xt, yt = torch.from_numpy(scores).half(), torch.from_numpy(target).bool()
    ref = skm.average_precision_score(target[:, keep], xt.float().numpy()[:, keep])
    assert mean_average_precision(xt, yt) == pytest.approx(ref)


@pytest.mark.parametrize("zero", [0.0, 1.0, float("nan")])
def test_set_metrics_match_sklearn(zero):
    scores, target = _data(seed=5)
    pred = threshold_predictions(scores, 0.8)
    pred[1] = 0  # a row with an empty union (row 1 has no positives)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_micro = skm.f1_score(target, pred, average="micro", zero_division=zero)
        ref_macro = skm.f1_score(target, pred, average="macro", zero_division=zero)
    assert micro_f1(pred, target, zero_division=zero) == pytest.approx(ref_micro)
    assert macro_f1(pred, target, zero_division=zero) == pytest.approx(ref_macro)
    assert hamming_loss(pred, target) == pytest.approx(skm.hamming_loss(target, pred))
    if not math.isnan(zero):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = skm.jaccard_score(target, pred, average="samples", zero_division=zero)
        assert jaccard_score(pred, target, zero_division=zero) == pytest.approx(ref)
    empty = np.zeros_like(target)
    assert micro_f1(empty, empty, zero_division=1.0) == 1.0
    assert micro_f1(empty, empty) == 0.0


def test_threshold_is_strict_and_accepts_tensors():
    scores = torch.tensor([[0.0, 0.5, -1.0], [2.0, 0.5, 0.6]])
    np.testing.assert_array_equal(threshold_predictions(scores, 0.5), [[0, 0, 0], [1, 0, 1]])
    assert threshold_predictions(scores).dtype == np.int8


def test_multilabel_metrics_equals_the_functions_and_chunking_changes_nothing(monkeypatch):
    scores, target = _data(n=50, seed=6)
    prop = label_propensity(target.sum(0), len(target))
    out = multilabel_metrics(scores, target, threshold=0.5, ks=(1, 3), propensity=prop)
    pred = threshold_predictions(scores, 0.5)
    expected = {
        "p@1": precision_at_k(scores, target, 1),
        "ndcg@1": ndcg_at_k(scores, target, 1),
        "psp@1": psp_at_k(scores, target, 1, prop),
        "psndcg@1": psndcg_at_k(scores, target, 1, prop),
        "p@3": precision_at_k(scores, target, 3),
        "ndcg@3": ndcg_at_k(scores, target, 3),
        "psp@3": psp_at_k(scores, target, 3, prop),
        "psndcg@3": psndcg_at_k(scores, target, 3, prop),
        "map": mean_average_precision(scores, target),
        "micro_f1": micro_f1(pred, target),
        "macro_f1": macro_f1(pred, target),
        "hamming_loss": hamming_loss(pred, target),
        "jaccard": jaccard_score(pred, target),
    }
    assert out.keys() == expected.keys()
    for key, value in expected.items():
        assert out[key] == pytest.approx(value), key
        assert isinstance(out[key], float)
    monkeypatch.setattr(ml, "_CHUNK", 7)  # a few rows / labels per chunk
    chunked = multilabel_metrics(scores, target, threshold=0.5, ks=(1, 3), propensity=prop)
    for key, value in out.items():
        assert chunked[key] == pytest.approx(value), key
    assert "psp@1" not in multilabel_metrics(scores, target)


def test_bad_inputs_name_the_argument():
    scores, target = _data()
    bad = target.copy()
    bad[5, 0] = 2
    nan = scores.copy()
    nan[0, 0] = np.nan
    num_labels = scores.shape[1]
    prop = np.full(num_labels, 0.5)
    cases = [
        (lambda: precision_at_k(scores, target[:-1], 1), "target"),
        (lambda: precision_at_k(scores[0], target[0], 1), "scores"),
        (lambda: precision_at_k(scores, bad, 1), "target"),
        (lambda: ndcg_at_k(scores, target - 0.5, 1), "target"),
        (lambda: ndcg_at_k(nan, target, 1), "scores"),
        (lambda: precision_at_k(scores, target, 0), "k"),
        (lambda: ndcg_at_k(scores, target, num_labels + 1), "k"),
        (lambda: precision_at_k(scores, target, True), "k"),
        (lambda: psp_at_k(scores, target, 1, prop[:-1]), "propensity"),
        (lambda: psndcg_at_k(scores, target, 1, 0 * prop), "propensity"),
        (lambda: mean_average_precision(scores, bad), "target"),
        (lambda: micro_f1(scores, target), "pred"),
        (lambda: macro_f1(target, bad), "target"),
        (lambda: macro_f1(target, target, zero_division=2.0), "zero_division"),
        (lambda: jaccard_score(target, target, zero_division=float("nan")), "zero_division"),
        (lambda: hamming_loss(target, target[:, :-1]), "target"),
        (lambda: threshold_predictions(nan), "scores"),
        (lambda: label_propensity(np.array([1, 2]), 2), "num_samples"),
        (lambda: label_propensity(np.array([1, 20]), 10), "class_counts"),
        (lambda: label_propensity(np.array([1, 2]), 10, a=0.0), "a"),
        (lambda: multilabel_metrics(scores, target, ks=()), "ks"),
        (lambda: multilabel_metrics(scores, target, ks=(1, 99)), "ks"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def test_registered_as_multilabel_metrics():
    for name in ("precision_at_k", "ndcg_at_k", "psp_at_k", "psndcg_at_k", "multilabel_map"):
        entry = get(name)
        assert entry.kind == "metric" and entry.family == "multilabel"
    assert get("multilabel_metrics").function is multilabel_metrics
    assert get("label_propensity").defaults == {"a": 0.55, "b": 1.5}
