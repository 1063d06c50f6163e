"""The report's figures as PNG bytes: accuracy against noise rate, per-class accuracy under a
long tail, and reliability diagrams. matplotlib runs headless (Agg)."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Record = Mapping[str, Any]


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, axes[0]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def noise_curves(records: Sequence[Record], dataset: str) -> bytes | None:
    """Test accuracy (mean ± std over seeds) against the noise rate (achieved, averaged over
    the seeds of a scenario), one line per objective and one panel per noise family
    (symmetric, pair-flip, noise matrix, real label sets); clean runs sit at 0 in each."""
    noisy = ("symmetric", "pairflip", "matrix", "cifar10n")
    return _rate_curves(records, dataset, "accuracy", noisy, " noise", "noise rate (%)")


def partial_label_curves(records: Sequence[Record], dataset: str) -> bytes | None:
    """Multi-label: test mAP (mean ± std over seeds) against the achieved fraction of
    dropped positives, one line per objective, one panel per partial-label scenario family."""
    families = ("partial", "partial_freq", "partial_known")
    return _rate_curves(records, dataset, "map", families, "", "dropped positives (%)")


def _rate_curves(records: Sequence[Record], dataset: str, metric: str, noisy: Sequence[str],
                 suffix: str, xlabel: str) -> bytes | None:  # fmt: skip
    """``metric`` against the achieved rate of each scenario family in ``noisy``."""
    rates: dict[str, list[float]] = defaultdict(list)
    accs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        if r["dataset"] == dataset and "+" not in r["scenario"] and metric in r["metrics"]:
            rates[r["scenario"]].append(float(r.get("noise_rate", 0.0)))
            accs[(r["scenario"], r["objective"])].append(r["metrics"][metric])
    families = sorted({sc.split(":")[0] for sc in rates} & set(noisy))
    if not families:
        return None
    fig, axes = _figure(len(families))
    objectives = sorted({obj for _, obj in accs})
    for ax, fam in zip(axes, families, strict=True):
        members = [sc for sc in rates if sc.split(":")[0] in (fam, "clean")]
        members.sort(key=lambda sc: np.mean(rates[sc]))
        for obj in objectives:
            pts = [
                (100 * np.mean(rates[sc]), accs[(sc, obj)]) for sc in members if (sc, obj) in accs
            ]
            xs = [x for x, _ in pts]
            ax.errorbar(
                xs,
                [100 * np.mean(a) for _, a in pts],
                yerr=[100 * np.std(a) for _, a in pts],
                marker="o",
                capsize=2,
                label=obj,
            )
        ylabel = "test acc (%)" if metric == "accuracy" else f"test {metric} (%)"
        ax.set(title=f"{dataset}: {fam}{suffix}", xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="best")
    return _png(fig)


def per_class_accuracy(records: Sequence[Record], dataset: str, scenario: str) -> bytes | None:
    """Per-class test accuracy (mean over seeds), classes ordered by training count (head
    first)."""
    by_obj: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in records:
        if r["dataset"] == dataset and r["scenario"] == scenario and r.get("per_class_accuracy"):
            acc = np.asarray(r["per_class_accuracy"], dtype=float)
            counts = r.get("train_class_counts")
            order = np.argsort(-np.asarray(counts), kind="stable") if counts else slice(None)
            by_obj[r["objective"]].append(acc[order])
    if not by_obj:
        return None
    fig, (ax,) = _figure(1, width=7.0)
    for obj, accs in sorted(by_obj.items()):
        ax.plot(100 * np.mean(accs, axis=0), marker=".", label=obj)
    ax.set(
        title=f"{dataset} / {scenario}: per-class accuracy",
        xlabel="class, by training count (head → tail)",
        ylabel="test acc (%)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return _png(fig)


def reliability(records: Sequence[Record], dataset: str, scenario: str) -> bytes | None:
    """Reliability diagrams (accuracy against confidence per bin, seeds pooled), one panel per
    objective."""
    pooled: dict[str, list[Mapping[str, Sequence[float]]]] = defaultdict(list)
    for r in records:
        if r["dataset"] == dataset and r["scenario"] == scenario and r.get("reliability"):
            pooled[r["objective"]].append(r["reliability"])
    if not pooled:
        return None
    objs = sorted(pooled)
    fig, axes = _figure(len(objs), width=2.6, height=2.8)
    for ax, obj in zip(axes, objs, strict=True):
        counts = sum(np.asarray(b["count"], dtype=float) for b in pooled[obj])
        conf = sum(np.asarray(b["confidence"]) * np.asarray(b["count"]) for b in pooled[obj])
        acc = sum(np.asarray(b["accuracy"]) * np.asarray(b["count"]) for b in pooled[obj])
        keep = counts > 0
        centers = conf[keep] / counts[keep]
        ax.bar(centers, acc[keep] / counts[keep], width=1 / len(counts), alpha=0.7, edgecolor="k")
        ax.plot([0, 1], [0, 1], "r--", lw=1)
        ax.set(title=obj, xlim=(0, 1), ylim=(0, 1), xlabel="confidence")
        ax.title.set_fontsize(7)
    axes[0].set_ylabel("accuracy")
    return _png(fig)
