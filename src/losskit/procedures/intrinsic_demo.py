"""Demonstration of paper 22 (Konz & Mazurowski, ICLR 2024): intrinsic dimension, label
sharpness ``K_F``, the generalization-scaling relation and the adversarial-robustness relation,
measured on digits, CIFAR-10 (a subset, the arena's small CNN) and Olivetti faces.

:func:`run` is the arena's demo interface (``run(out_dir, *, seeds, quick, data_dir)``); the
trials of one seed are in :mod:`losskit.procedures.intrinsic_trials`. It runs torch on one
thread (restored afterwards): on a shared CPU the small models train faster that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm import tqdm

from losskit.arena.datasets import MissingDataError, load_dataset
from losskit.arena.demos import DemoResult, Verdict
from losskit.procedures.intrinsic_plots import dims_plot, robustness_plot, scaling_plot
from losskit.procedures.intrinsic_trials import (
    DATASETS,
    FULL,
    MODEL,
    QUICK,
    Config,
    pair_tasks,
    properties,
    scaling,
)

NAME = "intrinsic"


def _ms(values: Sequence[float], digits: int = 2) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _sign(values: Sequence[float], negative: bool) -> str:
    """'yes' when the mean has the expected sign and exceeds the std over seeds, 'no' when
    it has the other sign by that much, 'tie' otherwise (NaN: 'tie')."""
    m, s = float(np.mean(values)), float(np.std(values))
    if np.isnan(m):
        return "tie"
    m = -m if negative else m
    return "yes" if m > s else "no" if m < -s else "tie"


def _count(flags: Sequence[bool]) -> str:
    return "yes" if all(flags) else "partly" if any(flags) else "no"


def _load(data_dir: str | None) -> dict:
    try:
        return {n: load_dataset(n, data_dir, progress=False) for n in DATASETS}
    except MissingDataError as err:
        raise ValueError(str(err)) from err


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Run the paper-22 demonstration; plots go to ``out_dir/intrinsic_*.png``."""
    cfg = QUICK if quick else FULL
    data = _load(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    props, scal, pairs = [], [], []
    try:
        with tqdm(total=3 * seeds, desc=NAME, disable=None) as bar:
            for seed in range(seeds):
                for store, stage in ((props, properties), (scal, scaling), (pairs, pair_tasks)):
                    store.append(stage(data, cfg, seed))
                    bar.update()
    finally:
        torch.set_num_threads(threads)
    return _report(out_dir, cfg, seeds, props, scal, pairs)


def _report(out_dir: Path, cfg: Config, seeds: int, props, scal, pairs) -> DemoResult:
    dd = {n: [p[n]["mle"] for p in props] for n in DATASETS}
    dims = {
        n: {
            "d_data MLE": dd[n],
            "d_data TwoNN": [p[n]["twonn"] for p in props],
            "d_repr MLE": [s[n]["d_repr_mle"] for s in scal],
            "d_repr TwoNN": [s[n]["d_repr_twonn"] for s in scal],
        }
        for n in DATASETS
    }
    curves = {
        n: {
            "n": scal[0][n]["n"],
            "loss": [s[n]["loss"] for s in scal],
            "error": [s[n]["error"] for s in scal],
        }
        for n in DATASETS
    }
    slope = {  # of log test loss against log N, per seed
        n: [float(np.polyfit(np.log(c["n"]), np.log(v), 1)[0]) for v in c["loss"]]
        for n, c in curves.items()
    }
    tasks: dict[str, list[dict]] = {}
    for i, first in enumerate(pairs[0]):
        row = {k: [p[i][k] for p in pairs] for k in ("kf", "loss", "acc", "fgsm", "pgd")}
        tasks.setdefault(first["dataset"], []).append({"pair": first["pair"], **row})
    rho = {
        n: {
            k: [
                _spearman([r["kf"][s] for r in rows], [r[k][s] for r in rows]) for s in range(seeds)
            ]
            for k in ("pgd", "fgsm", "loss")
        }
        for n, rows in tasks.items()
    }
    mean_d = {n: float(np.mean(v)) for n, v in dd.items()}
    scaling_plot(out_dir / f"{NAME}_scaling.png", curves, mean_d)
    robustness_plot(out_dir / f"{NAME}_robustness.png", tasks, cfg.eps)
    dims_plot(out_dir / f"{NAME}_dims.png", dims)

    md = [
        f"Setting: {seeds} seed(s); inputs in pixel units in [0, 1] (digits 8x8 = 64-d, "
        f"CIFAR-10 32x32x3 = 3072-d, Olivetti 64x64 = 4096-d). d_data: MLE (Levina-Bickel, "
        "k = 20, MacKay-Ghahramani inverse averaging, the paper's estimator) and TwoNN on the "
        f"digits training split (1257), {cfg.cifar_points} random CIFAR-10 training images, "
        "all 400 Olivetti faces. K_F on M = "
        f"{cfg.kf_points} random training points (Olivetti: the 280 training faces) over "
        "pairs with different labels. d_repr: the same points as d_data through the "
        "penultimate layer of the model trained on the largest subset. Models: arena "
        + ", ".join(f"{n}: {MODEL[n]}" for n in DATASETS)
        + "; AdamW with a cosine schedule, batch 64, a fixed number of steps per run ("
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cfg.steps.items())
        + "). Test sets: "
        f"digits 540, CIFAR-10 {cfg.cifar_test} random test images, Olivetti 120.",
        "",
        "| dataset | points x dims | d_data MLE | d_data TwoNN | d_repr MLE | d_repr TwoNN "
        "| K_F | K_F, 10 % labels flipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in DATASETS:
        p = props[0][n]
        md.append(
            f"| {n} | {p['n']} x {p['dim']} | {_ms(dd[n], 1)} | {_ms(dims[n]['d_data TwoNN'], 1)}"
            f" | {_ms(dims[n]['d_repr MLE'], 1)} ({MODEL[n]}, {scal[0][n]['repr_width']}-d) | "
            f"{_ms(dims[n]['d_repr TwoNN'], 1)} | {_ms([q[n]['kf'] for q in props], 3)} | "
            f"{_ms([q[n]['kf_noisy'] for q in props], 3)} |"
        )
    md += [
        "",
        "![d_data and d_repr](intrinsic_dims.png)",
        "",
        "Generalization scaling: test cross-entropy against the training-set size N "
        "(Olivetti: 2-7 faces per person), slope of log loss against log N "
        "fitted per seed. The paper's law L = O(K_F N^(-1/d_data)) bounds the decay rate by "
        "-1/d_data.",
        "",
        "| dataset | N | test loss | test error | slope of log loss | -1/d_data |",
        "|---|---|---|---|---|---|",
    ]
    for n, c in curves.items():
        loss, err = np.asarray(c["loss"]), np.asarray(c["error"])
        md.append(
            f"| {n} | {', '.join(map(str, c['n']))} | "
            + ", ".join(f"{v:.3f}" for v in loss.mean(0))
            + " | "
            + ", ".join(f"{v:.3f}" for v in err.mean(0))
            + f" | {_ms(slope[n])} | {-1 / mean_d[n]:.3f} |"
        )
    md += [
        "",
        "![scaling](intrinsic_scaling.png)",
        "",
        "Adversarial robustness: binary class-pair tasks (digits: all training images of the "
        f"pair, MLP; CIFAR-10: {cfg.pair_train} random training images of the pair, CNN), "
        f"K_F of the training set, accuracy on up to {cfg.pair_test} test images clean and "
        f"under FGSM and PGD ({cfg.pgd_steps} steps, random start) in the L-infinity ball of "
        f"radius {cfg.eps['digits']} (digits) and {255 * cfg.eps['cifar10']:.0f}/255 (CIFAR-10).",
        "",
        "| dataset | pair | K_F | clean acc | FGSM acc | PGD acc | test loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, rows in tasks.items():
        md += [
            f"| {n} | {r['pair']} | {_ms(r['kf'], 3)} | {_ms(r['acc'])} | {_ms(r['fgsm'])} | "
            f"{_ms(r['pgd'])} | {_ms(r['loss'], 3)} |"
            for r in rows
        ]
    md += [
        "",
        "| dataset | Spearman(K_F, PGD acc) | Spearman(K_F, FGSM acc) | Spearman(K_F, test loss) |",
        "|---|---|---|---|",
        *(
            f"| {n} | {_ms(r['pgd'])} | {_ms(r['fgsm'])} | {_ms(r['loss'])} |"
            for n, r in rho.items()
        ),
        "",
        "![robustness](intrinsic_robustness.png)",
    ]
    verdicts = _verdicts(dd, dims, slope, mean_d, rho, props)
    md += [
        "",
        "Verdict rules: a relation over datasets holds ('yes') for all of them, 'partly' for "
        "some; a correlation is 'yes' when its mean over seeds has the predicted sign and "
        "exceeds its std, 'no' when it has the other sign by that much, 'tie' otherwise. "
        "K_F values are comparable only within one input space (same resolution and range).",
    ]
    data = {
        "config": {k: getattr(cfg, k) for k in ("cifar_points", "kf_points", "pgd_steps")},
        "properties": props,
        "scaling": scal,
        "pairs": pairs,
        "slopes": slope,
        "spearman": rho,
    }
    title = "Intrinsic dimension, label sharpness, scaling and robustness"
    return DemoResult(NAME, title, (22,), "\n".join(md), verdicts, data)


def _verdicts(dd, dims, slope, mean_d, rho, props) -> list[Verdict]:
    steeper = {n: float(np.mean(slope[n])) <= -1.0 / mean_d[n] for n in DATASETS}
    slopes = [np.mean(slope[n]) for n in DATASETS]
    order = _spearman([mean_d[n] for n in DATASETS], slopes)
    order_twonn = _spearman([np.mean(dims[n]["d_data TwoNN"]) for n in DATASETS], slopes)
    bound = {n: np.mean(dims[n]["d_repr MLE"]) <= np.mean(dd[n]) for n in DATASETS}
    noisy = {
        n: np.mean([p[n]["kf_noisy"] for p in props]) > np.mean([p[n]["kf"] for p in props])
        for n in DATASETS
    }
    fmt = ", ".join
    out = [
        Verdict(
            "Test loss falls with N at least as fast as the bound N^(-1/d_data)",
            _count(list(steeper.values())),
            fmt(f"{n}: slope {_ms(slope[n])} vs {-1 / mean_d[n]:.3f}" for n in DATASETS),
        ),
        Verdict(
            "The higher d_data, the slower the test loss decays with N",
            "yes" if order == 1 else "partly" if order > 0 else "no",
            f"Spearman(d_data MLE, slope) = {order:.2f} over "
            + fmt(f"{n} (d {mean_d[n]:.1f}, slope {np.mean(slope[n]):.2f})" for n in DATASETS)
            + f"; with TwoNN's d_data it is {order_twonn:.2f}",
        ),
    ]
    for n, r in rho.items():
        out.append(
            Verdict(
                f"K_F is negatively correlated with adversarial robustness ({n} class pairs)",
                _sign(r["pgd"], negative=True),
                f"Spearman(K_F, PGD acc) {_ms(r['pgd'])}, (K_F, FGSM acc) {_ms(r['fgsm'])}",
            )
        )
        out.append(
            Verdict(
                f"Higher K_F gives a higher test loss at fixed N ({n} class pairs)",
                _sign(r["loss"], negative=False),
                f"Spearman(K_F, test loss) {_ms(r['loss'])}",
            )
        )
    out += [
        Verdict(
            "d_data upper-bounds d_repr",
            _count(list(bound.values())),
            fmt(
                f"{n}: d_repr {_ms(dims[n]['d_repr MLE'], 1)} vs d_data {_ms(dd[n], 1)} (MLE)"
                for n in DATASETS
            ),
        ),
        Verdict(
            "Flipping 10 % of the labels raises K_F (sanity check of the measure)",
            _count(list(noisy.values())),
            fmt(
                f"{n}: {_ms([p[n]['kf'] for p in props], 3)} -> "
                f"{_ms([p[n]['kf_noisy'] for p in props], 3)}"
                for n in DATASETS
            ),
        ),
    ]
    return out
