"""The paper-12 demonstration: missing data and a quick smoke run (digits needs no files)."""

from __future__ import annotations

import numpy as np
import pytest

from losskit.procedures.noisy_training_demo import run
from losskit.procedures.noisy_training_runs import ARMS


def test_missing_data_raises(tmp_path):
    with pytest.raises(ValueError, match="TREC.train"):
        run(tmp_path / "out", seeds=1, quick=False, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path / "out", seeds=0, quick=True, data_dir=None)


def test_quick_run(tmp_path):
    r = run(tmp_path, seeds=1, quick=True, data_dir=None)
    assert r.name == "noisy_training" and r.papers == (12,)
    assert (tmp_path / "noisy_training_plot.png").stat().st_size > 1000
    assert "![curves](noisy_training_plot.png)" in r.markdown
    assert len(r.verdicts) == 6
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in r.verdicts)
    (res,) = r.data["results"].values()
    st = next(iter(r.data["settings"].values()))
    for arm in ARMS:
        (acc,) = res["accuracy"][arm]
        assert 0.0 <= acc <= 1.0
        (curve,) = res["curves"][arm]
        epochs = st["finetune_epochs"] if arm == "nested_co_teaching" else st["epochs"]
        assert len(curve) == epochs and curve[-1] == acc
    for arm in ("co_teaching", "nested_co_teaching"):
        (prec,) = res["precision"][arm]
        assert all(0.0 <= p <= 1.0 for p in prec)
    (nested,), (ce,) = res["prefix_accuracy"]["nested"], res["prefix_accuracy"]["ce"]
    assert len(nested) == len(ce) == 256
    assert nested[-1] == pytest.approx(res["accuracy"]["nested_full_width"][0])
    (cut,) = res["cut"]["nested"]
    assert 1 <= cut <= 256
    assert np.isclose(res["noise_rate"][0], 0.4, atol=0.03)
