"""Tables, verdicts and the plot of the paper-32 (RCAL) demonstration.

Verdict rule (the arena's): 'yes' where one mean beats the other by more than the larger
standard deviation over seeds, 'no' where it loses by that much, 'tie' otherwise; a claim
checked on several scenarios is 'yes' when it holds on all, 'partly' when on some, 'no' when
it fails on one and holds on none, 'tie' otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from losskit.arena.demos import Verdict
from losskit.procedures.rcal_runs import ARMS

LABELS = {
    "ce": "CE",
    "gce": "GCE (q = 0.7)",
    "ldam": "LDAM-DRW",
    "rcal": "RCAL",
    "rcal_lof20": "RCAL, LOF top 20 %",
    "rcal_no_tail": "RCAL, q = 0",
    "rcal_no_sampling": "RCAL, no sampling",
    "rcal_no_reg": "RCAL, β = 0",
}
GROUPS = ("head", "medium", "tail")


def ms(values: Sequence[float]) -> str:
    """``mean ± std`` in percent."""
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def compare(a: Sequence[float], b: Sequence[float]) -> str:
    gap, spread = np.mean(a) - np.mean(b), max(np.std(a), np.std(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def _aggregate(marks: list[str]) -> str:
    if all(m == "yes" for m in marks):
        return "yes"
    return "partly" if "yes" in marks else "no" if "no" in marks else "tie"


def _claim(claim: str, pairs: dict[str, tuple[Sequence[float], Sequence[float]]]) -> Verdict:
    marks = {t: compare(a, b) for t, (a, b) in pairs.items()}
    evidence = "; ".join(f"{t}: {ms(a)} vs {ms(b)} ({marks[t]})" for t, (a, b) in pairs.items())
    return Verdict(claim, _aggregate(list(marks.values())), evidence)


def verdicts(results: dict[str, dict[str, Any]]) -> list[Verdict]:
    """The paper's claims, checked on every scenario (balanced accuracy unless stated)."""

    def pairs(a: str, b: str, metric: str = "balanced_accuracy") -> dict[str, tuple]:
        return {t: (r["scores"][a][metric], r["scores"][b][metric]) for t, r in results.items()}

    out = [
        _claim("RCAL beats cross-entropy on noisy long-tailed data", pairs("rcal", "ce")),
        _claim("RCAL beats a noise-robust loss (GCE)", pairs("rcal", "gce")),
        _claim("RCAL beats a long-tail loss (LDAM-DRW)", pairs("rcal", "ldam")),
        _claim(
            "RCAL raises tail-class accuracy over cross-entropy",
            pairs("rcal", "ce", "tail_accuracy"),
        ),  # fmt: skip
        _claim(
            "Distributional calibration helps: training on sampled representations beats "
            "the same recipe without them",
            pairs("rcal", "rcal_no_sampling"),
        ),  # fmt: skip
        _claim(
            "Calibrating tail classes with their nearest head classes (q = 1) beats no "
            "borrowing (q = 0)",
            pairs("rcal", "rcal_no_tail"),
        ),  # fmt: skip
        _claim(
            "Individual calibration helps: the regulariser toward the contrastive "
            "representations beats β = 0",
            pairs("rcal", "rcal_no_reg"),
        ),  # fmt: skip
    ]
    lof = {t: (r["lof"]["rcal"]["kept_clean_fraction"], r["lof"]["rcal"]["clean_fraction"])
           for t, r in results.items()}  # fmt: skip
    v = _claim("LOF removes mislabelled samples: the samples kept for the Gaussians are cleaner "
               "than the labelled set (share of correct labels, threshold 1.5)", lof)  # fmt: skip
    top = {t: r["lof"]["rcal_lof20"]["kept_clean_fraction"] for t, r in results.items()}
    v.evidence += ". Dropping the top 20 % by LOF instead keeps " + "; ".join(
        f"{t}: {ms(k)}" for t, k in top.items()
    )
    out.append(v)
    return out


def tables(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["Balanced test accuracy (%):", "",
             "| scenario | " + " | ".join(LABELS[a] for a in ARMS) + " |",
             "|---|" + "---|" * len(ARMS)]  # fmt: skip
    for title, r in results.items():
        cells = [ms(r["scores"][a]["balanced_accuracy"]) for a in ARMS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Head / medium / tail test accuracy (%), classes in thirds by true training count:",
        "",
        "| scenario | arm | head | medium | tail |",
        "|---|---|---|---|---|",
    ]
    for title, r in results.items():
        for a in ARMS:
            cells = [ms(r["scores"][a][f"{g}_accuracy"]) for g in GROUPS]
            lines.append(f"| {title} | {LABELS[a]} | " + " | ".join(cells) + " |")
    lines += ["", "LOF on the contrastive representations (%): correct labels in the training "
              "set, among the samples kept, and the share of mislabelled samples removed:", "",
              "| scenario | rule | kept | correct labels, all | correct labels, kept | "
              "mislabelled removed |", "|---|---|---|---|---|---|"]  # fmt: skip
    for title, r in results.items():
        for arm, rule in (("rcal", "LOF > 1.5"), ("rcal_lof20", "top 20 % per class")):
            d = r["lof"][arm]
            lines.append(f"| {title} | {rule} | {ms(d['kept_fraction'])} | "
                         f"{ms(d['clean_fraction'])} | {ms(d['kept_clean_fraction'])} | "
                         f"{ms(d['removed_noisy_recall'])} |")  # fmt: skip
    return lines


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Balanced and tail accuracy per arm and scenario (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    width = 0.8 / len(ARMS)
    pos = np.arange(len(results))
    for ax, metric, name in zip(axes, ("balanced_accuracy", "tail_accuracy"),
                                ("balanced test accuracy (%)", "tail-class test accuracy (%)"),
                                strict=True):  # fmt: skip
        for i, arm in enumerate(ARMS):
            vals = [r["scores"][arm][metric] for r in results.values()]
            ax.bar(
                pos + (i - len(ARMS) / 2 + 0.5) * width,
                [100 * np.mean(v) for v in vals],
                width,
                yerr=[100 * np.std(v) for v in vals],
                label=LABELS[arm],
                capsize=2,
            )
        ax.set_xticks(pos, [t.replace(", ", "\n", 1) for t in results], fontsize=8)
        ax.set(ylabel=name, ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
