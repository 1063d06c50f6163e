"""Plots of the large-step GD demonstration (paper 36): iterations and losses against the
step size (log-log), and LR+GD's loss and training-error trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FLOOR = 1e-30  # losses below are drawn at this value
METHODS = (("gd", "LR+GD", "-"), ("normalized_gd", "Normalized LR+GD", ":"))


def _figure(ncols: int, width: float = 5.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.8), squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    return plt, fig, axes[0]


def _mean(values: list[list[Any]], cap: float) -> np.ndarray:
    """Mean over seeds (rows) per step size; ``None`` (past the budget) counts as ``cap``."""
    return np.array([[cap if v is None else v for v in row] for row in values], float).mean(0)


def plot_iterations(path: Path, results: dict[str, Any], gammas: list[float], sets: list[str]):
    """One panel per method; a colour per dataset; dashed: the perceptron limit."""
    plt, fig, axes = _figure(2)
    for ax, (m, label, _) in zip(axes, METHODS, strict=True):
        for c, key in enumerate(sets):
            seeds, colour = results[key], f"C{c}"
            cap = seeds[0]["max_iter"]
            ax.plot(
                gammas,
                _mean([s[m]["iterations"] for s in seeds], cap),
                "o-",
                color=colour,
                label=key,
            )
            limit = np.mean([s[m]["limit_iterations"] or cap for s in seeds])
            ax.axhline(limit, color=colour, ls="--", lw=1)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="step size gamma",
            title=f"{label} (dashed: its gamma -> inf limit)",
        )
    axes[0].set_ylabel("iterations to separate (mean over seeds)")
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(path: Path, results: dict[str, Any], gammas: list[float], sets: list[str]):
    """Left: loss at the probe iteration on separable sets (seeds that have one); right:
    final loss minus f* on the others. Solid LR+GD, dotted Normalized LR+GD, dashed the
    Batch Perceptron's ``gamma theta_t``."""
    plt, fig, axes = _figure(2)
    for c, key in enumerate(sets):
        colour = f"C{c}"
        seeds = [s for s in results[key] if s["t_probe"] is not None or not s["separable"]]
        if not seeds:
            continue
        ax, what = (axes[0], "loss_probe") if seeds[0]["separable"] else (axes[1], "loss_final")
        fstar = np.array([[s["f_star"]] for s in seeds])
        for m, label, style in METHODS:
            y = (np.array([s[m][what] for s in seeds], float) - fstar).mean(0)
            ax.plot(
                gammas,
                np.maximum(y, FLOOR),
                style,
                marker="o",
                color=colour,
                label=f"{key}, {label}",
            )
        y = (np.array([s["gd"]["limit_" + what] for s in seeds], float) - fstar).mean(0)
        ax.plot(gammas, np.maximum(y, FLOOR), "--", color=colour, lw=1)
    axes[0].set(title="separable: f(w_tp) before any run separates", ylabel="logistic loss")
    axes[1].set(title="not separable: f(w_T) - f* after the budget")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="step size gamma")
        ax.legend(fontsize=6)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_trajectories(path: Path, trajectories: dict[str, Any], title: str):
    plt, fig, (ax1, ax2) = _figure(2)
    for g, (losses, errors) in trajectories.items():
        ax1.plot(np.maximum(losses, FLOOR), lw=1, label=f"gamma = {g}")
        ax2.plot(errors, lw=1)
    top = max(float(np.max(losses)) for losses, _ in trajectories.values())
    ax1.set(yscale="log", ylim=(1e-4, 3 * top), xlabel="iteration", title=title)
    ax1.set_ylabel("logistic loss f(w_t) (runs end at separation)")
    ax2.set(xlabel="iteration", ylabel="training error", title="LR+GD, same runs")
    ax1.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
