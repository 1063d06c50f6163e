"""The paper-32 demonstration: missing data, bad seeds and a quick smoke run (digits needs
no data files)."""

from __future__ import annotations

import pytest

from losskit.procedures.rcal_demo import run
from losskit.procedures.rcal_runs import ARMS, prior_flip_matrix, size_order


def test_missing_data_raises(tmp_path):
    with pytest.raises(ValueError, match="TREC.train"):
        run(tmp_path / "out", seeds=1, quick=False, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path / "out", seeds=0, quick=True, data_dir=None)


def test_prior_flips_and_size_order():
    import numpy as np

    t = prior_flip_matrix(np.array([60, 30, 10]), 0.4)
    np.testing.assert_allclose(t.sum(axis=1), 1.0)
    np.testing.assert_allclose(t[0, 1:], [0.4 * 0.3, 0.4 * 0.1])  # eta n_j / n off the diagonal
    np.testing.assert_allclose(np.diag(t), 1 - 0.4 * (1 - np.array([0.6, 0.3, 0.1])))
    np.testing.assert_array_equal(size_order(np.array([1, 2, 0, 1, 1, 2]), 3), [2, 0, 1])


def test_quick_run(tmp_path):
    r = run(tmp_path, seeds=1, quick=True, data_dir=None)
    assert r.name == "rcal" and r.papers == (32,)
    assert (tmp_path / "rcal_plot.png").stat().st_size > 1000
    assert "![accuracy](rcal_plot.png)" in r.markdown
    assert len(r.verdicts) == 8
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in r.verdicts)
    (res,) = r.data["results"].values()
    assert set(res["scores"]) == set(ARMS)
    for arm in ARMS:
        for metric in ("balanced_accuracy", "head_accuracy", "medium_accuracy", "tail_accuracy"):
            (value,) = res["scores"][arm][metric]
            assert 0.0 <= value <= 1.0
    (rate,) = res["noise_rate"]
    assert 0.1 < rate < 0.6  # prior flips at eta = 0.4 change about a third of the labels
    for rule in ("rcal", "rcal_lof20"):
        (kept,) = res["lof"][rule]["kept_fraction"]
        assert 0.0 < kept <= 1.0
