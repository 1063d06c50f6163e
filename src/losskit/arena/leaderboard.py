"""Leaderboards: per (dataset, scenario), mean ± std over seeds of the final-epoch metrics,
ranked by accuracy (balanced accuracy for long-tail scenarios)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "ece")
GROUPS = ("head", "medium", "tail")


def is_long_tail(scenario: str) -> bool:
    return any(part.split(":")[0] in ("longtail", "natural") for part in scenario.split("+"))


@dataclass
class Row:
    objective: str
    n_seeds: int
    mean: dict[str, float]
    std: dict[str, float]
    rank: int = 0

    def cell(self, metric: str, scale: float = 100.0) -> str:
        if metric not in self.mean:
            return "–"
        return f"{self.mean[metric] * scale:.1f} ± {self.std[metric] * scale:.1f}"


@dataclass
class Board:
    dataset: str
    scenario: str
    rank_by: str
    rows: list[Row]
    noise_rate: float


def leaderboards(records: Iterable[Mapping[str, Any]]) -> list[Board]:
    """Group records (``dataset, scenario, objective, seed, metrics, noise_rate``) into boards."""
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        groups[(r["dataset"], r["scenario"])][r["objective"]].append(r)
    boards = []
    for (dataset, scenario), by_obj in sorted(groups.items()):
        rank_by = "balanced_accuracy" if is_long_tail(scenario) else "accuracy"
        rows, rates = [], []
        for objective, recs in by_obj.items():
            keys = [k for k in (*METRICS, *GROUPS) if all(k in x["metrics"] for x in recs)]
            vals = {k: np.array([x["metrics"][k] for x in recs], dtype=float) for k in keys}
            rows.append(
                Row(
                    objective,
                    len(recs),
                    {k: float(v.mean()) for k, v in vals.items()},
                    {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()},
                )
            )
            rates += [float(x.get("noise_rate", 0.0)) for x in recs]
        rows.sort(key=lambda row: -row.mean.get(rank_by, -np.inf))
        for i, row in enumerate(rows, 1):
            row.rank = i
        boards.append(Board(dataset, scenario, rank_by, rows, float(np.mean(rates))))
    return boards


def markdown_table(board: Board) -> str:
    extra = [g for g in GROUPS if all(g in r.mean for r in board.rows)]
    head = ["rank", "objective", "seeds", *METRICS, *(f"{g} acc" for g in extra)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in board.rows:
        cells = [str(r.rank), f"`{r.objective}`", str(r.n_seeds)]
        cells += [r.cell(m) for m in (*METRICS, *extra)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def terminal_table(board: Board) -> str:
    title = (
        f"{board.dataset} / {board.scenario}  (noise {board.noise_rate:.1%}, "
        f"ranked by {board.rank_by}, mean ± std over seeds, %)"
    )
    lines = [title, f"  {'#':>2} {'objective':<34} {'acc':>12} {'bal acc':>12} {'ECE':>11}"]
    for r in board.rows:
        lines.append(
            f"  {r.rank:>2} {r.objective:<34} {r.cell('accuracy'):>12} "
            f"{r.cell('balanced_accuracy'):>12} {r.cell('ece'):>11}"
        )
    return "\n".join(lines)
