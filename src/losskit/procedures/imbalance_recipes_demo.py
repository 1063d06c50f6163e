"""Demonstration of papers 15 (pseudo-labels and self-supervised pre-training for imbalanced
labels) and 41 (RSS: out-of-domain unlabeled data).

:func:`run` (the arena's demo interface) trains the arms of
:mod:`losskit.procedures.imbalance_recipes_runs` on digits-LT (``longtail:50``) with an
in-domain and a shifted unlabeled pool, and RSS on paper 41's Gaussian-mixture simulation;
it reports balanced and head / medium / tail test accuracy, mean ± std over seeds, and
verdicts by the arena's rule: 'yes' where one mean beats the other by more than the larger
standard deviation over seeds, 'no' where it loses by that much, 'tie' otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from losskit.arena.demos import DemoResult, Verdict
from losskit.procedures.imbalance_recipes_runs import (
    DIGIT_ARMS,
    GROUPS,
    DigitsSetting,
    GMMSetting,
    digits_seed,
    gmm_seed,
)

NAME = "imbalance_recipes"
TITLE = "Unlabeled data and self-supervision for imbalanced labels; RSS"
LABELS = {
    "ce": "CE",
    "pl_in": "CE + pseudo-labels (in-domain pool)",
    "pl_out": "CE + pseudo-labels (shifted pool)",
    "ssp": "SSP (rotation) + CE",
    "robust_erm": "robust ERM (RSS, lambda = 0)",
    "rss_in": "RSS (in-domain pool)",
    "rss_out": "RSS (shifted pool)",
}
POSTER = {"0.0": (0.59, 0.82), "0.5": (0.59, 0.81)}  # m = 10: ERM, RSS with n = 10,000


def _ms(values: list[float] | np.ndarray) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def _rule(a: list[float], b: list[float]) -> str:
    gap, spread = np.mean(a) - np.mean(b), max(np.std(a), np.std(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def _metric(runs: list[dict], arm: str, key: str) -> list[float]:
    return [r["scores"][arm][key] for r in runs if r["scores"][arm][key] is not None]


def _digits_table(runs: list[dict]) -> list[str]:
    rows = ["| arm | balanced accuracy | head | medium | tail |", "|---|---|---|---|---|"]
    for arm in DIGIT_ARMS:
        cells = [_ms(_metric(runs, arm, k)) for k in ("balanced", *GROUPS)]
        rows.append(f"| {LABELS[arm]} | " + " | ".join(cells) + " |")
    return rows


def _gmm_table(runs: list[dict], st: GMMSetting) -> list[str]:
    rows = ["| unlabeled pool | " + " | ".join(f"n = {n:,}" for n in st.pools) + " |"]
    rows.append("|---|" + "---|" * len(st.pools))
    erm = [r["erm"] for r in runs]
    rows.append("| none (ERM, m = 10) | " + " | ".join(_ms(erm) for _ in st.pools) + " |")
    for a in st.alphas:
        cells = [_ms([r["rss"][str(a)][i] for r in runs]) for i in range(len(st.pools))]
        rows.append(f"| RSS, shift alpha = {a:g} | " + " | ".join(cells) + " |")
    return rows


def _verdicts(digits: list[dict], gmm: list[dict], st: GMMSetting) -> list[Verdict]:
    def cmp(claim: str, arm: str, base: str, key: str, papers: str) -> Verdict:
        a, b = _metric(digits, arm, key), _metric(digits, base, key)
        return Verdict(f"[{papers}] {claim}", _rule(a, b),
                       f"digits-LT {key} accuracy: {LABELS[arm]} {_ms(a)} % vs "
                       f"{LABELS[base]} {_ms(b)} %")  # fmt: skip

    out = [
        cmp("pseudo-labels on extra in-domain data raise balanced accuracy over CE (README: "
            "CE + D_U@5x, 16.79 % error on CIFAR-10-LT, rho = 50, rho_U = 1)", "pl_in", "ce",
            "balanced", 15),
        cmp("... and raise the tail classes' accuracy", "pl_in", "ce", "tail", 15),
        cmp("self-supervised pre-training (rotation) raises balanced accuracy over CE",
            "ssp", "ce", "balanced", 15),
        cmp("... and raises the tail classes' accuracy", "ssp", "ce", "tail", 15),
        cmp("RSS with shifted unlabeled data beats training on the labels alone",
            "rss_out", "robust_erm", "balanced", 41),
        cmp("RSS with in-domain unlabeled data (semi-supervised case) beats the labels alone",
            "rss_in", "robust_erm", "balanced", 41),
    ]  # fmt: skip
    erm = [r["erm"] for r in gmm]
    for a in st.alphas:
        rss = [r["rss"][str(a)][-1] for r in gmm]
        base, paper = POSTER.get(str(a), (None, None))
        ref = f"; poster: {base} -> {paper}" if paper else ""
        out.append(Verdict(
            f"[41] Gaussian mixture, shift alpha = {a:g}: {st.pools[-1]:,} unlabeled points "
            "improve the linear classifier learned from 10 labels", _rule(rss, erm),
            f"accuracy {_ms(erm)} % (ERM) -> {_ms(rss)} % (RSS){ref}"))  # fmt: skip
    return out


def _plot(digits: list[dict], gmm: list[dict], st: GMMSetting, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    keys = ("balanced", *GROUPS)
    width = 0.8 / len(DIGIT_ARMS)
    for i, arm in enumerate(DIGIT_ARMS):
        m = [100 * np.mean(_metric(digits, arm, k)) for k in keys]
        s = [100 * np.std(_metric(digits, arm, k)) for k in keys]
        ax.bar(np.arange(len(keys)) + (i - len(DIGIT_ARMS) / 2 + 0.5) * width, m, width,
               yerr=s, label=LABELS[arm], capsize=2)  # fmt: skip
    ax.set(xticks=range(len(keys)), xticklabels=keys, ylabel="test accuracy (%)",
           title="digits-LT (rho = 50), MLP")  # fmt: skip
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    erm = 100 * np.mean([r["erm"] for r in gmm])
    bx.axhline(erm, color="gray", ls="--", label="ERM (10 labels)")
    for a in st.alphas:
        acc = np.array([r["rss"][str(a)] for r in gmm]) * 100
        bx.errorbar(st.pools, acc.mean(0), acc.std(0), marker="o", capsize=3,
                    label=f"RSS, alpha = {a:g}")  # fmt: skip
    bx.set(xscale="log", xlabel="unlabeled points n", ylabel="test accuracy (%)",
           title="Gaussian mixture, d = 200, m = 10")  # fmt: skip
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Digits-LT arms and the Gaussian-mixture RSS curves; see the module docstring."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from losskit.arena.datasets import load_dataset

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("digits", data_dir, progress=False)
    dst = DigitsSetting(epochs=4, steps=2) if quick else DigitsSetting()
    gst = GMMSetting(pools=(100, 1000), n_test=500, epochs=8) if quick else GMMSetting()
    digits: list[dict[str, Any]] = []
    gmm: list[dict[str, Any]] = []
    with threadpool_limits(1), torch.random.fork_rng():
        for seed in tqdm(range(seeds), desc="digits-LT seeds", unit="seed"):
            digits.append(digits_seed(ds, seed, dst))
        for seed in tqdm(range(seeds), desc="Gaussian-mixture seeds", unit="seed"):
            gmm.append(gmm_seed(seed, gst))
    plot = f"{NAME}_plot.png"
    _plot(digits, gmm, gst, out_dir / plot)
    sizes = digits[0]["sizes"]
    pl = {k: [r["pseudo_label_accuracy"][k] for r in digits] for k in ("in", "out")}
    groups = digits[0]["groups"]
    md = [
        f"Digits-LT: {sizes['labelled']} labelled training digits (`longtail:{dst.rho:g}` of "
        f"one stratified half; per-class counts {digits[0]['counts']}), an unlabeled pool of "
        f"{sizes['pool']} digits (the other half, balanced) and the same pool shifted "
        f"(rotation U[-{dst.max_angle:g}, {dst.max_angle:g}] degrees + pixel noise "
        f"N(0, {dst.noise:g}^2)); {sizes['test']} test digits. Arena MLP (256-256), Adam "
        f"lr 1e-3, batch {dst.batch_size}, {dst.epochs} epochs per stage. Groups by labelled "
        f"count: head {groups['head']}, medium {groups['medium']}, tail {groups['tail']}. "
        f"{seeds} seed(s), mean ± std in %. The CE model labels the in-domain pool with "
        f"accuracy {_ms(pl['in'])} % and the shifted pool with {_ms(pl['out'])} % (the "
        f"shift's cost). RSS: lambda = {dst.lam:g}, gamma = gamma' = {dst.gamma:g}, "
        f"{dst.steps} ascent steps, unlabeled term from epoch {dst.epochs // 2}.",
        "",
        *_digits_table(digits),
        "",
        f"Gaussian mixture (paper 41's simulation): d = {gst.dim}, m = {gst.labelled} "
        f"labels, {gst.n_test:,} test points, linear model with cross-entropy (the poster "
        f"uses a ramp loss), non-robust RSS (gamma = inf), lambda = {gst.lam:g}, weight "
        f"decay {gst.weight_decay:g}, {gst.epochs} full-batch Adam steps (lr {gst.lr:g}); "
        "test accuracy in %:",
        "",
        *_gmm_table(gmm, gst),
        "",
        f"![digits-LT and Gaussian mixture]({plot})",
        "",
        "Notes: the recipes run at CPU scale (an MLP on 8x8 digits instead of ResNet-32 on "
        "CIFAR-10, a pool 3.7x the labelled set instead of 5x, no augmentation); the "
        "hyperparameters of RSS were fixed on development draws, not tuned on the test set "
        "as the authors' notebook does. A 'tie' is a difference within seed noise.",
    ]
    return DemoResult(
        name=NAME,
        title=TITLE,
        papers=(15, 41),
        markdown="\n".join(md),
        verdicts=_verdicts(digits, gmm, gst),
        data={"digits": digits, "gmm": gmm, "seeds": seeds, "quick": quick},
        seconds=time.perf_counter() - start,
    )
