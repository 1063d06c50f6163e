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
from losskit.arena.leaderboard import is_long_tail, leaderboards, markdown_table, terminal_table

Record = Mapping[str, Any]


def _figures(records: Sequence[Record]) -> list[tuple[str, bytes]]:
    figs: list[tuple[str, bytes]] = []
    datasets = sorted({r["dataset"] for r in records})
    for ds in datasets:
        png = plots.noise_curves(records, ds)
        if png:
            figs.append((f"{ds}: test accuracy against noise rate", png))
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
    boards = leaderboards(records)
    ver = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    header = (
        f"Command: `{command}`\n\nVersions: {ver}\n\n"
        f"{len(records)} trials. Final-epoch metrics on the clean test split, mean ± std over "
        "seeds, in %. Ranked by accuracy, by balanced accuracy under a long tail.\n"
    )
    md = ["# Arena results", "", header]
    claims = claims_markdown(records)
    if claims:
        md += [
            "## Reproductions",
            "",
            "A claim is reproduced ('yes') where the objective's "
            "mean beats cross-entropy's by more than the larger standard deviation, 'no' "
            "where it is worse by that much, 'tie' otherwise.",
            "",
            claims,
            "",
        ]
    for b in boards:
        md += [
            f"## {b.dataset} / {b.scenario} (noise {b.noise_rate:.1%})",
            "",
            markdown_table(b),
            "",
        ]
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
    for b in boards:
        parts.append(
            f"<h2>{html.escape(b.dataset)} / {html.escape(b.scenario)} "
            f"(noise {b.noise_rate:.1%}, ranked by {b.rank_by})</h2>"
        )
        parts.append(_html_table(markdown_table(b)))
    for title, png in figs:
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))
    return "\n\n".join(terminal_table(b) for b in boards)


def _html_table(md: str) -> str:
    rows = [line.strip("|").split("|") for line in md.splitlines() if not line.startswith("|--")]
    head, body = rows[0], rows[1:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    for r in body:
        cells = "".join(f"<td>{html.escape(c.strip().strip('`'))}</td>" for c in r)
        out.append(f"<tr>{cells}</tr>")
    return "".join(out) + "</table>"
