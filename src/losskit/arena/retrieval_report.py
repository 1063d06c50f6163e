"""The retrieval and imbalanced-regression sections of the arena report, from the store's
records with ``task == "retrieval"`` (:mod:`losskit.arena.retrieval`) or ``"regression"``
(:mod:`losskit.arena.imbalanced_regression`).

One table per (dataset, scenario, model). Retrieval: Recall@1, Recall@5, MAP@R and NMI of
the final epoch, mean ± std over seeds in %, ranked by MAP@R, with the mean of the four
per-metric ranks beside it and a last, unranked row for the untrained input features when
the trials measured them. Regression: MAE (balanced test set), the MAE of the many-, medium-
and few-shot bins, the geometric mean of the absolute errors and the MSE, in target units,
ranked by MAE (lower is better).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from losskit.arena.leaderboard import Row, _rank, _row

Record = Mapping[str, Any]
TASKS = ("retrieval", "regression")
RETRIEVAL_METRICS = ("recall@1", "recall@5", "map@r", "nmi")
REGRESSION_METRICS = ("mae", "mae_many", "mae_medium", "mae_few", "gm", "mse")
_HEADS = {"recall@1": "R@1", "recall@5": "R@5", "map@r": "MAP@R", "nmi": "NMI", "mae": "MAE",
          "mae_many": "MAE many", "mae_medium": "MAE medium", "mae_few": "MAE few",
          "gm": "GM", "mse": "MSE"}  # fmt: skip
NOTE = (
    "Retrieval (losskit.arena.retrieval): embedding networks trained with each objective on "
    "class-balanced P x K batches; Recall@1/5, MAP@R (Musgrave et al. 2020) and NMI of "
    "k-means, cosine similarity, leave-one-out among the query rows (classes unseen in "
    "training for disjoint:K), final epoch, mean ± std over seeds, in %. Ranked by MAP@R; "
    "'mean rank' averages the ranks of the four metrics. cross_entropy and other "
    "classification losses train a linear classifier head; retrieval uses its penultimate "
    "(embedding) features. Imbalanced regression (losskit.arena.imbalanced_regression): MAE "
    "on a balanced test set, overall and on the many- (> 100 training rows per bin), medium- "
    "and few-shot (< 20) bins, in target units, ranked by MAE (lower is better)."
)


def _groups(records: Iterable[Record], task: str) -> dict[tuple[str, str, str], list[Record]]:
    out: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.get("task") == task:
            out[(r["dataset"], r["scenario"], r.get("model", ""))].append(r)
    return dict(sorted(out.items()))


def _by_objective(recs: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in recs:
        out[r["objective"]].append(r)
    return out


def _mean_ranks(rows: list[Row], metrics: tuple[str, ...]) -> dict[str, float]:
    ranks: dict[str, list[int]] = defaultdict(list)
    for m in metrics:
        order = sorted(rows, key=lambda row: -np.nan_to_num(row.mean.get(m, -np.inf), nan=-np.inf))
        for i, row in enumerate(order, 1):
            ranks[row.objective].append(i)
    return {k: float(np.mean(v)) for k, v in ranks.items()}


def _table(head: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*out, *("| " + " | ".join(cells) + " |" for cells in lines)])


def retrieval_table(recs: list[Record]) -> str:
    """The Markdown table of one retrieval (dataset, scenario, model)."""
    rows = [_row(obj, rs, RETRIEVAL_METRICS) for obj, rs in _by_objective(recs).items()]
    _rank(rows, "map@r")
    mean_rank = _mean_ranks(rows, RETRIEVAL_METRICS)
    head = ["rank", "objective", "seeds", *(_HEADS[m] for m in RETRIEVAL_METRICS), "mean rank"]
    lines = [[str(r.rank), f"`{r.objective}`", str(r.n_seeds),
              *(r.cell(m) for m in RETRIEVAL_METRICS), f"{mean_rank[r.objective]:.1f}"]
             for r in rows]  # fmt: skip
    inputs = [r["input_metrics"] for r in recs if r.get("input_metrics")]
    if inputs:  # the same for every trial of the table
        cells = [f"{100 * inputs[0][m]:.1f}" if m in inputs[0] else "–" for m in RETRIEVAL_METRICS]
        lines.append(["–", "(input features, untrained)", "–", *cells, "–"])
    return _table(head, lines)


def _cell(row: Row, metric: str) -> str:
    if metric not in row.mean:
        return "–"
    return f"{row.mean[metric]:.3f} ± {row.std[metric]:.3f}"


def regression_table(recs: list[Record]) -> str:
    """The Markdown table of one regression (dataset, scenario, model), ranked by MAE."""
    rows = [_row(obj, rs, REGRESSION_METRICS) for obj, rs in _by_objective(recs).items()]
    rows.sort(key=lambda row: np.nan_to_num(row.mean.get("mae", np.inf), nan=np.inf))
    for i, row in enumerate(rows, 1):
        row.rank = i
    head = ["rank", "objective", "seeds", *(_HEADS[m] for m in REGRESSION_METRICS)]
    lines = [[str(r.rank), f"`{r.objective}`", str(r.n_seeds),
              *(_cell(r, m) for m in REGRESSION_METRICS)] for r in rows]  # fmt: skip
    return _table(head, lines)


def _title(dataset: str, scenario: str, model: str, recs: list[Record]) -> str:
    r = recs[0]
    if r.get("task") == "regression":
        return (f"{dataset} / {scenario} ({model}; {r.get('num_train', '?')} training rows, "
                f"{r.get('num_test', '?')} balanced test rows)")  # fmt: skip
    return (f"{dataset} / {scenario} ({model}; {r.get('num_train', '?')} training rows of "
            f"{r.get('train_classes', '?')} classes, {r.get('num_query', '?')} queries of "
            f"{r.get('query_classes', '?')} classes)")  # fmt: skip


def retrieval_sections(records: Iterable[Record]) -> list[tuple[str, str]]:
    """``(title, Markdown table)`` for every retrieval, then every regression, table."""
    records = list(records)
    out = []
    for task, table in (("retrieval", retrieval_table), ("regression", regression_table)):
        for (dataset, scenario, model), recs in _groups(records, task).items():
            out.append((_title(dataset, scenario, model, recs), table(recs)))
    return out
