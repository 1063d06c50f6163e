"""Demonstration of RCAL (paper 32) on noisy, long-tailed digits and TREC-6.

:func:`run` (the arena's demo interface) trains, per scenario and seed, the arms of
:func:`~losskit.procedures.rcal_runs.run_seed`: cross-entropy, GCE, LDAM-DRW and RCAL with
four ablations, all with the arena's MLP, and reports the final-epoch balanced test accuracy
and the head / medium / tail accuracy, mean ± std over seeds. Scenarios: a ``longtail:10``
subsample with the paper's class-prior flips (``eta = 0.4``) on digits and on TREC-6
(MiniLM sentence embeddings; classes renumbered by decreasing size so that the long tail
keeps the largest class as its head), and the arena's ``longtail:10+symmetric:0.4`` on
digits. CIFAR-10 with a CNN and image augmentations does not fit the time budget on two CPU
cores (contrastive pre-training plus eight trainings per seed).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from losskit.arena.demos import DemoResult
from losskit.procedures.rcal_report import plot, tables, verdicts
from losskit.procedures.rcal_runs import ARMS, Setting, run_seed

NAME = "rcal"
TITLE = "RCAL: representation calibration for noisy labels on long-tailed data"
# (title, dataset, scenario spec, noise model, setting)
FULL = (
    ("digits, long tail 10, prior flips 0.4", "digits", "longtail:10", "prior", Setting(60, 200)),
    ("digits, long tail 10, symmetric 0.4", "digits", "longtail:10+symmetric:0.4", "scenario",
     Setting(60, 200)),
    ("TREC-6, long tail 10, prior flips 0.4", "trec6", "longtail:10", "prior", Setting(40, 100)),
)  # fmt: skip
QUICK = (("digits, long tail 10, prior flips 0.4", "digits", "longtail:10", "prior",
          Setting(3, 2)),)  # fmt: skip


def _check_data(names: set[str], data_dir: str | None) -> None:
    from losskit.arena.datasets import missing_files

    missing = [str(p) for name in sorted(names) for p in missing_files(name, data_dir)]
    if missing:
        raise ValueError(f"{NAME} needs missing data files: {', '.join(missing)}")


def _collect(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed results of one scenario stacked into lists (seed last)."""
    first = runs[0]
    return {
        "scores": {a: {m: [r["scores"][a][m] for r in runs] for m in first["scores"][a]}
                   for a in first["scores"]},
        "lof": {a: {k: [r["lof"][a][k] for r in runs] for k in first["lof"][a]}
                for a in first["lof"]},
        "noise_rate": [r["noise_rate"] for r in runs],
        "contrastive_loss": [r["contrastive_loss"] for r in runs],
        "train_counts": first["train_counts"],
        "sizes": first["sizes"],
    }  # fmt: skip


def _markdown(grid: tuple, results: dict[str, dict], seeds: int, plot_name: str) -> list[str]:
    from losskit.procedures.rcal_report import ms

    md = [
        f"Final-epoch test accuracy, mean ± std over {seeds} seed(s). Model: the arena's MLP "
        "(two hidden layers of 256 ReLU units), Adam (lr 1e-3), batch 128, the same "
        "initialisation for every arm of a seed. RCAL: encoder = the hidden layers, classifier "
        "= the last layer; contrastive pre-training on the training inputs without labels "
        "(two views m·(x + 0.1 e), feature dropout 0.2, symmetric InfoNCE at T = 0.2, batch "
        "256, in-batch negatives instead of MoCo's queue), shared by the RCAL arms of a seed; "
        "per class LOF (20 neighbours, drop LOF > 1.5), Gaussian moments, the 5 (digits) / 3 "
        "(TREC-6) smallest classes averaged with their q = 1 nearest head class, round(N / C) "
        "sampled representations per class, then encoder and classifier trained with mixup "
        "(α = 1) + CE on the sampled representations + β = 1 × ‖f(x) − z‖².",
        "",
        "Ablations: LOF dropping the top 20 % of each class instead of LOF > 1.5; q = 0 (no "
        "tail calibration); no sampled representations; β = 0 (no individual calibration). "
        "GCE is `losskit.get('generalized_cross_entropy')` (q = 0.7); LDAM-DRW is "
        "`losskit.get('ldam')` with class-balanced re-weighting from 80 % of the epochs.",
        "",
        "Prior flips are the paper's noise model (Assumption 3.1): a label of class k becomes "
        "j ≠ k with probability 0.4·n_j/n, so flips go mostly to the head and the tail "
        "receives few; symmetric flips spread uniformly and flood the tail classes.",
        "",
        "| scenario | dataset (spec) | train / test | true training counts | noise rate | "
        "epochs | pre-training epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for title, dataset, spec, noise, st in grid:
        r = results[title]
        md.append(
            f"| {title} | {dataset} (`{spec}`, {noise} noise) | {r['sizes']['train']} / "
            f"{r['sizes']['test']} | {r['train_counts']} | {ms(r['noise_rate'])} % | "
            f"{st.epochs} | {st.pretrain_epochs} |"
        )
    md += ["", *tables(results), "", f"![accuracy]({plot_name})", "",
           "Plot: balanced (left) and tail-class (right) test accuracy per arm, mean ± std over "
           "seeds.", "",
           "Notes: every RCAL arm trains with mixup, and no arm isolates mixup alone. LOF's "
           "1.5 rule is scikit-learn's default; in 256 dimensions LOF values crowd around 1, "
           "so the rule drops few samples, while the ranking still separates mislabelled from "
           "clean ones (the top-20 % rule). At q = 1 a tail class's mean is the midpoint of its "
           "own and its nearest head class's mean, which moves its sampled representations "
           "toward that head class. The paper's equations and code could not be read: the "
           "calibration and the loss weights are losskit's reading of its text (see "
           "`losskit.procedures.rcal`)."]  # fmt: skip
    return md


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """CE, GCE, LDAM-DRW, RCAL and its ablations on noisy long-tailed digits and TREC-6;
    see the module docstring."""
    from tqdm.auto import tqdm

    from losskit.arena.datasets import load_dataset

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    grid = QUICK if quick else FULL
    _check_data({g[1] for g in grid}, data_dir)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = {d: load_dataset(d, data_dir, progress=True) for d in {g[1] for g in grid}}
    runs: dict[str, list[dict[str, Any]]] = {g[0]: [] for g in grid}
    jobs = [(g, s) for g in grid for s in range(seeds)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is faster and rounds the same anywhere
    try:
        for (title, dataset, spec, noise, st), seed in tqdm(jobs, desc=NAME, unit="run"):
            runs[title].append(run_seed(datasets[dataset], spec, noise, seed, st))
    finally:
        torch.set_num_threads(threads)
    results = {title: _collect(r) for title, r in runs.items()}
    plot_name = f"{NAME}_plot.png"
    plot(results, out_dir / plot_name)
    md = _markdown(grid, results, seeds, plot_name)
    data = {"seeds": seeds, "quick": quick, "arms": list(ARMS), "results": results,
            "settings": {g[0]: asdict(g[4]) for g in grid}}  # fmt: skip
    return DemoResult(NAME, TITLE, (32,), "\n".join(md), verdicts(results), data,
                      time.perf_counter() - start)  # fmt: skip
