"""The paper-13 demonstration: its simulation, missing data, and a quick smoke run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from losskit.arena.datasets import dataset_available
from losskit.procedures.generative_linear_demo import bayes_error, run, simulate_gaussian_mixture


@pytest.mark.parametrize("dim", [2, 5])
def test_simulation_moments_and_bayes_error(dim):
    rng = np.random.default_rng(0)
    x, y = simulate_gaussian_mixture(dim, 40000, rng)
    assert x.shape == (80000, dim) and np.bincount(y).tolist() == [40000, 40000]
    var = np.r_[np.full(dim // 2, float(dim)), np.ones(dim - dim // 2)]
    for k, mean in ((0, -1.0), (1, 1.0)):
        np.testing.assert_allclose(x[y == k].mean(0), mean, atol=0.05)
        np.testing.assert_allclose(x[y == k].var(0), var, rtol=0.05)
    # the Bayes rule for equal priors and a shared covariance: sign of (mu_1 - mu_0)' C^-1 x
    bayes = (x @ (2.0 / var) > 0).astype(int)
    assert abs((bayes != y).mean() - bayes_error(dim)) < 0.005
    with pytest.raises(ValueError, match="n_features"):
        simulate_gaussian_mixture(1, 5, rng)


def test_missing_data_raises(tmp_path):
    with pytest.raises(ValueError, match="TREC.train"):
        run(tmp_path / "out", seeds=1, quick=True, data_dir=str(tmp_path))


def test_quick_run(tmp_path, monkeypatch):
    data = os.environ.get("LOSSKIT_DATA", "")
    if not data or not Path(data).is_dir():
        pytest.skip("LOSSKIT_DATA is not set to the shared data folder")
    if not (dataset_available("trec6", data) and dataset_available("cifar10", data)):
        pytest.skip("TREC or CIFAR-10 is missing from LOSSKIT_DATA")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = run(tmp_path, seeds=1, quick=True, data_dir=data)
    assert r.name == "generative_linear" and r.papers == (13,)
    assert (tmp_path / "generative_linear_plot.png").stat().st_size > 1000
    assert "![learning curves](generative_linear_plot.png)" in r.markdown
    assert len(r.verdicts) == 6
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in r.verdicts)
    curves = [v for v in r.data.values() if isinstance(v, dict) and "sizes" in v]
    assert len(curves) == 3
    for c in curves:
        for head in ("naive_bayes", "logistic"):
            errors = np.array(c[head])
            assert errors.shape == (1, len(c["sizes"]))
            assert ((errors >= 0) & (errors <= 1)).all()
    assert 0.0 <= r.data["cnn_test_accuracy"] <= 1.0
