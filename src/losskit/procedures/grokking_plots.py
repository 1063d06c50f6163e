"""Figures of the paper-55 demonstration (:mod:`losskit.procedures.grokking_demo`), written
as PNG files; matplotlib runs headless (Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from losskit.diagnostics.grokking import PHASES

PHASE_COLORS = dict(
    zip(PHASES, ("#4c9be8", "#9ad28a", "#2f9e44", "#f08c00", "#c92a2a"), strict=True)
)


def _figure(ncols: int, width: float = 4.6, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def plot_phases(
    path: Path,
    corruptions: Sequence[float],
    weight_decays: Sequence[float],
    phase: Mapping[tuple[float, float], str],
    test: Mapping[tuple[float, float], float],
    train: Mapping[tuple[float, float], float],
) -> None:
    """The phase diagram: one coloured cell per (weight decay, corruption), with the mean
    train / test accuracy written in it."""
    from matplotlib.patches import Patch, Rectangle

    fig, (ax,) = _figure(
        1, width=1.3 * len(weight_decays) + 2.5, height=1.0 * len(corruptions) + 1.6
    )
    for i, xi in enumerate(corruptions):
        for j, wd in enumerate(weight_decays):
            cell = Rectangle((j - 0.5, i - 0.5), 1, 1, color=PHASE_COLORS[phase[(xi, wd)]])
            ax.add_patch(cell)
            ax.text(
                j,
                i,
                f"{100 * train[(xi, wd)]:.0f} / {100 * test[(xi, wd)]:.0f}",
                ha="center",
                va="center",
                fontsize=8,
            )
    ax.set_xlim(-0.5, len(weight_decays) - 0.5)
    ax.set_ylim(-0.5, len(corruptions) - 0.5)
    ax.set_xticks(range(len(weight_decays)), [f"{w:g}" for w in weight_decays])
    ax.set_yticks(range(len(corruptions)), [f"{x:g}" for x in corruptions])
    ax.set_xlabel("weight decay")
    ax.set_ylabel("corruption fraction ξ")
    ax.set_title("phase (cells: train / test accuracy, %)")
    used = [p for p in PHASES if p in set(phase.values())]
    ax.legend(
        handles=[Patch(color=PHASE_COLORS[p], label=p) for p in used],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    _save(fig, path)


def plot_ipr_histograms(path: Path, iprs: Mapping[str, np.ndarray], floor: float) -> None:
    """Per-neuron IPR histograms (neurons pooled over seeds), one panel per label."""
    fig, axes = _figure(len(iprs), width=3.0, height=2.8)
    bins = np.linspace(0.0, 1.0, 26)
    for ax, (label, values) in zip(axes, iprs.items(), strict=True):
        ax.hist(values[np.isfinite(values)], bins=bins, color="#4c6ef5")
        ax.axvline(floor, color="grey", ls=":", lw=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("per-neuron IPR")
    axes[0].set_ylabel("neurons")
    _save(fig, path)


def plot_pruning(path: Path, pruning: Mapping[str, Any], xi_wrong: float) -> None:
    """Accuracy splits (mean over seeds) against the fraction of neurons pruned, lowest-IPR
    first (left) and highest-IPR first (right)."""
    fig, axes = _figure(2)
    x = np.asarray(pruning["fractions"])
    labels = {
        "train": "train (given labels)",
        "train_clean": "uncorrupted train",
        "train_corrupted": "corrupted train (wrong label)",
        "test": "test",
    }
    for ax, direction in zip(axes, ("low", "high"), strict=True):
        for key, label in labels.items():
            y = 100 * np.nanmean(np.asarray(pruning[direction][key], dtype=float), axis=0)
            ax.plot(x, y, marker=".", label=label)
        ax.axhline(100 * (1 - xi_wrong), color="grey", ls=":", lw=1)
        ax.set_xlabel("fraction of neurons pruned")
        ax.set_title(f"pruning {direction}est IPR first")
        ax.set_ylim(-3, 103)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7)
    _save(fig, path)


def plot_regularizers(
    path: Path,
    table: Mapping[str, Mapping[str, list[float]]],
    gamma: np.ndarray,
    ipr: np.ndarray,
) -> None:
    """Left: corrupted-train and test accuracy per regulariser; right: |BatchNorm weight|
    against the neuron's IPR (pooled over seeds)."""
    fig, (ax, bx) = _figure(2)
    names = list(table)
    pos = np.arange(len(names))
    for off, key, label in ((-0.2, "train_corrupted", "corrupted train"), (0.2, "test", "test")):
        means = [100 * np.nanmean(table[n][key]) for n in names]
        stds = [100 * np.nanstd(table[n][key]) for n in names]
        ax.bar(pos + off, means, 0.4, yerr=stds, label=label)
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 120)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    bx.scatter(ipr, gamma, s=6, alpha=0.6)
    bx.set_xlabel("per-neuron IPR")
    bx.set_ylabel("|BatchNorm weight|")
    bx.set_title("BatchNorm network")
    _save(fig, path)


def plot_dynamics(
    path: Path, title: str, steps: Sequence[int], curves: Mapping[str, Mapping[str, list]]
) -> None:
    """Train (given labels), corrupted-label and test accuracy against the step, one panel
    per run label."""
    fig, axes = _figure(len(curves), width=3.6, height=3.0)
    names = {"train": "train", "train_corrupted": "corrupted train", "test": "test"}
    for ax, (label, hist) in zip(axes, curves.items(), strict=True):
        for key, name in names.items():
            ax.plot(steps, 100 * np.asarray(hist[key], dtype=float), label=name)
        ax.set_title(f"{title}, {label}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-3, 103)
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=7)
    _save(fig, path)
