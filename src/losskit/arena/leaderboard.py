"""Leaderboards: per (dataset, scenario), mean ± std over seeds of the final-epoch metrics,
ranked by accuracy (balanced accuracy for long-tail scenarios); multi-label boards (records
with ``task == "multilabel"``) are ranked by mAP and show micro/macro-F1, P@1 and the
head/tail mAP. :func:`extreme_table` is the synthetic extreme track's one table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "ece")
GROUPS = ("head", "medium", "tail")
ML_METRICS = ("map", "micro_f1", "macro_f1", "p@1", "head_map", "tail_map")
XC_METRICS = ("p@1", "p@5", "ndcg@5")


def task_of(record: Mapping[str, Any]) -> str:
    """``"multiclass"`` (records without a ``task``), ``"multilabel"`` or ``"extreme"``."""
    return str(record.get("task") or "multiclass")


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
    task: str = "multiclass"

    @property
    def metrics(self) -> tuple[str, ...]:
        return ML_METRICS if self.task == "multilabel" else METRICS

    @property
    def rate_label(self) -> str:
        what = "dropped positives" if self.task == "multilabel" else "noise"
        return f"{what} {self.noise_rate:.1%}"


def _row(objective: str, recs: list[Mapping[str, Any]], keys: Iterable[str]) -> Row:
    keys = [k for k in keys if all(k in x["metrics"] for x in recs)]
    vals = {k: np.array([x["metrics"][k] for x in recs], dtype=float) for k in keys}
    return Row(
        objective,
        len(recs),
        {k: float(v.mean()) for k, v in vals.items()},
        {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()},
    )


def leaderboards(records: Iterable[Mapping[str, Any]]) -> list[Board]:
    """Group records (``dataset, scenario, objective, seed, metrics, noise_rate``) into boards."""
    groups: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    tasks: dict[tuple[str, str], str] = {}
    for r in records:
        if task_of(r) == "extreme":
            continue
        groups[(r["dataset"], r["scenario"])][r["objective"]].append(r)
        tasks[(r["dataset"], r["scenario"])] = task_of(r)
    boards = []
    for (dataset, scenario), by_obj in sorted(groups.items()):
        task = tasks[(dataset, scenario)]
        if task == "multilabel":
            rank_by, keys = "map", ML_METRICS
        else:
            rank_by = "balanced_accuracy" if is_long_tail(scenario) else "accuracy"
            keys = (*METRICS, *GROUPS)
        rows, rates = [], []
        for objective, recs in by_obj.items():
            rows.append(_row(objective, recs, keys))
            rates += [float(x.get("noise_rate", 0.0)) for x in recs]
        _rank(rows, rank_by)
        boards.append(Board(dataset, scenario, rank_by, rows, float(np.mean(rates)), task))
    return boards


def _rank(rows: list[Row], rank_by: str) -> None:
    """Sort by decreasing mean of ``rank_by`` (missing or NaN last) and number the ranks."""
    rows.sort(key=lambda row: -np.nan_to_num(row.mean.get(rank_by, -np.inf), nan=-np.inf))
    for i, row in enumerate(rows, 1):
        row.rank = i


def markdown_table(board: Board) -> str:
    extra = [g for g in GROUPS if all(g in r.mean for r in board.rows)]
    if board.task == "multilabel":
        extra = []
    head = ["rank", "objective", "seeds", *board.metrics, *(f"{g} acc" for g in extra)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in board.rows:
        cells = [str(r.rank), f"`{r.objective}`", str(r.n_seeds)]
        cells += [r.cell(m) for m in (*board.metrics, *extra)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def terminal_table(board: Board) -> str:
    title = (
        f"{board.dataset} / {board.scenario}  ({board.rate_label}, "
        f"ranked by {board.rank_by}, mean ± std over seeds, %)"
    )
    if board.task == "multilabel":
        cols = (("map", "mAP", 12), ("micro_f1", "micro-F1", 12), ("p@1", "P@1", 12),
                ("tail_map", "tail mAP", 12))  # fmt: skip
    else:
        cols = (("accuracy", "acc", 12), ("balanced_accuracy", "bal acc", 12), ("ece", "ECE", 11))
    head = "".join(f" {label:>{w}}" for _, label, w in cols)
    lines = [title, f"  {'#':>2} {'objective':<34}{head}"]
    for r in board.rows:
        cells = "".join(f" {r.cell(m):>{w}}" for m, _, w in cols)
        lines.append(f"  {r.rank:>2} {r.objective:<34}{cells}")
    return "\n".join(lines)


def extreme_label(dataset: str) -> str:
    """``synthetic_xc:labels=10000,train=20000,...`` -> ``L=10000, 20000 train queries``."""
    fields = dict(item.partition("=")[::2] for item in dataset.partition(":")[2].split(","))
    return f"L={fields.get('labels', '?')}, {fields.get('train', '?')} train queries"


def extreme_table(records: Iterable[Mapping[str, Any]]) -> str:
    """The extreme track as one Markdown table: per label count, tower and batching, the
    objectives by P@1 with P@5, nDCG@5 (mean ± std over seeds, %) and seconds per epoch
    (empty string when there is no extreme record)."""
    groups: dict[tuple[str, str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if task_of(r) == "extreme":
            groups[(r["dataset"], r["model"], r["scenario"])][r["objective"]].append(r)
    if not groups:
        return ""
    head = ["data", "tower", "batching", "objective", "seeds", "P@1", "P@5", "nDCG@5", "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (dataset, model, scenario), by_obj in sorted(groups.items()):
        rows = [_row(obj, recs, XC_METRICS) for obj, recs in by_obj.items()]
        _rank(rows, "p@1")
        for r in rows:
            seconds = np.mean([x.get("epoch_time", np.nan) for x in by_obj[r.objective]])
            cells = [extreme_label(dataset), model, scenario, f"`{r.objective}`", str(r.n_seeds)]
            cells += [r.cell(m) for m in XC_METRICS] + [f"{seconds:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
