"""Smoke test of paper 36's demonstration (quick setting) and the pieces it is made of."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from losskit.arena.demos import DemoResult
from losskit.diagnostics.large_step_data import is_linearly_separable
from losskit.diagnostics.large_step_gd import logistic_gradient, run_large_step_gd
from losskit.procedures.large_step_gd_runs import datasets, digits_features, logistic_minimum


def _data_dir() -> str:
    root = os.environ.get("LOSSKIT_DATA", "")
    if not root or not Path(root).is_dir():
        pytest.skip("LOSSKIT_DATA is not set to the shared data folder")
    return root


def test_logistic_minimum_is_stationary_and_below_gd():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 3))
    y = np.where(a[:, 0] + 0.8 * rng.normal(size=80) > 0, 1.0, -1.0)
    assert not is_linearly_separable(a, y)
    fstar = logistic_minimum(a, y)
    gd = run_large_step_gd(a, y, gamma=1.0, max_iter=3000, stop_at_separation=False)
    assert fstar <= gd.losses.min() + 1e-12 and gd.losses[-1] - fstar < 1e-6
    assert np.linalg.norm(logistic_gradient(a, y, gd.w)) < 1e-3


def test_probe_datasets_have_the_stated_separability():
    digits = digits_features(None)
    sets = datasets(0, True, digits)
    for key in ("gauss_sep", "digits_3v8", "digits_3v8_imbalanced"):
        assert is_linearly_separable(*sets[key]), key
    for key in ("gauss_flip10", "digits_even_odd"):
        assert not is_linearly_separable(*sets[key]), key
    x, y = sets["digits_3v8_imbalanced"]
    assert (y > 0).sum() * 8 == (y < 0).sum() and np.all(x[:, -1] == 1.0)


def test_quick_run_structure(tmp_path):
    from losskit.procedures.large_step_gd_demo import run

    result = run(tmp_path, seeds=1, quick=True, data_dir=_data_dir())
    assert isinstance(result, DemoResult) and result.papers == (36,)
    for name in ("iterations", "losses", "trajectories"):
        png = tmp_path / f"large_step_gd_{name}.png"
        assert png.stat().st_size > 0 and f"]({png.name})" in result.markdown
    assert len(result.verdicts) == 9
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in result.verdicts)
    assert all(v.evidence for v in result.verdicts)
    res = result.data["results"]
    assert set(res) == {
        "gauss_sep",
        "digits_3v8",
        "digits_3v8_imbalanced",
        "gauss_flip10",
        "digits_even_odd",
    }
    gammas, agree = result.data["gammas"], result.data["agreement_gammas"]
    for seeds in res.values():
        (one,) = seeds
        for m in ("gd", "normalized_gd"):
            assert len(one[m]["iterations"]) == len(one[m]["loss_final"]) == len(gammas)
            assert len(one[m]["agreement"]) == len(agree)
            assert all(0 <= v <= one[m]["agreement_window"] for v in one[m]["agreement"])
    worst = result.data["worst_case"]
    assert len(worst["perceptron"]) == len(worst["sizes"])
    assert "| gamma |" in result.markdown and "Verdicts" in result.markdown
