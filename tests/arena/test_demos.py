"""The demonstration-suite runner: resume from stored results, failures isolated, report."""

from __future__ import annotations

import json

import pytest

import losskit.arena.demos as demos
from losskit.arena.demos import DemoResult, Verdict, run_demo_suite

CALLS: list[tuple[str, int, bool]] = []


def good(out_dir, *, seeds, quick, data_dir):
    CALLS.append(("good", seeds, quick))
    (out_dir / "good_plot.png").write_bytes(b"png")
    return DemoResult(
        "good",
        "A good demo",
        (13,),
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n![plot](good_plot.png)",
        [Verdict("faster convergence", "yes", "3.0 vs 4.0")],
        {"curve": [1.0, 0.5]},
    )


def bad(out_dir, *, seeds, quick, data_dir):
    CALLS.append(("bad", seeds, quick))
    raise RuntimeError("boom")


@pytest.fixture
def suite(monkeypatch):
    CALLS.clear()
    monkeypatch.setitem(
        demos.DEMO_SUITES, "diagnostics", {"good": f"{__name__}:good", "bad": f"{__name__}:bad"}
    )


def test_runs_stores_and_resumes(suite, tmp_path):
    assert run_demo_suite("diagnostics_quick", tmp_path, command="losskit x") == 1
    assert CALLS == [("good", 1, True), ("bad", 1, True)]
    stored = json.loads((tmp_path / "demos" / "good.json").read_text())
    assert stored["data"] == {"curve": [1.0, 0.5]} and stored["papers"] == [13]
    assert not (tmp_path / "demos" / "bad.json").exists()
    text = (tmp_path / "results.md").read_text()
    assert "## A good demo (paper 13)" in text and "**yes**" in text and "losskit x" in text
    assert "yes 1" in text
    CALLS.clear()
    assert run_demo_suite("diagnostics", tmp_path, seeds=2) == 1
    assert CALLS == [("bad", 2, False)]  # the stored demo is not run again


def test_only_and_unknown(suite, tmp_path):
    assert run_demo_suite("diagnostics", tmp_path, only=["good"]) == 0
    assert CALLS == [("good", 3, False)]
    with pytest.raises(ValueError, match="unknown demos"):
        run_demo_suite("diagnostics", tmp_path, only=["nope"])
    with pytest.raises(ValueError, match="suite must be one of"):
        run_demo_suite("nothing", tmp_path)


def test_cli_runs_a_demo_suite_and_reports(suite, tmp_path, capsys):
    from losskit.cli import main

    out = tmp_path / "d"
    assert (
        main(["arena", "--suite", "diagnostics_quick", "--demos", "good", "--out", str(out)]) == 0
    )
    assert CALLS == [("good", 1, True)]
    assert main(["arena", "report", "--out", str(out)]) == 0
    assert "A good demo" in capsys.readouterr().out
    assert main(["arena", "--list"]) == 0
    assert "suite diagnostics" in capsys.readouterr().out
