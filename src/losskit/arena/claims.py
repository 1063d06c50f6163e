"""The papers' qualitative claims, checked on the arena's records.

A claim compares objectives against a baseline on one metric for every (dataset, scenario)
the records hold that matches it, with mean ± std over seeds; it counts as reproduced where
the objective's mean beats the baseline's by more than the larger of the two standard
deviations, as not reproduced where it is worse by that much, and as a tie otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Claim:
    title: str
    papers: tuple[int, ...]
    metric: str
    baseline: str
    objectives: tuple[str, ...]
    applies: Callable[[str, str], bool]  # (dataset, scenario) -> bool


def _noisy(rate: str) -> Callable[[str, str], bool]:
    return lambda ds, sc: sc.split("+")[-1] == rate


def _distilled(ds: str, sc: str) -> bool:
    return "(teacher " in ds


def _any_noise(ds: str, sc: str) -> bool:
    return any(p.startswith(("symmetric", "pairflip", "cifar10n")) for p in sc.split("+"))


def _noisy_long_tail(ds: str, sc: str) -> bool:
    return _any_noise(ds, sc) and "longtail" in sc


def _long_tail_only(ds: str, sc: str) -> bool:
    return sc.startswith("longtail:") and not _any_noise(ds, sc)


_KD_FAMILY = ("kd:alpha=0.9", "kd:alpha=0.9,temperature=1", "dkd", "nkd", "nd", "dual_head_kd",
              "ferkd")  # fmt: skip
CLAIMS = (
    Claim("Under 40% symmetric noise the noise-robust objectives beat cross-entropy",
          (4, 37), "accuracy", "cross_entropy",
          ("generalized_cross_entropy", "comp_sum:tau=1.5", "ldr_kl"), _noisy("symmetric:0.4")),
    Claim("On CIFAR-10N worst (40% real noise) the same comparison", (4, 37), "accuracy",
          "cross_entropy", ("generalized_cross_entropy", "comp_sum:tau=1.5", "ldr_kl"),
          _noisy("cifar10n:worst")),
    Claim("Under label noise, retraining on the set cleaned by confident learning beats "
          "cross-entropy", (34,), "accuracy", "cross_entropy", ("cleaned",), _any_noise),
    Claim("Under label noise co-teaching, nested dropout and their combination beat "
          "cross-entropy", (12,), "accuracy", "cross_entropy",
          ("co_teaching", "nested_dropout", "co_teaching_nested"), _any_noise),
    Claim("Nested dropout followed by co-teaching beats co-teaching alone", (12,), "accuracy",
          "co_teaching", ("co_teaching_nested",), _any_noise),
    Claim("On noisy long-tailed labels RCAL beats cross-entropy", (32,), "balanced_accuracy",
          "cross_entropy", ("rcal",), _noisy_long_tail),
    Claim("Under a long tail, pseudo-labels on extra unlabeled data and self-supervised "
          "pre-training beat cross-entropy", (15,), "balanced_accuracy", "cross_entropy",
          ("semi_supervised", "ssp"), _long_tail_only),
    Claim("Under a long tail, RSS with unlabeled data beats cross-entropy", (41,),
          "balanced_accuracy", "cross_entropy", ("rss", "rss:pool_ratio=1,steps=1"),
          _long_tail_only),
    Claim("Under a long tail LDAM with DRW beats cross-entropy on balanced accuracy", (14,),
          "balanced_accuracy", "cross_entropy", ("ldam:drw_start=24", "ldam:drw_start=8"),
          lambda ds, sc: sc.startswith(("longtail:100", "natural"))),
    Claim("On imbalanced text (SMS spam, TREC-50) the Dice losses against cross-entropy",
          (17,), "macro_f1", "cross_entropy", ("dice", "self_adjusting_dice"),
          lambda ds, sc: ds in ("sms_spam", "trec50")),
    Claim("Under partial labels (dropped positives) ASL, COMIC and PU-MLC beat BCE on mAP",
          (19, 43), "map", "multilabel_bce", ("asymmetric", "comic", "pu_mlc"),
          lambda ds, sc: sc.startswith("partial")),
    Claim("Under partial labels COMIC's gain over BCE lies in the tail labels", (19,),
          "tail_map", "multilabel_bce", ("comic",), lambda ds, sc: sc.startswith("partial")),
    Claim("With 1-10 positives per query decoupled softmax (and soft top-k) beat the "
          "multi-positive softmax", (3,), "p@5", "multilabel_softmax",
          ("decoupled_softmax", "soft_top_k"), lambda ds, sc: ds.startswith("synthetic_xc")),
    # Distillation records are named "<dataset> (teacher <spec> → <student>)" by the report.
    Claim("KD and the teacher-based objectives beat the CE-only student", (21, 23, 27, 44),
          "accuracy", "cross_entropy", _KD_FAMILY, _distilled),
    Claim("NKD, ND (KD++) and DKD beat KD (0.9 KD + 0.1 CE, T = 4)", (21, 44), "accuracy",
          "kd:alpha=0.9", ("nkd", "nd", "dkd"), _distilled),
    Claim("Dual-head KD and FerKD beat KD", (23, 27), "accuracy", "kd:alpha=0.9",
          ("dual_head_kd", "ferkd"), _distilled),
    Claim("Teacher-free USKD beats the CE-only student", (44,), "accuracy", "cross_entropy",
          ("uskd",), _distilled),
    Claim("Soft labels alone (KL at T = 20 or 1, no T^2, no CE) beat hard labels (CE only)",
          (58,), "accuracy", "cross_entropy",
          ("soft_label_protocol", "soft_label_protocol:temperature=1"), _distilled),
)  # fmt: skip


def _stats(records: Iterable[Record], metric: str) -> tuple[float, float, int]:
    """Mean, std and count of ``metric`` over the records that have it (a diverged trial may
    have none); the mean is NaN when none has."""
    v = np.array([r["metrics"][metric] for r in records if metric in r["metrics"]], dtype=float)
    if not len(v):
        return float("nan"), 0.0, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def check_claims(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One row per (claim, dataset, scenario, objective) present in ``records``."""
    by: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        by.setdefault((r["dataset"], r["scenario"], r["objective"]), []).append(r)
    rows = []
    for claim in CLAIMS:
        cells = sorted({(d, s) for d, s, _ in by if claim.applies(d, s)})
        for ds, sc in cells:
            base = by.get((ds, sc, claim.baseline))
            if not base:
                continue
            bm, bs, bn = _stats(base, claim.metric)
            for obj in claim.objectives:
                if (ds, sc, obj) not in by:
                    continue
                m, s, n = _stats(by[(ds, sc, obj)], claim.metric)
                if not (n and bn):
                    continue
                gap = max(s, bs)
                verdict = "yes" if m - bm > gap else "no" if bm - m > gap else "tie"
                rows.append({"claim": claim.title, "papers": claim.papers, "dataset": ds,
                             "scenario": sc, "metric": claim.metric, "objective": obj,
                             "mean": m, "std": s, "seeds": n, "baseline_mean": bm,
                             "baseline_std": bs, "objective_baseline": claim.baseline,
                             "reproduced": verdict})  # fmt: skip
    return rows


def claims_markdown(records: Iterable[Record]) -> str:
    """The reproduction table (empty string when no claim applies to the records)."""
    rows = check_claims(records)
    if not rows:
        return ""
    tables = []
    for baseline in dict.fromkeys(r["objective_baseline"] for r in rows):
        tables.append(_table([r for r in rows if r["objective_baseline"] == baseline], baseline))
    return "\n\n".join(tables)


def _table(rows: list[dict[str, Any]], baseline: str) -> str:
    out = [f"| claim (papers) | dataset / scenario | metric | objective | {baseline} | "
           "reproduced |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        papers = ", ".join(map(str, r["papers"]))
        out.append(
            f"| {r['claim']} ({papers}) | {r['dataset']} / {r['scenario']} | {r['metric']} | "
            f"`{r['objective']}` {100 * r['mean']:.1f} ± {100 * r['std']:.1f} | "
            f"{100 * r['baseline_mean']:.1f} ± {100 * r['baseline_std']:.1f} | "
            f"{r['reproduced']} |"
        )
    return "\n".join(out)
