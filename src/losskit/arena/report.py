"""The arena report: ``results.md``, a self-contained ``report.html`` (figures embedded as
base64 PNG) and the terminal leaderboards, all rebuilt from the store's records."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from losskit.arena import plots
from losskit.arena.claims import claims_markdown
from losskit.arena.distill_report import NOTE as DISTILL_NOTE
from losskit.arena.distill_report import distill_label, distill_sections
from losskit.arena.leaderboard import (
    extreme_label,
    extreme_table,
    is_long_tail,
    leaderboards,
    markdown_table,
    task_of,
    terminal_table,
)
from losskit.arena.recipe_report import NOTE as RECIPE_NOTE
from losskit.arena.recipe_report import recipe_table
from losskit.arena.retrieval_report import NOTE as RETRIEVAL_NOTE
from losskit.arena.retrieval_report import TASKS as RETRIEVAL_TASKS
from losskit.arena.retrieval_report import retrieval_sections

Record = Mapping[str, Any]


def split_models(records: Sequence[Record]) -> list[Record]:
    """Records with ``dataset`` renamed ``"<dataset> (<model>)"`` for every dataset that the
    records hold with more than one model (the multi-label suite runs linear and MLP heads
    on the same data), so boards, claims and plots never pool two models."""
    models: dict[str, set[str]] = {}
    for r in records:
        models.setdefault(r["dataset"], set()).add(r.get("model", ""))
    return [
        {**r, "dataset": f"{r['dataset']} ({r['model']})"} if len(models[r["dataset"]]) > 1 else r
        for r in records
    ]


XC_NOTE = (
    "Dual encoders on synthetic data (losskit.arena.extreme): P@1, P@5, nDCG@5 of held-out "
    "queries against all labels, mean ± std over seeds (%); s/epoch: training seconds per "
    "epoch on one CPU thread (NGAME's re-clustering included, evaluation excluded)."
)


def _figures(records: Sequence[Record]) -> list[tuple[str, bytes]]:
    figs: list[tuple[str, bytes]] = []
    datasets = sorted({r["dataset"] for r in records})
    for ds in datasets:
        png = plots.noise_curves(records, ds)
        if png:
            figs.append((f"{ds}: test accuracy against noise rate", png))
        png = plots.partial_label_curves(records, ds)
        if png:
            figs.append((f"{ds}: test mAP against dropped positives", png))
        scenarios = sorted({r["scenario"] for r in records if r["dataset"] == ds})
        for sc in scenarios:
            if is_long_tail(sc):
                png = plots.per_class_accuracy(records, ds, sc)
                if png:
                    figs.append((f"{ds} / {sc}: per-class accuracy", png))
        for sc in scenarios[:1] if "clean" not in scenarios else ["clean"]:
            png = plots.reliability(records, ds, sc)
            if png:
                figs.append((f"{ds} / {sc}: reliability diagrams", png))
    return figs


def build_report(
    records: Sequence[Record], out_dir: str | Path, *, command: str, versions: Mapping[str, str]
) -> str:
    """Write ``results.md`` and ``report.html`` into ``out_dir``; return the terminal text."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xc = [r for r in records if task_of(r) == "extreme"]
    distill = [r for r in records if task_of(r) == "distill"]
    retr = [r for r in records if task_of(r) in RETRIEVAL_TASKS]
    records = split_models(
        [r for r in records if task_of(r) not in ("extreme", "distill", *RETRIEVAL_TASKS)]
    )
    n_trials = len(records) + len(xc) + len(distill) + len(retr)
    boards = leaderboards(records)
    ver = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    header = (
        f"Command: `{command}`\n\nVersions: {ver}\n\n"
        f"{n_trials} trials. Final-epoch metrics on the clean "
        "test split, mean ± std over seeds, in %. Ranked by accuracy, by balanced accuracy "
        "under a long tail, by mAP for multi-label data (F1 at logit 0; head/tail mAP over "
        "the labels split into thirds by training frequency).\n"
    )
    md = ["# Arena results", "", header]
    claims = claims_markdown(
        [
            *records,
            *({**r, "dataset": f"synthetic_xc {extreme_label(r['dataset'])}"} for r in xc),
            *({**r, "dataset": distill_label(r)} for r in distill),
        ]
    )
    if claims:
        md += [
            "## Reproductions",
            "",
            "A claim is reproduced ('yes') where the objective's "
            "mean beats the baseline's by more than the larger standard deviation, 'no' "
            "where it is worse by that much, 'tie' otherwise.",
            "",
            claims,
            "",
        ]
    recipes = recipe_table(records)
    if recipes:
        md += ["## Training recipes", "", RECIPE_NOTE, "", recipes, ""]
    for b in boards:
        md += [
            f"## {b.dataset} / {b.scenario} ({b.rate_label})",
            "",
            markdown_table(b),
            "",
        ]
    xc_md = extreme_table(xc)
    if xc_md:
        md += ["## Synthetic extreme classification", "", XC_NOTE, "", xc_md, ""]
    dist = distill_sections(distill)
    if dist:
        md += ["## Distillation", "", DISTILL_NOTE, ""]
        md += [line for title, table in dist for line in (f"### {title}", "", table, "")]
    ret = retrieval_sections(retr)
    if ret:
        md += ["## Retrieval and imbalanced regression", "", RETRIEVAL_NOTE, ""]
        md += [line for title, table in ret for line in (f"### {title}", "", table, "")]
    (out / "results.md").write_text("\n".join(md))
    figs = _figures(records)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>losskit arena</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
        "collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>",
        "<h1>losskit arena</h1>",
        f"<p>Command: <code>{html.escape(command)}</code><br>Versions: {html.escape(ver)}<br>"
        f"{len(records)} trials; final epoch; mean ± std over seeds (%).</p>",
    ]
    if recipes:
        parts.append(f"<h2>Training recipes</h2><p>{html.escape(RECIPE_NOTE)}</p>")
        parts.append(_html_table(recipes))
    for b in boards:
        parts.append(
            f"<h2>{html.escape(b.dataset)} / {html.escape(b.scenario)} "
            f"({b.rate_label}, ranked by {b.rank_by})</h2>"
        )
        parts.append(_html_table(markdown_table(b)))
    if xc_md:
        parts.append(f"<h2>Synthetic extreme classification</h2><p>{html.escape(XC_NOTE)}</p>")
        parts.append(_html_table(xc_md))
    if dist:
        parts.append(f"<h2>Distillation</h2><p>{html.escape(DISTILL_NOTE)}</p>")
        for title, table in dist:
            parts += [f"<h3>{html.escape(title)}</h3>", _html_table(table)]
    if ret:
        parts.append(
            f"<h2>Retrieval and imbalanced regression</h2><p>{html.escape(RETRIEVAL_NOTE)}</p>"
        )
        for title, table in ret:
            parts += [f"<h3>{html.escape(title)}</h3>", _html_table(table)]
    for title, png in figs:
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))
    text = [terminal_table(b) for b in boards]
    if xc_md:
        text.append("Synthetic extreme classification (%, s/epoch in seconds)\n" + xc_md)
    text += [f"{title}\n{table}" for title, table in dist]
    text += [f"{title}\n{table}" for title, table in ret]
    return "\n\n".join(text)


def _html_table(md: str) -> str:
    rows = [line.strip("|").split("|") for line in md.splitlines() if not line.startswith("|--")]
    head, body = rows[0], rows[1:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    for r in body:
        cells = "".join(f"<td>{html.escape(c.strip().strip('`'))}</td>" for c in r)
        out.append(f"<tr>{cells}</tr>")
    return "".join(out) + "</table>"
