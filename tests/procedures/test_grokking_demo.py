"""Smoke test of the paper-55 demonstration (quick setting) and its verdict rules."""

from __future__ import annotations

import json
import math

import pytest

from losskit.arena.demos import DemoResult
from losskit.diagnostics.grokking import PHASES
from losskit.procedures.grokking_demo import QUICK, run
from losskit.procedures.grokking_report import compare, ms


def test_quick_run_structure(tmp_path):
    result = run(tmp_path, seeds=1, quick=True, data_dir=None)
    assert isinstance(result, DemoResult)
    assert result.name == "grokking" and result.papers == (55,)
    for plot in ("phases", "ipr", "pruning", "regularizers", "dynamics"):
        path = tmp_path / f"grokking_{plot}.png"
        assert path.read_bytes()[:4] == b"\x89PNG"
        assert f"](grokking_{plot}.png)" in result.markdown
    assert "| xi \\ wd |" in result.markdown and f"p = {QUICK.p}" in result.markdown
    assert len(result.verdicts) == 9
    assert all(v.verdict in ("yes", "no", "tie", "partly") and v.evidence for v in result.verdicts)
    json.dumps(result.data)  # the suite runner stores it as JSON
    cells = result.data["cells"]
    assert len(cells) == len(QUICK.corruptions) * len(QUICK.weight_decays)
    for cell in cells.values():
        assert cell["phase"] in PHASES and len(cell["test"]) == 1
        assert all(0.0 <= x <= 1.0 for x in cell["test"] + cell["train"])
    pruning = result.data["pruning"]
    assert pruning["fractions"] == list(QUICK.prune_fractions)
    # Nothing pruned: both orders start from the same network.
    assert pruning["low"]["test"][0][0] == pruning["high"]["test"][0][0]
    rho = result.data["regularizers"]["batch norm"]["spearman"]
    assert len(rho) == 1 and -1.0 <= rho[0] <= 1.0


def test_verdict_rule_and_format():
    assert compare([0.9, 0.92], [0.5, 0.52]) == "yes"
    assert compare([0.5, 0.52], [0.9, 0.92]) == "no"
    assert compare([0.5, 0.9], [0.6, 0.62]) == "tie"
    assert ms([0.5, 0.7]) == "60.0 ± 10.0"
    assert ms([1.0, math.nan]) == "100.0 ± 0.0"


def test_bad_seeds(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=None)
