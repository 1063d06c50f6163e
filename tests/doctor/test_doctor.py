"""``losskit doctor`` on data with a known injected noise matrix, bad inputs, reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from losskit.doctor import add_parser, diagnose, from_arrays
from losskit.doctor.recommend import (
    RESULT_FILES,
    RESULTS_DIR,
    load_evidence,
    parse_results,
    recommend,
)

K, N, D = 5, 2000, 8
RATE_TOL = 0.05  # |estimated - injected| noise rate; measured <= 0.002 (seeds 0-5)
PRECISION_BOUND = 0.9  # truly flipped share of the top 50; measured 1.0 (seeds 0-5)

FEATURES_RATE_TOL = 0.05  # vs the nominal 0.2, 5-fold CV on 800 rows; measured <= 0.017 (seeds 5-9)


def _clusters(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well separated Gaussians; exact posteriors of the clean labels as probabilities."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, D)) * 4
    y_true = rng.integers(0, K, N)
    x = means[y_true] + rng.normal(size=(N, D))
    logits = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return x, y_true, p / p.sum(1, keepdims=True)


def _noisy(y_true: np.ndarray, rate: float, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    flip = rng.random(len(y_true)) < rate
    shift = rng.integers(1, K, len(y_true)) if kind == "symmetric" else np.ones_like(y_true)
    return np.where(flip, (y_true + shift) % K, y_true), flip


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
@pytest.mark.parametrize("seed", [0, 1])
def test_noise_rate_structure_and_errors_recovered(kind, seed):
    _, y_true, p = _clusters(seed)
    y, flip = _noisy(y_true, 0.2, kind, seed)
    d = diagnose(from_arrays(y, pred_probs=p), top_k=50)
    assert abs(d.noise_rate - flip.mean()) <= RATE_TOL
    assert d.structure == kind
    precision = flip[[t["index"] for t in d.top_issues]].mean()
    assert len(d.top_issues) == 50 and precision >= PRECISION_BOUND
    assert d.recommendation["closest_scenario"] is not None


def test_clean_labels_have_no_structure():
    _, y_true, p = _clusters(3)
    d = diagnose(from_arrays(y_true, pred_probs=p))
    assert d.noise_rate < 0.05 and d.structure == "none"
    assert d.recommendation["closest_scenario"]["noise_rate"] < 0.05
    assert d.recommendation["recipes"] == []


def test_imbalance_ratio_and_long_tail_match():
    _, y_true, p = _clusters(4)
    keep = np.concatenate([np.flatnonzero(y_true == c)[: max(4, 400 // 10**c)] for c in range(K)])
    d = diagnose(from_arrays(y_true[keep], pred_probs=p[keep]))
    counts = np.bincount(y_true[keep], minlength=K)
    assert d.imbalance_ratio == counts.max() / counts.min()
    assert d.recommendation["closest_scenario"]["imbalance_ratio"] > 1
    assert d.recommendation["objectives"][0]["metric"] == "balanced_accuracy"


def _table(path: Path) -> dict[str, dict[str, str]]:
    """Slow reference reader: ``{heading: {objective: accuracy cell}}`` by plain splitting."""
    out: dict[str, dict[str, str]] = {}
    heading = None
    for line in path.read_text().splitlines():
        if line.startswith("## ") and "/" in line:
            heading = line[3:].split(" (noise")[0]
            out[heading] = {}
        elif heading and line.startswith("| ") and not line.startswith("| rank"):
            cells = [c.strip() for c in line.split("|")]
            if cells[1].isdigit():
                out[heading][cells[2].strip("`")] = cells[4]
    return out


@pytest.mark.parametrize("name", RESULT_FILES)
def test_parsed_evidence_agrees_with_markdown(name):
    path = RESULTS_DIR / name
    if not path.is_file():
        pytest.skip(f"docs/results/{name} is not in this checkout")
    reference = _table(path)
    parsed = parse_results(path.read_text(), name)
    assert {s.name for s in parsed} == {h for h, rows in reference.items() if rows}
    for s in parsed:
        got = {r.objective: "{:.1f} ± {:.1f}".format(*r.metrics["accuracy"]) for r in s.results}
        assert got == reference[s.name]
        assert all(r.seeds >= 1 for r in s.results)


def test_recommendation_deterministic_and_cites_evidence():
    evidence = load_evidence()
    if not evidence:
        pytest.skip("docs/results is not in this checkout")
    a = recommend(0.4, "symmetric", 1.0, evidence)
    b = recommend(0.4, "symmetric", 1.0, list(evidence))
    assert a == b
    scen = a["closest_scenario"]
    assert "symmetric:0.4" in scen["name"]
    means = [o["mean"] for o in a["objectives"]]
    assert means == sorted(means, reverse=True)
    for o in a["objectives"]:
        assert scen["name"] in o["evidence"] and f"{o['seeds']} seeds" in o["evidence"]
        assert f"{o['mean']:.1f} ± {o['std']:.1f}" in o["evidence"]
    recipes = {r["recipe"]: r for r in a["recipes"]}
    assert "co-teaching" in recipes and all(r["evidence"] for r in a["recipes"])
    pair = recommend(0.4, "pair", 1.0, evidence)["closest_scenario"]
    assert "pairflip:0.4" in pair["name"]
    clean = [recommend(0.0, "none", 1.0, evidence, dataset=n) for n in ("digits", "cifar10")]
    assert [c["closest_scenario"]["name"] for c in clean] == [
        "digits / clean",
        "cifar10 / subset:0.2",
    ]
    lt = recommend(0.2, "symmetric", 100.0, evidence)
    assert any(r["recipe"].startswith("RCAL") for r in lt["recipes"])


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *argv])
    return args.func(args)


def test_cli_writes_json_and_html_from_features(tmp_path, capsys):
    x, y_true, _ = _clusters(5)
    y, _ = _noisy(y_true[:800], 0.2, "symmetric", 5)
    np.savez(tmp_path / "d.npz", labels=y, features=x[:800])
    assert _cli([str(tmp_path / "d.npz"), "--out", str(tmp_path / "out"), "--top-k", "5"]) == 0
    info = json.loads((tmp_path / "out" / "doctor.json").read_text())
    assert info["num_examples"] == 800 and len(info["top_label_issues"]) == 5
    assert abs(info["noise_rate"] - 0.2) <= FEATURES_RATE_TOL
    page = (tmp_path / "out" / "doctor.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert "estimated noise rate" in capsys.readouterr().out


def test_cli_reads_csv_with_probabilities(tmp_path):
    _, y_true, p = _clusters(6)
    header = "label," + ",".join(f"prob_{c}" for c in range(K))
    rows = [f"{y_true[i]}," + ",".join(repr(float(v)) for v in p[i]) for i in range(300)]
    (tmp_path / "d.csv").write_text("\n".join([header, *rows]) + "\n")
    assert _cli([str(tmp_path / "d.csv"), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "doctor.json").read_text())["num_examples"] == 300


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    p = np.full((4, 3), 1 / 3)
    y = np.array([0, 1, 2, 1])
    cases = {
        "sums": ({"labels": y, "pred_probs": p * 0.5}, "sum to 1"),
        "range": ({"labels": np.array([0, 1, 3, 1]), "pred_probs": p}, "out of range"),
        "length": ({"labels": y[:3], "pred_probs": p}, "must match"),
        "nan": ({"labels": y, "pred_probs": np.where(np.eye(4, 3) > 0, np.nan, p)}, "NaN"),
        "empty": ({"labels": y[:0], "pred_probs": p[:0]}, "empty"),
        "neither": ({"labels": y}, "pred_probs' or a 'features"),
    }
    out = {}
    for name, (arrays, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        out[name] = (path, message)
    (tmp_path / "nolabel.csv").write_text("y,prob_0,prob_1\n0,0.5,0.5\n")
    out["csv_label"] = (tmp_path / "nolabel.csv", "no 'label' column")
    out["missing"] = (tmp_path / "absent.npz", "no such file")
    out["unknown"] = (Path("not_a_dataset"), "neither an .npz")
    return out


def test_bad_inputs_exit_2_with_clear_message(tmp_path, capsys):
    for name, (path, message) in _bad_inputs(tmp_path).items():
        assert _cli([str(path), "--out", str(tmp_path / "o")]) == 2, name
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (name, err)
    assert not (tmp_path / "o").exists()


def _section(dataset: str, scenario: str, noise: float, rows: dict[str, float]) -> str:
    lines = [
        f"## {dataset} / {scenario} (noise {100 * noise:.1f}%)",
        "",
        "| rank | objective | seeds | accuracy | balanced_accuracy |",
        "|---|---|---|---|---|",
    ]
    ranked = sorted(rows.items(), key=lambda kv: -kv[1])
    lines += [f"| {i + 1} | `{o}` | 3 | {a:.1f} ± 1.0 | {a:.1f} ± 1.0 |"
              for i, (o, a) in enumerate(ranked)]  # fmt: skip
    return "\n".join([*lines, ""])


def test_recipes_ranked_by_their_gain_with_the_nearest_evidence(tmp_path):
    standard = _section("digits", "symmetric:0.4", 0.4, {"cross_entropy": 80.0, "ldr_kl": 90.0})
    noisy = "\n".join([
        _section("digits", "symmetric:0.4", 0.4,
                 {"cross_entropy": 79.0, "co_teaching": 91.0, "cleaned": 85.0}),
        _section("digits", "symmetric:0.6", 0.6, {"cross_entropy": 60.0, "nested_dropout": 70.0}),
    ])  # fmt: skip
    (tmp_path / "standard.md").write_text(standard)
    (tmp_path / "noisy.md").write_text(noisy)
    evidence = load_evidence(tmp_path)
    assert [s.source for s in evidence] == ["docs/results/standard.md", *["docs/results/noisy.md"]
                                            * 2]  # fmt: skip
    rec = recommend(0.4, "symmetric", 1.0, evidence)
    assert rec["closest_scenario"]["source"] == "docs/results/standard.md"  # the earlier file
    assert [o["objective"] for o in rec["objectives"]] == ["ldr_kl", "cross_entropy"]
    by = {r["recipe"]: r for r in rec["recipes"]}
    assert [r["gap_to_cross_entropy"] for r in rec["recipes"]] == [12.0, 10.0, 6.0, None]
    assert by["co-teaching"]["evidence"].startswith(
        "nearest scenario with this recipe: digits / symmetric:0.4 in docs/results/noisy.md"
    )
    assert "symmetric:0.6" in by["nested dropout"]["evidence"]
    assert by["nested dropout, then co-teaching"]["evidence"] == "no arena evidence yet"
    assert not any("RCAL" in r for r in by)  # no long tail estimated


def test_doctor_on_a_named_arena_dataset():
    from losskit.doctor.inputs import load_data

    data = load_data("digits", n_folds=3, seed=0)
    assert data.dataset == "digits" and data.pred_probs.shape == (len(data.labels), 10)
    d = diagnose(data, top_k=10)
    assert d.noise_rate < 0.05  # sklearn's digits are cleanly labelled
    assert d.recommendation["closest_scenario"]["name"].startswith("digits") or not load_evidence()
