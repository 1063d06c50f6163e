"""The distillation section of the arena report, from the store's distillation records
(``task == "distill"``).

One table per (dataset, scenario, teacher, student model): the students' final-epoch test
accuracy, ECE and macro-F1 (mean ± std over seeds), and the **gap closed**
``(student - CE-only student) / (teacher - CE-only student)`` on accuracy, from the means over
seeds (the teachers of the seeds are averaged the same way); it is left blank where the
teacher is not above the CE-only student. The paper-58 verdicts and the others are in
:mod:`losskit.arena.claims`, which reads these records under :func:`distill_label`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from losskit.arena.leaderboard import Row, _rank, _row

Record = Mapping[str, Any]
DISTILL_METRICS = ("accuracy", "ece", "macro_f1")
BASELINE = "cross_entropy"
PROGRESSIVE = (
    Path(__file__).resolve().parents[3] / "docs" / "results" / "progressive_distillation.md"
)
NOTE = (
    "Teacher → student pairs (losskit.arena.distill_trial): the teacher is trained once per "
    "seed on the student's training samples and cached; students are trained with each "
    "objective (the CE combinations are listed in losskit.arena.distill_objectives). "
    "Final-epoch test metrics, mean ± std over seeds, in %. Gap closed = (student − CE-only "
    "student) / (teacher − CE-only student) on the mean accuracies; negative where the "
    "student is below the CE-only student, and noisy where the teacher's lead over the "
    "CE-only student is within the seed spread."
)


def distill_label(record: Record) -> str:
    """``"<dataset> (teacher <spec> → <model>)"``: the name claims use for a pair."""
    return f"{record['dataset']} (teacher {record['teacher']} → {record['model']})"


@dataclass
class DistillBoard:
    dataset: str
    scenario: str
    teacher: str
    model: str
    rows: list[Row]
    gap: dict[str, float | None]
    teacher_mean: dict[str, float]
    teacher_std: dict[str, float]
    n_teachers: int
    teacher_params: int
    student_params: int

    @property
    def title(self) -> str:
        t = self.teacher_mean
        cell = "–" if "accuracy" not in t else (
            f"{100 * t['accuracy']:.1f} ± {100 * self.teacher_std['accuracy']:.1f}")  # fmt: skip
        params = f", {self.teacher_params:,} parameters" if self.teacher_params else ""
        return (
            f"{self.dataset} / {self.scenario}: teacher `{self.teacher}` (accuracy {cell}, "
            f"ECE {100 * t.get('ece', float('nan')):.1f}{params}) → student `{self.model}` "
            f"({self.student_params:,} parameters)"
        )


def distill_boards(records: Iterable[Record]) -> list[DistillBoard]:
    """Group distillation records into boards, ranked by accuracy."""
    groups: dict[tuple[str, str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.get("task") == "distill":
            groups[(r["dataset"], r["scenario"], r["teacher"], r["model"])].append(r)
    boards = []
    for (dataset, scenario, teacher, model), recs in sorted(groups.items()):
        by_obj: dict[str, list[Record]] = defaultdict(list)
        for r in recs:
            by_obj[r["objective"]].append(r)
        rows = [_row(obj, rs, DISTILL_METRICS) for obj, rs in by_obj.items()]
        _rank(rows, "accuracy")
        teachers = {r.get("teacher_key", r["seed"]): r["teacher_metrics"] for r in recs}
        t_vals = {k: np.array([m[k] for m in teachers.values()], dtype=float)
                  for k in ("accuracy", "ece")}  # fmt: skip
        t_mean = {k: float(v.mean()) for k, v in t_vals.items()}
        t_std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in t_vals.items()}
        base = next((r.mean.get("accuracy") for r in rows if r.objective == BASELINE), None)
        gap: dict[str, float | None] = {}
        for row in rows:
            span = None if base is None else t_mean["accuracy"] - base
            ok = span is not None and span > 0 and "accuracy" in row.mean
            gap[row.objective] = (row.mean["accuracy"] - base) / span if ok else None
        boards.append(DistillBoard(
            dataset, scenario, teacher, model, rows, gap, t_mean, t_std, len(teachers),
            int(recs[0].get("teacher_params", 0)), int(recs[0].get("student_params", 0)),
        ))  # fmt: skip
    return boards


def distill_markdown(board: DistillBoard) -> str:
    head = ["rank", "objective", "seeds", "accuracy", "gap closed", "ECE", "macro-F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in board.rows:
        g = board.gap[r.objective]
        gap = "–" if g is None else f"{100 * g:.0f} %"
        cells = [str(r.rank), f"`{r.objective}`", str(r.n_seeds), r.cell("accuracy"), gap,
                 r.cell("ece"), r.cell("macro_f1")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def progressive_table(path: Path = PROGRESSIVE) -> str:
    """The first Markdown table of the progressive-distillation results file (paper 1's
    MiniLM student, produced by ``losskit.procedures.minilm_student``, not rerun by the
    arena), or ``""`` when the file is absent."""
    if not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^\s*\|", line)), None)
    if start is None:
        return ""
    end = start
    while end < len(lines) and lines[end].lstrip().startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def distill_sections(records: Iterable[Record]) -> list[tuple[str, str]]:
    """``(title, Markdown table)`` per board, and the progressive-distillation table (TREC-6)
    when its results file exists and the records hold a TREC-6 board."""
    boards = distill_boards(records)
    out = [(b.title, distill_markdown(b)) for b in boards]
    progressive = progressive_table() if any(b.dataset == "trec6" for b in boards) else ""
    if progressive:
        out.append(("trec6: progressive distillation of all-MiniLM-L6-v2 into a 2-layer "
                    "student (paper 1; docs/results/progressive_distillation.md, not rerun)",
                    progressive))  # fmt: skip
    return out
