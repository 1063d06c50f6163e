"""Output of ``losskit doctor``: a text report on stdout, ``doctor.json`` and ``doctor.html``."""

from __future__ import annotations

import html
import json
from pathlib import Path

from losskit.doctor.diagnose import Diagnosis


def _matrix_lines(d: Diagnosis) -> list[str]:
    names = d.class_names
    width = max(6, *(len(n) for n in names))
    head = " " * width + " " + " ".join(f"{n:>{width}}" for n in names)
    rows = [
        f"{names[i]:>{width}} " + " ".join(f"{v:>{width}.3f}" for v in row)
        for i, row in enumerate(d.noise_matrix)
    ]
    return [head, *rows]


def text_report(d: Diagnosis) -> str:
    """The human-readable report printed by the command."""
    info = d.to_dict()
    rec = info["recommendation"]
    lines = [
        f"losskit doctor: {info['source']}",
        f"probabilities: {info['probabilities']}",
        f"{info['num_examples']} examples, {info['num_classes']} classes",
        "",
        "class balance: "
        + ", ".join(f"{n}={c}" for n, c in zip(d.class_names, info["class_counts"], strict=True)),
        f"imbalance ratio (max/min count): {d.imbalance_ratio:.2f}",
        f"estimated noise rate: {d.noise_rate:.1%} ({info['num_label_issues']} label issues found)",
        f"noise structure: {d.structure} (off-diagonal concentration "
        f"{info['pair_concentration'] and round(info['pair_concentration'], 3)})",
        "",
        "noise matrix P(given = row | true = column):",
        *_matrix_lines(d),
        "",
        "most likely label errors (lowest self-confidence first):",
    ]
    lines += [
        f"  #{t['index']}: given {t['given_label']}, suggested {t['suggested_label']} "
        f"(p(given) = {t['self_confidence']:.3f}, p(suggested) = {t['suggested_probability']:.3f})"
        for t in info["top_label_issues"]
    ] or ["  none"]
    lines.append("")
    scen = rec["closest_scenario"]
    if scen is None:
        lines.append("recommendation: no arena results found to compare with")
    else:
        lines.append(
            f"closest arena scenario: {scen['name']} ({scen['source']}; noise "
            f"{scen['noise_rate']:.1%}, {scen['structure']}, "
            f"imbalance {scen['imbalance_ratio']:g}; "
            f"distance {scen['distance']:.2f})"
        )
        lines.append("ranked objectives:")
        lines += [f"  {o['rank']}. {o['objective']}: {o['evidence']}" for o in rec["objectives"]]
    lines.append("recipes:")
    lines += [
        f"  - {r['recipe']} ({r['api']}): {r['why']}; evidence: {r['evidence']}"
        for r in rec["recipes"]
    ] or ["  none needed for this situation"]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[object]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def html_report(d: Diagnosis) -> str:
    """A self-contained HTML page with the report's tables."""
    info = d.to_dict()
    rec = info["recommendation"]
    scen = rec["closest_scenario"]
    parts = [
        f"<h1>losskit doctor: {html.escape(info['source'])}</h1>",
        f"<p>{info['num_examples']} examples, {info['num_classes']} classes; probabilities: "
        f"{html.escape(info['probabilities'])}.</p>",
        f"<p>Imbalance ratio {d.imbalance_ratio:.2f}; estimated noise rate "
        f"{d.noise_rate:.1%}; noise structure <b>{d.structure}</b>.</p>",
        "<h2>Class balance</h2>",
        _table(
            ["class", "count"],
            [list(t) for t in zip(d.class_names, info["class_counts"], strict=True)],
        ),
        "<h2>Noise matrix P(given = row | true = column)</h2>",
        _table(
            ["", *d.class_names],
            [
                [n, *(f"{v:.3f}" for v in row)]
                for n, row in zip(d.class_names, d.noise_matrix, strict=True)
            ],
        ),
        "<h2>Most likely label errors</h2>",
        _table(
            ["index", "given", "suggested", "p(given)", "p(suggested)"],
            [
                [
                    t["index"],
                    t["given_label"],
                    t["suggested_label"],
                    f"{t['self_confidence']:.3f}",
                    f"{t['suggested_probability']:.3f}",
                ]
                for t in info["top_label_issues"]
            ],
        ),  # fmt: skip
        "<h2>Recommendation</h2>",
        "<p>No arena results found.</p>"
        if scen is None
        else f"<p>Closest arena scenario: {html.escape(scen['name'])} "
        f"({html.escape(scen['source'])}, "
        f"distance {scen['distance']:.2f}).</p>",
        _table(
            ["rank", "objective", "mean", "std", "seeds", "evidence"],
            [
                [o["rank"], o["objective"], o["mean"], o["std"], o["seeds"], o["evidence"]]
                for o in rec["objectives"]
            ],
        ),  # fmt: skip
        "<h2>Recipes</h2>",
        _table(
            ["recipe", "api", "why", "evidence"],
            [[r["recipe"], r["api"], r["why"], r["evidence"]] for r in rec["recipes"]],
        ),
    ]
    style = (
        "body{font-family:sans-serif;max-width:70em}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>losskit doctor</title>"
        f"<style>table{{border-collapse:collapse}}{style}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def write_reports(d: Diagnosis, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``doctor.json`` and ``doctor.html`` into ``out_dir``; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "doctor.json", out / "doctor.html"
    json_path.write_text(json.dumps(d.to_dict(), indent=2, allow_nan=False) + "\n")
    html_path.write_text(html_report(d))
    return json_path, html_path
