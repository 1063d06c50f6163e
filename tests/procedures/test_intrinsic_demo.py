"""Smoke test of the paper-22 demonstration (quick settings, real data) and its data errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from losskit.arena.demos import DemoResult
from losskit.procedures.intrinsic_demo import run


@pytest.fixture
def data_dir() -> Path:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not Path(env).is_dir():
        pytest.skip("LOSSKIT_DATA is not set to the shared data folder")
    return Path(env)


def test_quick_run_structure(tmp_path, data_dir):
    result = run(tmp_path, seeds=1, quick=True, data_dir=str(data_dir))
    assert isinstance(result, DemoResult)
    assert result.name == "intrinsic" and result.papers == (22,)
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", result.markdown)
    assert plots and all(p.startswith("intrinsic_") and p.endswith(".png") for p in plots)
    for p in plots:
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| dataset |" in result.markdown and "±" in result.markdown
    assert result.verdicts
    assert all(v.verdict in ("yes", "no", "tie", "partly") and v.evidence for v in result.verdicts)
    props = result.data["properties"][0]
    assert set(props) == {"digits", "cifar10", "olivetti"}
    for p in props.values():
        assert p["mle"] > 0 and p["twonn"] > 0 and p["kf"] > 0
    pairs = result.data["pairs"][0]
    assert {r["dataset"] for r in pairs} == {"digits", "cifar10"}
    assert all(0.0 <= r[k] <= 1.0 for r in pairs for k in ("acc", "fgsm", "pgd"))


def test_missing_data_raises_value_error_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="cifar10_jpeg.bin"):
        run(tmp_path / "out", seeds=1, quick=True, data_dir=str(tmp_path / "empty"))
