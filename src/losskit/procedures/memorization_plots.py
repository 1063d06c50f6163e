"""The figure of the memorization demonstration (:mod:`losskit.procedures.memorization_demo`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from losskit.procedures.memorization_demo import TAIL
from losskit.procedures.memorization_report import Results, removal_accuracy


def plot(res: Results, path: Path) -> None:
    """Four panels: the distribution of the pooled scores (and of the flipped labels'
    scores), class-mean score against class size, test accuracy after removal (top-mem vs
    random, tail and head classes, mean ± std over seeds), and the ridge sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, p = res.data, res.pooled
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    bins = np.linspace(-0.2, 1.0, 25)
    score = p["score"][~np.isnan(p["score"])]
    flipped = np.concatenate([s["flipped_scores"] for s in res.noisy])
    ax[0, 0].hist(score, bins=bins, density=True, alpha=0.6, label="clean labels (pooled)")
    ax[0, 0].hist(flipped, bins=bins, density=True, alpha=0.6, label="flipped labels")
    ax[0, 0].set(xlabel="memorization score", ylabel="density", title="score distribution")
    ax[0, 0].legend(fontsize=8)
    counts, means = d.counts, p["class_means"]
    ax[0, 1].scatter(counts, means, s=14, c=np.where(counts < TAIL, "C3", "C0"))
    ax[0, 1].axvline(TAIL, color="0.5", lw=0.8, ls=":")
    ax[0, 1].set(
        xscale="log",
        xlabel="training questions of the class",
        ylabel="class-mean memorization",
        title=f"memorization against class size (red: < {TAIL})",
    )
    frac = 100 * np.asarray(res.sizes.removal)
    for key, style in (("tail", "-"), ("head", "--")):
        for arm, color in (("top", "C3"), ("random", "C0")):
            acc = 100 * removal_accuracy(res, arm, key)
            ax[1, 0].errorbar(
                frac,
                acc.mean(0),
                yerr=acc.std(0),
                color=color,
                ls=style,
                capsize=3,
                label=f"{key}, {'top mem' if arm == 'top' else 'random'} removed",
            )
    ax[1, 0].set(
        xlabel="training questions removed (%)",
        ylabel="test accuracy (%)",
        title="removal: most memorized vs random",
    )
    ax[1, 0].legend(fontsize=8)
    lams = res.sizes.lambdas
    for key, label in (("train", "training"), ("all", "test"), ("tail", "test, tail")):
        ax[1, 1].plot(lams, [100 * s[key] for s in res.sweep], marker="o", label=label)
    ax[1, 1].set(
        xscale="log",
        xlabel="ridge lam",
        ylabel="accuracy (%)",
        title="fitting the training set or not",
    )
    ax[1, 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
