"""Arena metrics against scikit-learn and their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from losskit.arena import metrics as M
from losskit.diagnostics.calibration import expected_calibration_error


def _data(n=500, c=7, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2.0
    y = np.where(rng.random(n) < 0.6, logits.argmax(1), rng.integers(0, c, n))
    y[y == 5] = 4  # class 5 absent from y_true
    return logits, y.astype(np.int64)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_metrics_match_sklearn(seed):
    logits, y = _data(seed=seed)
    pred = logits.argmax(1)
    assert M.accuracy(y, pred) == pytest.approx(accuracy_score(y, pred))
    assert M.macro_f1(y, pred, 7) == pytest.approx(f1_score(y, pred, average="macro"))
    assert M.balanced_accuracy(y, pred, 7) == pytest.approx(balanced_accuracy_score(y, pred))
    per = M.per_class_accuracy(y, pred, 7)
    present = sorted(set(y.tolist()))
    ref = recall_score(y, pred, labels=present, average=None, zero_division=0)
    assert [per[k] for k in present] == pytest.approx(ref.tolist())
    assert per[5] is None and len(per) == 7


def test_group_accuracy_is_sample_accuracy_within_group():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 0, 0])
    groups = {"head": np.array([0]), "medium": np.array([1]), "tail": np.array([2, 3])}
    out = M.group_accuracy(y, pred, groups)
    assert out["head"] == pytest.approx(2 / 3) and out["medium"] == 0.5 and out["tail"] == 0.0
    assert M.group_accuracy(y, pred, {"empty": np.array([6])}) == {"empty": None}


def test_classification_metrics_bundle():
    logits, y = _data()
    groups = {"head": np.array([0, 1]), "medium": np.array([2, 3]), "tail": np.array([4, 6])}
    out = M.classification_metrics(logits, y, 7, groups)
    m = out["metrics"]
    ece = expected_calibration_error(
        torch.as_tensor(logits), torch.as_tensor(y), n_bins=15, from_logits=True
    )
    assert m["ece"] == pytest.approx(float(ece))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, logits.argmax(1)))
    assert {"head_accuracy", "medium_accuracy", "tail_accuracy"} <= set(m)
    rel = out["reliability"]
    assert len(rel["count"]) == 15 and len(rel["edges"]) == 16 and sum(rel["count"]) == len(y)
    gaps = sum(
        n * abs(c - a)
        for n, c, a in zip(rel["count"], rel["confidence"], rel["accuracy"], strict=True)
    )
    assert gaps / len(y) == pytest.approx(m["ece"])  # the bins reproduce the ECE
    assert all(c == 0.0 for c, n in zip(rel["confidence"], rel["count"], strict=True) if n == 0)


def test_non_finite_logits_are_scored_not_raised():
    logits, y = _data()
    logits[:10] = np.nan
    out = M.classification_metrics(logits, y, 7)
    assert np.isfinite(out["metrics"]["ece"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="y_pred"):
        M.accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="y_true"):
        M.accuracy(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="logits"):
        M.classification_metrics(np.zeros((3, 4)), np.zeros(3), 5)
