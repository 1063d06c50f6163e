"""Demonstration of paper 36 (Tyurin, 2024): logistic-regression GD with large step sizes, its
Batch-Perceptron limit and Normalized LR+GD, on synthetic data and on sklearn digits.

``run(out_dir, seeds=..., quick=..., data_dir=...)`` is the arena's demo interface
(:mod:`losskit.arena.demos`); the runs are in :mod:`losskit.procedures.large_step_gd_runs`,
the figures in :mod:`losskit.procedures.large_step_gd_plots`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from losskit.arena.demos import DemoResult
from losskit.diagnostics.large_step_data import worst_case_dataset
from losskit.diagnostics.large_step_gd import run_large_step_gd
from losskit.procedures.large_step_gd_plots import (
    plot_iterations,
    plot_losses,
    plot_trajectories,
)
from losskit.procedures.large_step_gd_report import NONSEPARABLE, SEPARABLE, report
from losskit.procedures.large_step_gd_runs import datasets, digits_features, probe
from losskit.procedures.large_step_gd_verdicts import verdicts

NAME = "large_step_gd"


def _worst_case(quick: bool, gammas: list[float]) -> dict[str, Any]:
    sizes = [250, 500, 1000]
    rows: dict[str, Any] = {"sizes": sizes, "perceptron": [], "normalized_perceptron": []}
    for n in sizes:
        a, y = worst_case_dataset(n)
        for key, method in (
            ("perceptron", "batch_perceptron"),
            ("normalized_perceptron", "normalized_batch_perceptron"),
        ):
            rows[key].append(run_large_step_gd(a, y, method=method, max_iter=10 * n).iterations)
    a, y = worst_case_dataset(sizes[-1])
    steps = sorted({*gammas, 0.1, 1.0, 10.0, 100.0})
    budget = 2_000 if quick else 5_000
    rows["steps"] = steps
    for m in ("gd", "normalized_gd"):
        rows[m] = [
            run_large_step_gd(a, y, method=m, gamma=g, max_iter=budget).iterations for g in steps
        ]
    rows["budget"] = budget
    return rows


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Iterations to separate and logistic losses against the step size for LR+GD,
    Normalized LR+GD and their perceptron limits, on 3 separable and 2 non-separable sets."""
    start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gammas = [0.1, 10.0, 1e4] if quick else [float(10.0**k) for k in range(-2, 7)]
    budget = {True: 1_000 if quick else 10_000, False: 150 if quick else 2_000}
    agree_iter = 50 if quick else 100
    agree_gammas = [*gammas[::2], 1e8, 1e10, 1e12]
    from threadpoolctl import threadpool_limits

    digits = digits_features(data_dir)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in SEPARABLE + NONSEPARABLE}
    jobs = [(s, k) for s in range(seeds) for k in results]
    trajectories = None
    current: tuple[int, dict] = (-1, {})
    with threadpool_limits(1):  # BLAS threads thrash on busy cores; one is faster here
        for seed, key in tqdm(jobs, desc=NAME, file=sys.stderr, disable=quick):
            if current[0] != seed:
                current = (seed, datasets(seed, quick, digits))
            a, y = current[1][key]
            keep = 250 if (seed == 0 and key == "digits_3v8") else 0
            res = probe(
                a,
                y,
                gammas,
                budget[key in SEPARABLE],
                agree_gammas=agree_gammas,
                agree_iter=agree_iter,
                trajectory_len=keep,
            )
            res["max_iter"] = budget[key in SEPARABLE]
            if keep:
                trajectories = res.pop("trajectories")
            results[key].append(res)
        worst = _worst_case(quick, gammas)

    plot_iterations(out_dir / f"{NAME}_iterations.png", results, gammas, list(SEPARABLE))
    plot_losses(out_dir / f"{NAME}_losses.png", results, gammas, list(results))
    if trajectories is not None:
        shown = {g: v for i, (g, v) in enumerate(trajectories.items()) if i % 2 == 0}
        plot_trajectories(out_dir / f"{NAME}_trajectories.png", shown, "digits 3 vs 8, seed 0")

    found = verdicts(results, worst, gammas, agree_gammas)
    markdown = report(
        results,
        worst,
        gammas,
        agree_gammas,
        found,
        seeds=seeds,
        quick=quick,
        trajectories=trajectories is not None,
    )
    return DemoResult(
        name=NAME,
        title="Large step sizes in logistic-regression GD: the batch-perceptron limit",
        papers=(36,),
        markdown=markdown,
        verdicts=found,
        data={
            "gammas": gammas,
            "agreement_gammas": agree_gammas,
            "results": results,
            "worst_case": worst,
        },
        seconds=time.time() - start,
    )
