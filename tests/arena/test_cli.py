"""``losskit arena``: a small sweep end to end, resume, report rebuild, listing and errors."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from losskit.arena.cli import format_objective
from losskit.arena.leaderboard import leaderboards
from losskit.arena.suites import parse_objective
from losskit.cli import main

SWEEP = [
    "arena", "--datasets", "digits", "--scenarios", "clean", "symmetric:0.4",
    "--objectives", "cross_entropy", "comp_sum:tau=1.5", "--seeds", "2", "--epochs", "2",
    "--model", "linear", "--no-progress",
]  # fmt: skip


def _rows(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]


def test_sweep_writes_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SWEEP, "--out", str(out)]) == 0
    first = capsys.readouterr()
    assert "8 trials: 8 ran, 0 already stored" in first.err
    assert "digits / symmetric:0.4" in first.out
    md = (out / "results.md").read_text()
    assert "`comp_sum:tau=1.5`" in md and "Command: `losskit arena" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # noise curve + reliability diagrams
    assert _rows(out / "arena.sqlite") == 8

    assert main([*SWEEP, "--out", str(out), "--seeds", "3"]) == 0
    again = capsys.readouterr()
    assert "12 trials: 4 ran, 8 already stored" in again.err
    assert _rows(out / "arena.sqlite") == 12

    (out / "results.md").unlink()
    assert main(["arena", "report", "--out", str(out)]) == 0
    assert "`cross_entropy`" in (out / "results.md").read_text()


def test_list_and_errors(tmp_path, capsys):
    assert main(["arena", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "suite quick" in listing and "dataset digits" in listing and "symmetric" in listing
    with pytest.raises(ValueError, match="no registered objective"):
        main([*SWEEP, "--objectives", "not_a_loss", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="arena.sqlite"):
        main(["arena", "report", "--out", str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="suite"):
        main(["arena", "--suite", "nope", "--out", str(tmp_path)])


def test_objective_spec_round_trip():
    name, params = parse_objective("ldam:drw_start=24,scale=30.5,norm=l2,flag=true")
    assert (name, params) == ("ldam", {"drw_start": 24, "scale": 30.5, "norm": "l2", "flag": True})
    assert parse_objective(format_objective(name, params)) == (name, params)
    with pytest.raises(ValueError, match="key=value"):
        parse_objective("ldam:drw_start")


def test_leaderboard_mean_std_and_rank():
    rng = np.random.default_rng(0)
    records = [
        {"dataset": "d", "scenario": "longtail:10", "objective": obj, "seed": s,
         "noise_rate": 0.0,
         "metrics": {"accuracy": float(a), "balanced_accuracy": float(b), "macro_f1": 0.5,
                     "ece": 0.1}}
        for obj, base in (("a", 0.9), ("b", 0.7))
        for s, (a, b) in enumerate(zip(rng.uniform(0.8, 0.9, 3), base + rng.normal(0, .01, 3),
                                       strict=True))
    ]  # fmt: skip
    (board,) = leaderboards(records)
    assert board.rank_by == "balanced_accuracy"  # long tail ranks by balanced accuracy
    assert [r.objective for r in board.rows] == ["a", "b"]
    bal = [x["metrics"]["balanced_accuracy"] for x in records if x["objective"] == "a"]
    assert board.rows[0].mean["balanced_accuracy"] == pytest.approx(np.mean(bal))
    assert board.rows[0].std["balanced_accuracy"] == pytest.approx(np.std(bal, ddof=1))


def _record(ds, sc, obj, acc):
    return {
        "dataset": ds,
        "scenario": sc,
        "objective": obj,
        "noise_rate": 0.4,
        "metrics": {"accuracy": acc, "balanced_accuracy": acc, "macro_f1": acc, "ece": 0.0},
    }


def test_claims_verdicts_follow_the_seed_spread():
    from losskit.arena.claims import check_claims, claims_markdown

    recs = [_record("digits", "symmetric:0.4", "cross_entropy", a) for a in (0.80, 0.82, 0.81)]
    recs += [_record("digits", "symmetric:0.4", "ldr_kl", a) for a in (0.90, 0.91, 0.92)]
    recs += [_record("digits", "symmetric:0.4", "comp_sum:tau=1.5", a) for a in (0.79, 0.83, 0.8)]
    recs += [_record("digits", "clean", "ldr_kl", 0.99)]  # no claim covers the clean scenario
    rows = {r["objective"]: r for r in check_claims(recs)}
    assert set(rows) == {"ldr_kl", "comp_sum:tau=1.5"}
    assert rows["ldr_kl"]["reproduced"] == "yes"
    assert rows["comp_sum:tau=1.5"]["reproduced"] == "tie"
    assert rows["ldr_kl"]["baseline_mean"] == pytest.approx(0.81)
    assert "`ldr_kl` 91.0 ± 1.0" in claims_markdown(recs)
    worse = [_record("x", "subset:0.2+cifar10n:worst", o, a)
             for o, a in (("cross_entropy", 0.7), ("cross_entropy", 0.71),
                          ("ldr_kl", 0.5), ("ldr_kl", 0.52))]  # fmt: skip
    assert check_claims(worse)[0]["reproduced"] == "no"
