"""Label quantity vs quality on TREC-6 (paper 54): accuracy per budget split and the Pareto
frontier.

Per seed, a logistic head trained on 30 random gold-labelled training questions (MiniLM
embeddings) is the weak labeller; its predictions on the other training questions are the
weak labels (cost 1 each), their gold labels the strong ones (cost 10 each). For each budget
and each fraction of it spent on strong labels (:func:`~losskit.procedures.label_budget.
budget_grid`), a logistic head is trained sequentially, weak labels first, then strong ones
(:func:`~losskit.procedures.label_budget.split_train`), and scored on the TREC-6 test split.
The Pareto frontier (:func:`~losskit.procedures.label_budget.pareto_frontier`) is taken over
the mean accuracies of all (budget, split) cells against the cost actually spent.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from losskit.arena.demos import DemoResult, Verdict
from losskit.procedures.label_budget import (
    accuracy,
    budget_grid,
    fit_head,
    make_head,
    pareto_frontier,
    split_train,
)

NAME = "label_budget"
TITLE = "Label quantity vs quality under a budget on TREC-6 (paper 54)"
WEAK_COST, STRONG_COST, N_WEAK_MODEL, STEPS, LR = 1.0, 10.0, 30, 200, 5e-2
FULL = {"budgets": (50, 200, 800, 3200), "fractions": (0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0)}
QUICK = {"budgets": (100, 800), "fractions": (0.0, 0.5, 1.0)}


def _ms(values) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def _rule(a, b) -> str:
    """'yes' where mean(a) beats mean(b) by more than the larger std, 'no' where it loses by
    that much, 'tie' otherwise."""
    gap, spread = np.mean(a) - np.mean(b), max(np.std(a), np.std(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def _load(data_dir: str | None):
    from losskit.arena.datasets import load_dataset, missing_files

    missing = [str(p) for p in missing_files("trec6", data_dir)]
    if missing:
        raise ValueError(f"{NAME} needs missing data files: {', '.join(missing)}")
    return load_dataset("trec6", data_dir, progress=True)


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for b, cells in res["cells"].items():
        f = [c["fraction"] for c in cells]
        ax[0].errorbar(
            f,
            [np.mean(c["acc"]) for c in cells],
            [np.std(c["acc"]) for c in cells],
            marker="o",
            capsize=3,
            label=f"B = {b}",
        )
    ax[0].set(
        xlabel="fraction of budget on strong labels",
        ylabel="test accuracy",
        title="accuracy per split",
    )
    ax[0].legend(fontsize=8)
    pts = res["points"]
    cost = np.array([p["cost"] for p in pts])
    acc = np.array([p["mean"] for p in pts])
    ax[1].scatter(cost, acc, c=[p["fraction"] for p in pts], cmap="viridis", s=25)
    front = res["frontier"]
    ax[1].step(cost[front], acc[front], where="post", color="k", label="Pareto frontier")
    ax[1].set(
        xscale="log",
        xlabel="cost spent",
        ylabel="mean test accuracy",
        title="cost vs accuracy (colour: strong fraction)",
    )
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdicts(res: dict) -> list[Verdict]:
    budgets = list(res["cells"])
    pure = {b: (res["cells"][b][0]["acc"], res["cells"][b][-1]["acc"]) for b in budgets}
    lo, hi = budgets[0], budgets[-1]
    out = [
        Verdict(
            "Quantity-dominant regime: at the smallest budget, all-weak beats all-strong",
            _rule(*pure[lo]),
            f"B = {lo}: all weak {_ms(pure[lo][0])} vs all strong {_ms(pure[lo][1])} %",
        ),
        Verdict(
            "Quality-dominant regime: at the largest budget, all-strong beats all-weak",
            _rule(pure[hi][1], pure[hi][0]),
            f"B = {hi}: all strong {_ms(pure[hi][1])} vs all weak {_ms(pure[hi][0])} %",
        ),
    ]
    found, evidence = [], []
    for b in budgets:
        mixed = [c for c in res["cells"][b] if c["n_weak"] > 0 and c["n_strong"] > 0]
        if not mixed:
            continue
        best = max(mixed, key=lambda c: np.mean(c["acc"]))
        edge = max(pure[b], key=np.mean)
        found.append(_rule(best["acc"], edge))
        evidence.append(
            f"B = {b}: best mixed (f = {best['fraction']}) {_ms(best['acc'])} vs best pure "
            f"{_ms(edge)} % ({found[-1]})"
        )
    verdict = "yes" if "yes" in found else "tie" if "tie" in found else "no"
    out.append(
        Verdict(
            "Mixed regime: at some budget a mixed split beats both all-weak and all-strong",
            verdict,
            "; ".join(evidence),
        )
    )
    return out


def _markdown(res: dict, seeds: int, quick: bool, plot_name: str) -> str:
    lines = [
        f"Setting: TREC-6 (MiniLM embeddings), {res['n_pool']} pool questions, "
        f"{res['n_test']} test questions; weak labeller = logistic head on {N_WEAK_MODEL} "
        f"gold questions, accuracy {_ms(res['weak_acc'])} % on the pool; costs c_w = "
        f"{WEAK_COST:g}, c_s = {STRONG_COST:g}; student = logistic head, full-batch Adam "
        f"(lr {LR:g}, wd 1e-4, {res['steps']} steps per stage), weak stage then strong stage; "
        f"{seeds} seed(s){' (quick grid)' if quick else ''}; test accuracy mean ± std in %.",
        "",
        "| budget | " + " | ".join(f"f = {f}" for f in res["fractions"]) + " |",
        "|---|" + "---|" * len(res["fractions"]),
    ]
    for b, cells in res["cells"].items():
        row = [f"{_ms(c['acc'])} ({c['n_weak']} w / {c['n_strong']} s)" for c in cells]
        lines.append(f"| {b} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Pareto frontier (cost spent, mean accuracy):",
        "",
        "| cost | budget | f | n_weak | n_strong | accuracy % |",
        "|---|---|---|---|---|---|",
    ]
    for i in res["frontier"]:
        p = res["points"][i]
        lines.append(
            f"| {p['cost']:g} | {p['budget']} | {p['fraction']} | {p['n_weak']} | "
            f"{p['n_strong']} | {100 * p['mean']:.1f} |"
        )
    lines += [
        "",
        f"![Label budget on TREC-6]({plot_name})",
        "",
        "Not reproduced: the paper's few-shot prompt (a logistic head has no context for "
        "demonstrations) and its language-model fine-tuning (a head on fixed embeddings here). "
        "Each stage runs a fixed number of steps without the paper's optional early "
        "stopping, so a strong stage of a few labels can overwrite the weak stage.",
    ]
    return "\n".join(lines)


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Accuracy per budget split and the Pareto frontier on TREC-6; see the module docstring."""
    from tqdm.auto import tqdm

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    start = time.perf_counter()
    grid = QUICK if quick else FULL
    steps = STEPS
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = _load(data_dir)
    c = ds.num_classes
    splits = {b: budget_grid(b, WEAK_COST, STRONG_COST, grid["fractions"]) for b in grid["budgets"]}
    accs = {b: [[] for _ in grid["fractions"]] for b in grid["budgets"]}
    weak_acc = []
    with tqdm(total=seeds * sum(map(len, splits.values())), desc=NAME, unit="fit") as bar:
        for seed in range(seeds):
            perm = np.random.default_rng(10_000 + seed).permutation(len(ds.y_train))
            gold, pool = perm[:N_WEAK_MODEL], perm[N_WEAK_MODEL:]
            weak = make_head(ds.x_train.shape[1], c, seed=10_000 + seed)
            fit_head(weak, ds.x_train[gold], ds.y_train[gold], steps=steps, lr=LR)
            x_pool, y_pool = ds.x_train[pool], ds.y_train[pool]
            with torch.no_grad():
                y_weak = weak(torch.as_tensor(x_pool)).argmax(1).numpy()
            weak_acc.append(accuracy(weak, x_pool, y_pool))
            for b, split in splits.items():
                for k, (n_weak, n_strong) in enumerate(split):
                    accs[b][k].append(
                        split_train(
                            x_pool,
                            y_pool,
                            y_weak,
                            n_weak,
                            n_strong,
                            ds.x_test,
                            ds.y_test,
                            num_classes=c,
                            seed=seed,
                            steps=steps,
                            lr=LR,
                        )
                    )
                    bar.update()
    cells = {
        b: [
            {"fraction": f, "n_weak": w, "n_strong": s, "acc": accs[b][k]}
            for k, (f, (w, s)) in enumerate(zip(grid["fractions"], splits[b], strict=True))
        ]
        for b in grid["budgets"]
    }
    points = [
        {
            "budget": b,
            "fraction": cl["fraction"],
            "n_weak": cl["n_weak"],
            "n_strong": cl["n_strong"],
            "cost": cl["n_weak"] * WEAK_COST + cl["n_strong"] * STRONG_COST,
            "mean": float(np.mean(cl["acc"])),
        }
        for b in grid["budgets"]
        for cl in cells[b]
    ]
    front = pareto_frontier([p["cost"] for p in points], [p["mean"] for p in points])
    res = {
        "cells": cells,
        "points": points,
        "frontier": front.tolist(),
        "weak_acc": weak_acc,
        "fractions": list(grid["fractions"]),
        "n_pool": int(len(ds.y_train) - N_WEAK_MODEL),
        "n_test": int(len(ds.y_test)),
        "steps": steps,
    }
    plot_name = f"{NAME}_plot.png"
    _plot(res, out_dir / plot_name)
    data = {**res, "cells": {str(b): v for b, v in cells.items()}}
    return DemoResult(
        NAME,
        TITLE,
        (54,),
        _markdown(res, seeds, quick, plot_name),
        _verdicts(res),
        data,
        time.perf_counter() - start,
    )
