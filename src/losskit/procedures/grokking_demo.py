"""Demonstration of paper 55 (Doshi, Das, He, Gromov, "To grok or not to grok"): grokking,
memorisation and inversion on corrupted modular addition.

:func:`run` trains the paper's two-layer quadratic MLP (:mod:`losskit.procedures.modular_mlp`)
on corrupted modular addition (:func:`losskit.labels.modular.modular_dataset`) over a grid of
corruption fractions and weight decays, classifies each run into the paper's phases
(:func:`losskit.diagnostics.grokking.classify_phase`), and at one corruption level shows the
per-neuron IPR histograms, IPR-ordered pruning, and dropout / BatchNorm against no
regularisation. The data are algorithmic (built, not loaded): ``data_dir`` is not used.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from losskit.arena.demos import DemoResult
from losskit.diagnostics.grokking import classify_phase
from losskit.labels.modular import ModularDataset, modular_dataset
from losskit.procedures.grokking_plots import (
    plot_dynamics,
    plot_ipr_histograms,
    plot_phases,
    plot_pruning,
    plot_regularizers,
)
from losskit.procedures.grokking_report import INVERSION, KEYS, markdown, verdicts
from losskit.procedures.modular_mlp import GrokkingRun, pruning_curve, train_modular_mlp

NAME = "grokking"


@dataclass(frozen=True)
class Setting:
    """Sizes of one demo run. ``focus_xi``: the corruption of the IPR-histogram, dynamics
    and regulariser experiments; ``prune_xi``, ``prune_wd``: the grid cell whose networks
    are pruned; dropout and BatchNorm runs have no weight decay."""

    p: int
    train_fraction: float
    width: int
    steps: int
    corruptions: tuple[float, ...]
    weight_decays: tuple[float, ...]
    focus_xi: float
    prune_xi: float
    prune_wd: float
    dropout: float
    bn_batch: int
    bn_lr: float
    bn_steps: int
    prune_fractions: tuple[float, ...]


FULL = Setting(
    p=31,
    train_fraction=0.8,
    width=128,
    steps=1000,
    corruptions=(0.2, 0.35, 0.5),
    weight_decays=(0.0, 5.0, 7.5, 10.0, 15.0),
    focus_xi=0.35,
    prune_xi=0.2,
    prune_wd=0.0,
    dropout=0.5,
    bn_batch=64,
    bn_lr=5e-3,
    bn_steps=2000,
    prune_fractions=tuple(round(0.05 * i, 2) for i in range(19)),
)
QUICK = Setting(
    p=11,
    train_fraction=0.8,
    width=24,
    steps=60,
    corruptions=(0.35,),
    weight_decays=(0.0, 5.0),
    focus_xi=0.35,
    prune_xi=0.35,
    prune_wd=0.0,
    dropout=0.5,
    bn_batch=16,
    bn_lr=5e-3,
    bn_steps=60,
    prune_fractions=(0.0, 0.25, 0.5),
)


def _train_all(s: Setting, seeds: int) -> dict[str, Any]:
    """Every training run of the demo, as lists over seeds; ``seed`` fixes the split, the
    corruption and the initialisation of each run."""
    from tqdm.auto import tqdm

    total = seeds * (len(s.corruptions) * len(s.weight_decays) + 3)
    bar = tqdm(total=total, desc=NAME, unit="run", file=sys.stderr)
    grid: dict[tuple[float, float], list[GrokkingRun]] = {}
    regs: dict[str, list[GrokkingRun]] = {"dropout": [], "minibatch": [], "batch norm": []}
    datasets: dict[float, list[ModularDataset]] = {xi: [] for xi in s.corruptions}
    kw = {"width": s.width, "log_every": max(1, s.steps // 20)}
    for seed in range(seeds):
        for xi in s.corruptions:
            data = modular_dataset(s.p, train_fraction=s.train_fraction, corruption=xi, seed=seed)
            datasets[xi].append(data)
            for wd in s.weight_decays:
                run = train_modular_mlp(data, weight_decay=wd, steps=s.steps, seed=seed, **kw)
                grid.setdefault((xi, wd), []).append(run)
                bar.update()
        data = datasets[s.focus_xi][seed]
        regs["dropout"].append(
            train_modular_mlp(data, dropout=s.dropout, steps=s.steps, seed=seed, **kw)
        )
        bar.update()
        bn_kw = {"batch_size": s.bn_batch, "lr": s.bn_lr, "steps": s.bn_steps, "seed": seed}
        for name, norm in (("minibatch", False), ("batch norm", True)):
            regs[name].append(train_modular_mlp(data, batch_norm=norm, **bn_kw, **kw))
            bar.update()
    bar.close()
    return {"grid": grid, "regs": regs, "datasets": datasets}


def _pruning(s: Setting, runs: list[GrokkingRun], datasets: list) -> dict[str, Any]:
    """Accuracy splits after pruning the lowest- / highest-IPR neurons first, per seed."""
    counts = [int(round(f * s.width)) for f in s.prune_fractions]
    out: dict[str, Any] = {"fractions": list(s.prune_fractions)}
    for direction, sign in (("low", 1.0), ("high", -1.0)):
        curves = [
            pruning_curve(r.model, d, np.argsort(sign * r.ipr), counts)
            for r, d in zip(runs, datasets, strict=True)
        ]
        out[direction] = {k: [c[k] for c in curves] for k in KEYS}
    return out


def _majority(phases: list[str]) -> tuple[str, int]:
    (phase, count), *_ = Counter(phases).most_common(1)
    return phase, count


def _summary(runs: list[GrokkingRun], xi: float) -> dict[str, Any]:
    """Final accuracies and mean IPR as lists over seeds, with the majority phase."""
    phases = [classify_phase(r.final["train"], r.final["test"], xi) for r in runs]
    (phase, count), *_ = Counter(phases).most_common(1)
    out: dict[str, Any] = {k: [r.final[k] for r in runs] for k in KEYS}
    out.update(ipr=[float(np.nanmean(r.ipr)) for r in runs], phase=phase, phase_count=count)
    return out


def _summaries(s: Setting, raw: dict[str, Any]) -> dict[str, Any]:
    """Per-cell and per-regulariser summaries, pruning curves, BatchNorm correlations and
    the two-stage check."""
    cells = {(xi, wd): _summary(runs, xi) for (xi, wd), runs in raw["grid"].items()}
    regs = {name: _summary(runs, s.focus_xi) for name, runs in raw["regs"].items()}
    regs["batch norm"]["spearman"] = [
        float(spearmanr(r.model.norm.weight.detach().abs().numpy(), r.ipr, nan_policy="omit")[0])
        for r in raw["regs"]["batch norm"]
    ]
    pruned = raw["grid"][(s.prune_xi, s.prune_wd)]
    prune = _pruning(s, pruned, raw["datasets"][s.prune_xi])
    train = np.nanmean(np.asarray(prune["low"]["train"], dtype=float), axis=0)
    keep = np.flatnonzero(train >= 1 - s.prune_xi * (1 - 1 / s.p))
    prune["stop"] = int(keep.max()) if keep.size else 0
    two = {}
    for wd in s.weight_decays:
        for seed, r in enumerate(raw["grid"][(s.focus_xi, wd)]):
            if classify_phase(r.final["train"], r.final["test"], s.focus_xi) in INVERSION:
                peak = max(r.history["train"])
                two[f"wd={wd:g},seed={seed}"] = peak >= 0.9 and r.final["train"] <= peak - 0.1
    return {"cells": cells, "regs": regs, "pruning": prune, "two_stage": two}


def _plots(out_dir: Path, s: Setting, raw: dict[str, Any], out: dict[str, Any]) -> None:
    cells, regs = out["cells"], out["regs"]
    keys = list(cells)
    plot_phases(
        out_dir / f"{NAME}_phases.png",
        s.corruptions,
        s.weight_decays,
        {k: cells[k]["phase"] for k in keys},
        {k: float(np.mean(cells[k]["test"])) for k in keys},
        {k: float(np.mean(cells[k]["train"])) for k in keys},
    )
    focus = {wd: raw["grid"][(s.focus_xi, wd)] for wd in s.weight_decays}
    hist = {
        f"wd={wd:g}: {cells[(s.focus_xi, wd)]['phase']}": np.concatenate([r.ipr for r in runs])
        for wd, runs in focus.items()
    }
    bn = raw["regs"]["batch norm"]
    hist[f"BatchNorm: {regs['batch norm']['phase']}"] = np.concatenate([r.ipr for r in bn])
    plot_ipr_histograms(out_dir / f"{NAME}_ipr.png", hist, (s.p // 2 + 1) ** -1.0)
    plot_pruning(out_dir / f"{NAME}_pruning.png", out["pruning"], s.prune_xi * (1 - 1 / s.p))
    table = {
        "none": cells[(s.focus_xi, 0.0)],
        "dropout": regs["dropout"],
        "minibatch": regs["minibatch"],
        "+ BatchNorm": regs["batch norm"],
    }
    plot_regularizers(
        out_dir / f"{NAME}_regularizers.png",
        table,
        np.concatenate([r.model.norm.weight.detach().abs().numpy() for r in bn]),
        np.concatenate([r.ipr for r in bn]),
    )
    first = {f"wd={wd:g}": runs[0] for wd, runs in focus.items()}
    plot_dynamics(
        out_dir / f"{NAME}_dynamics.png",
        f"xi={s.focus_xi:g}, seed 0",
        next(iter(first.values())).steps,
        {k: r.history for k, r in first.items()},
    )


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Paper 55 on corrupted modular addition: phase diagram over (corruption, weight
    decay), IPR histograms, IPR-ordered pruning, dropout and BatchNorm; plots into
    ``out_dir``. ``data_dir`` is unused (the data are built, not loaded)."""
    import time

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    s = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        raw = _train_all(s, seeds)
        out = _summaries(s, raw)
        _plots(out_dir, s, raw, out)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    out["name"] = NAME
    text = markdown(s, seeds, out, time.perf_counter() - start)
    data = {
        "setting": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(s).items()},
        "cells": {f"xi={xi:g},wd={wd:g}": v for (xi, wd), v in out["cells"].items()},
        "regularizers": out["regs"],
        "pruning": out["pruning"],
        "two_stage": out["two_stage"],
    }
    return DemoResult(
        name=NAME,
        title="To grok or not to grok: memorisation and inversion on corrupted modular addition",
        papers=(55,),
        markdown=text,
        verdicts=verdicts(s, out),
        data=data,
    )
