"""Demonstration suites: procedures and measures that are not one objective per trial.

A demo is a function ``run(out_dir, *, seeds, quick, data_dir) -> DemoResult`` that trains what
it needs, writes its plots into ``out_dir`` and returns a markdown section, its verdicts and
its raw numbers. :func:`run_demo_suite` runs the demos of a suite one after the other, keeps
each finished demo's result in ``OUT/demos/NAME.json`` (a rerun resumes: finished demos are
not run again) and writes ``OUT/results.md``.

``quick=True`` is a smoke setting (tiny grids, one seed) for tests and first looks; the
numbers in ``docs/results`` come from ``quick=False``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Verdict:
    """One claim of a paper checked on data: ``verdict`` in yes / no / tie / partly."""

    claim: str
    verdict: str
    evidence: str


@dataclass
class DemoResult:
    """What a demo returns: a markdown section body (tables, plot links relative to the
    output folder), its verdicts and its raw numbers (JSON-serialisable)."""

    name: str
    title: str
    papers: tuple[int, ...]
    markdown: str
    verdicts: list[Verdict] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


Demo = Callable[..., DemoResult]

# suite -> demo name -> "module:function" (diagnostics: how models learn from labels;
# labels: label-quality methods)
DEMO_SUITES: dict[str, dict[str, str]] = {
    "diagnostics": {
        "generative_linear": "losskit.procedures.generative_linear_demo:run",
        "loki": "losskit.procedures.loki_demo:run",
        "grokking": "losskit.procedures.grokking_demo:run",
        "large_step_gd": "losskit.procedures.large_step_gd_demo:run",
        "unlearning": "losskit.procedures.unlearning_demo:run",
        "intrinsic": "losskit.procedures.intrinsic_demo:run",
        "inductive_bias": "losskit.procedures.inductive_bias_demo:run",
    },
    "labels": {
        "aggregate": "losskit.procedures.aggregate_demo:run",
        "label_errors": "losskit.procedures.label_errors_demo:run",
        "label_budget": "losskit.procedures.label_budget_demo:run",
        "memorization": "losskit.procedures.memorization_demo:run",
        "noisy_training": "losskit.procedures.noisy_training_demo:run",
        "rcal": "losskit.procedures.rcal_demo:run",
        "imbalance_recipes": "losskit.procedures.imbalance_recipes_demo:run",
    },
}


def _load(target: str) -> Demo:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def _from_json(raw: dict[str, Any]) -> DemoResult:
    raw = dict(raw)
    raw["papers"] = tuple(raw["papers"])
    raw["verdicts"] = [Verdict(**v) for v in raw["verdicts"]]
    return DemoResult(**raw)


def demo_names(suite: str) -> list[str]:
    base = suite.removesuffix("_quick")
    if base not in DEMO_SUITES:
        raise ValueError(f"suite must be one of {sorted(DEMO_SUITES)}, got {suite!r}")
    return list(DEMO_SUITES[base])


def run_demo_suite(
    suite: str,
    out: Path,
    *,
    seeds: int | None = None,
    only: list[str] | None = None,
    data_dir: str | None = None,
    command: str = "",
) -> int:
    """Run the demos of ``suite`` (``NAME_quick``: the quick settings, one seed) into
    ``out``; return the number of demos that failed."""
    quick = suite.endswith("_quick")
    names = demo_names(suite)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown demos {unknown}; {suite!r} has {names}")
        names = [n for n in names if n in only]
    seeds = (1 if quick else 3) if seeds is None else seeds
    store = out / "demos"
    store.mkdir(parents=True, exist_ok=True)
    failed = 0
    targets = DEMO_SUITES[suite.removesuffix("_quick")]
    for i, name in enumerate(names, 1):
        path = store / f"{name}.json"
        if path.exists():
            print(f"[{i}/{len(names)}] {name}: stored", file=sys.stderr)
            continue
        print(f"[{i}/{len(names)}] {name}: running", file=sys.stderr)
        start = time.perf_counter()
        try:
            result = _load(targets[name])(out, seeds=seeds, quick=quick, data_dir=data_dir)
        except Exception:  # one failing demo must not lose the others
            failed += 1
            print(f"{name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            continue
        result.seconds = time.perf_counter() - start
        path.write_text(json.dumps(asdict(result), indent=1, default=float))
        print(f"[{i}/{len(names)}] {name}: {result.seconds:.0f} s", file=sys.stderr)
    write_demo_report(out, command=command, names=names)
    return failed


def write_demo_report(out: Path, *, command: str = "", names: list[str] | None = None) -> str:
    """``OUT/results.md`` from the stored demo results (in ``names`` order when given)."""
    store = out / "demos"
    stored = {p.stem: p for p in sorted(store.glob("*.json"))}
    order = [n for n in (names or sorted(stored)) if n in stored]
    results = [_from_json(json.loads(stored[n].read_text())) for n in order]
    lines = ["# Demonstrations: measures and procedures on real data", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["| demo | papers | verdicts | time |", "|---|---|---|---|"]
    for r in results:
        counts: dict[str, int] = {}
        for v in r.verdicts:
            counts[v.verdict] = counts.get(v.verdict, 0) + 1
        summary = ", ".join(f"{k} {c}" for k, c in sorted(counts.items())) or "-"
        papers = ", ".join(map(str, r.papers))
        lines.append(f"| [{r.title}](#{r.name}) | {papers} | {summary} | {r.seconds:.0f} s |")
    for r in results:
        lines += [
            "",
            f'<a id="{r.name}"></a>',
            f"## {r.title} (paper {', '.join(map(str, r.papers))})",
        ]
        lines += ["", r.markdown.strip(), ""]
        if r.verdicts:
            lines += ["| claim | verdict | evidence |", "|---|---|---|"]
            lines += [f"| {v.claim} | **{v.verdict}** | {v.evidence} |" for v in r.verdicts]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text
