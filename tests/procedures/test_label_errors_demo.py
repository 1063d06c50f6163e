"""The label-error demo (paper 34): its helpers against brute force, and a quick run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from losskit.arena.demos import DemoResult
from losskit.labels.label_issues import FILTERS
from losskit.procedures.label_errors_cifar10n import detection_scores
from losskit.procedures.label_errors_demo import PAPER_RULE, _average_precision, run
from losskit.procedures.label_errors_features import PATCH, fit_patch_kmeans


def shared_data() -> str:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not (Path(env) / "cifar10" / "cifar10_mturk.json").is_file():
        pytest.skip("LOSSKIT_DATA does not point at the shared data (cifar10 with mturk)")
    return env


def test_detection_scores_count_hits():
    flagged = np.array([1, 1, 0, 0, 1], dtype=bool)
    truth = np.array([1, 0, 1, 0, 1], dtype=bool)
    s = detection_scores(flagged, truth)
    assert s["flagged"] == 3
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert detection_scores(np.zeros(5, dtype=bool), truth)["f1"] == 0.0


def test_average_precision_brute_force():
    rng = np.random.default_rng(0)
    scores, positive = rng.random(30), rng.random(30) < 0.3
    order = sorted(range(30), key=lambda i: (scores[i], i))
    hits, total = 0, 0.0
    for rank, i in enumerate(order, 1):
        if positive[i]:
            hits += 1
            total += hits / rank
    assert _average_precision(scores, positive) == pytest.approx(total / positive.sum())


def test_patch_features_match_explicit_patches():
    """The convolutional transform equals patch-by-patch normalise, whiten, triangle, pool."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    km = fit_patch_kmeans(images, n_centroids=5, n_patches=500, iters=2)
    for stride in (1, 2):
        fast = km.transform(images[:2], stride=stride)
        for n in range(2):
            positions = range(0, 32 - PATCH + 1, stride)
            codes = np.zeros((len(positions), len(positions), 5))
            for a, r in enumerate(positions):
                for b, c in enumerate(positions):
                    v = images[n, r : r + PATCH, c : c + PATCH].transpose(2, 0, 1).reshape(-1)
                    v = (v - v.mean()) / np.sqrt(v.var() + 10)
                    z = km.whiten @ (v - km.mean)
                    d = np.sqrt(((z - km.centroids) ** 2).sum(axis=1))
                    codes[a, b] = np.maximum(d.mean() - d, 0)
            h = len(positions) // 2 + 1
            pooled = [codes[:h, :h], codes[:h, h:], codes[h:, :h], codes[h:, h:]]
            slow = np.concatenate([q.sum(axis=(0, 1)) for q in pooled])
            np.testing.assert_allclose(fast[n], slow, rtol=2e-3, atol=2e-3)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cifar10_test_set_pyx.npy"):
        run(tmp_path, seeds=1, quick=True, data_dir=str(tmp_path / "empty"))


def test_quick_run_structure(tmp_path, monkeypatch):
    data_dir = shared_data()
    monkeypatch.setenv("LOSSKIT_CACHE", str(tmp_path / "cache"))
    result = run(tmp_path, seeds=1, quick=True, data_dir=data_dir)
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "label_errors").iterdir())
    assert cached == ["features", "probs", "probs", "probs"]  # one per CIFAR-10N label set
    assert isinstance(result, DemoResult)
    assert result.name == "label_errors" and result.papers == (34,)
    assert "![precision and recall of the filters](label_errors_plot.png)" in result.markdown
    assert (tmp_path / "label_errors_plot.png").stat().st_size > 0
    assert len(result.verdicts) == 6
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in result.verdicts)
    test = result.data["cifar10_test"]
    assert set(test["rows"]) == {*FILTERS, PAPER_RULE}
    assert test["low_memory_identical"]
    for r in test["rows"].values():
        assert r["found"] <= min(r["reviewed"], test["confirmed"]) and r["reviewed"] <= r["flagged"]
        assert r["recall"] == pytest.approx(r["found"] / test["confirmed"])
    # the baseline flags every disagreement with the argmax: a superset of the other filters
    assert all(
        r["found"] <= test["rows"]["predicted_neq_given"]["found"] for r in test["rows"].values()
    )
    for name in ("aggre", "random1", "worst"):
        rec = result.data["cifar10n"][name]
        assert len(rec["noise_true"]) == 1 and 0 < rec["noise_true"][0] < 1
        for f in FILTERS:
            assert 0 <= rec[f"{f}/precision"][0] <= 1 and 0 <= rec[f"{f}/recall"][0] <= 1
    assert len(result.data["digits"]["acc_clean"]) == 1
