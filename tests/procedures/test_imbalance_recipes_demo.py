"""The paper-15 / paper-41 demonstration: its helpers and a quick smoke run (digits ships
with scikit-learn, so no data folder is needed)."""

from __future__ import annotations

import numpy as np
import pytest

from losskit.procedures.imbalance_recipes_demo import run
from losskit.procedures.imbalance_recipes_runs import DIGIT_ARMS, shift_digits


def test_shift_digits_identity_and_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5, 64)).astype(np.float32)
    np.testing.assert_allclose(shift_digits(x, rng, 0.0, 0.0), x, atol=1e-6)
    shifted = shift_digits(x, rng, 20.0, 0.3)
    assert shifted.shape == x.shape and shifted.min() >= 0 and shifted.max() <= 1
    assert np.abs(shifted - x).mean() > 0.05


def test_bad_seeds_raise(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=None)


def test_quick_run(tmp_path):
    r = run(tmp_path, seeds=1, quick=True, data_dir=None)
    assert r.name == "imbalance_recipes" and r.papers == (15, 41)
    assert (tmp_path / "imbalance_recipes_plot.png").stat().st_size > 1000
    assert "![digits-LT and Gaussian mixture](imbalance_recipes_plot.png)" in r.markdown
    assert len(r.verdicts) == 8
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in r.verdicts)
    (digits,) = r.data["digits"]
    assert set(digits["scores"]) == set(DIGIT_ARMS)
    for scores in digits["scores"].values():
        assert 0.0 <= scores["balanced"] <= 1.0
        assert all(scores[g] is None or 0.0 <= scores[g] <= 1.0 for g in ("head", "tail"))
    counts = digits["counts"]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 40 * counts[-1]
    assert sum(counts) == digits["sizes"]["labelled"]
    (gmm,) = r.data["gmm"]
    assert 0.0 <= gmm["erm"] <= 1.0 and set(gmm["rss"]) == {"0.0", "0.5"}
