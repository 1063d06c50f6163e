"""Figures of the paper-22 demonstration (:mod:`losskit.procedures.intrinsic_demo`), written
as PNG files; matplotlib runs headless (Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(ncols: int, width: float = 4.2, height: float = 3.4):
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


def scaling_plot(path: Path, scaling: dict[str, dict], d_data: dict[str, float]) -> None:
    """Log-log test loss against training-set size (mean ± std over seeds), the fitted power
    law, and a line of the bound's slope ``-1/d_data`` through the first point."""
    fig, axes = _figure(len(scaling))
    for ax, (name, s) in zip(axes, scaling.items(), strict=True):
        n = np.asarray(s["n"], dtype=float)
        loss = np.asarray(s["loss"])  # [seeds, sizes]
        ax.errorbar(n, loss.mean(0), yerr=loss.std(0), marker="o", capsize=3, label="test loss")
        slope, icept = np.polyfit(np.log(n), np.log(loss.mean(0)), 1)
        ax.plot(n, np.exp(icept) * n**slope, "k:", label=f"fit, slope {slope:.2f}")
        bound = -1.0 / d_data[name]
        ax.plot(n, loss.mean(0)[0] * (n / n[0]) ** bound, "r--", label=f"slope -1/d = {bound:.2f}")
        ax.set(xscale="log", yscale="log", xlabel="training images N", title=name)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test cross-entropy")
    _save(fig, path)


def robustness_plot(path: Path, pairs: dict[str, list[dict]], eps: dict[str, float]) -> None:
    """PGD and FGSM accuracy against ``K_F`` per class-pair task (mean ± std over seeds)."""
    fig, axes = _figure(len(pairs))
    for ax, (name, rows) in zip(axes, pairs.items(), strict=True):
        kf = np.array([r["kf"] for r in rows])  # [pairs, seeds]
        for key, marker in (("pgd", "o"), ("fgsm", "s")):
            acc = np.array([r[key] for r in rows])
            ax.errorbar(
                kf.mean(1),
                acc.mean(1),
                xerr=kf.std(1),
                yerr=acc.std(1),
                fmt=marker,
                capsize=2,
                label=key.upper(),
                mfc="none" if key == "fgsm" else None,
            )
        for r, x, y in zip(
            rows, kf.mean(1), np.array([r["pgd"] for r in rows]).mean(1), strict=True
        ):
            ax.annotate(r["pair"], (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set(
            xlabel="label sharpness K_F",
            ylabel=f"accuracy under attack, eps = {eps[name]:.3g}",
            title=f"{name} class pairs",
        )
        ax.legend(fontsize=7)
    _save(fig, path)


def dims_plot(path: Path, dims: dict[str, dict[str, list[float]]]) -> None:
    """Grouped bars: ``d_data`` and ``d_repr`` (MLE and TwoNN) per dataset, mean ± std."""
    fig, axes = _figure(1, width=6.0)
    ax = axes[0]
    keys = ("d_data MLE", "d_repr MLE", "d_data TwoNN", "d_repr TwoNN")
    names = list(dims)
    for i, key in enumerate(keys):
        vals = np.array([dims[n][key] for n in names])
        ax.bar(
            np.arange(len(names)) + (i - 1.5) * 0.2,
            vals.mean(1),
            0.2,
            yerr=vals.std(1),
            capsize=2,
            label=key,
        )
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("intrinsic dimension")
    ax.legend(fontsize=7)
    _save(fig, path)
