"""Demonstration of the inductive-bias estimate (paper 30) on sklearn's 8x8 digits: how much
inductive bias a kernel space, an MLP space and a CNN space need to reach a target error.

Per seed: a random training subset of the arena's digits split, the full test split, and
three hypothesis spaces that fit the training set: Gaussian-process posterior samples (RBF,
lengthscale 1 as in the paper's code), MLPs and CNNs trained from random initialisations
(:mod:`losskit.procedures.network_hypotheses`). For each space and each error measure (the
paper's test MSE to one-hot targets, and the classification error), a scaled non-central
chi-squared law is fitted and ``IB(eps) = -log P(e <= eps)`` is read off at targets set by the
networks' pooled errors, with the exact log-space tail and with the reference code's fallback.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from losskit.arena.demos import DemoResult
from losskit.diagnostics.inductive_bias import (
    ScaledNcx2,
    fit_scaled_ncx2,
    inductive_bias,
    sankaran_inductive_bias,
)
from losskit.diagnostics.kernel_hypotheses import class_targets, gp_hypothesis_errors
from losskit.procedures.inductive_bias_report import hist_plot, markdown, verdicts
from losskit.procedures.network_hypotheses import (
    CNNEnsemble,
    MLPEnsemble,
    network_hypothesis_errors,
)

NAME = "inductive_bias"
SPACES = ("kernel", "mlp", "cnn")
METRICS = ("mse", "error")
QUANTILES = (0.25, 0.05)  # eps = these quantiles of the pooled network errors, then 0.8 x min
SETTINGS = {
    True: {"n_train": 50, "kernel": 100, "members": 16, "steps": 30},
    False: {"n_train": 100, "kernel": 1000, "members": 128, "steps": 200},
}
LR, LENGTHSCALE, HIDDEN, CHANNELS = 1e-2, 1.0, (64, 64), (8, 64)
RIDGE = (0.0, 0.99)  # shapes nc / (df + nc) of the profile fits that bracket the ridge


@contextmanager
def _one_thread():
    """One torch and one BLAS thread: on busy shared cores the small batched products here
    run several times (up to 15x) faster than with a thread pool."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def _targets(errors: dict[str, np.ndarray]) -> np.ndarray:
    pooled = np.concatenate([errors["mlp"], errors["cnn"]])
    return np.array([*np.quantile(pooled, QUANTILES), 0.8 * pooled.min()])


def _space_errors(space: str, cfg: dict, seed: int, split: tuple) -> dict[str, Any]:
    x, y, xt, yt = split
    if space == "kernel":
        mse, err = gp_hypothesis_errors(
            x,
            class_targets(y, 10),
            xt,
            class_targets(yt, 10),
            num_samples=cfg["kernel"],
            lengthscale=LENGTHSCALE,
            seed=seed,
        )
        return {"mse": mse, "error": err, "train_mse": 0.0}
    if space == "mlp":
        model = MLPEnsemble(cfg["members"], 64, 10, HIDDEN, seed=seed)
    else:
        model = CNNEnsemble(cfg["members"], 10, CHANNELS, seed=seed)
    res = network_hypothesis_errors(model, x, y, xt, yt, 10, steps=cfg["steps"], lr=LR)
    return {"mse": res.mse, "error": res.error, "train_mse": float(res.train_mse.mean())}


def _listed(values: np.ndarray) -> list[float | None]:
    """JSON-safe list: infinite values (no sample below the target, or an underflowed
    ``logcdf``) become ``None``."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _estimates(errors: np.ndarray, law: ScaledNcx2, eps: np.ndarray) -> dict[str, Any]:
    """IB at ``eps``: exact, the reference fallback, scipy's ``-logcdf``, the empirical
    ``-log`` fraction, and the exact IB of the profile fits at both ends of the shape ridge
    with their total log-likelihood deficit against the free fit."""
    from scipy.stats import ncx2

    frac = np.array([(errors <= e).mean() for e in eps])
    with np.errstate(divide="ignore"):
        empirical = -np.log(frac)
        scipy_ib = -ncx2.logcdf(eps, law.df, law.nc, scale=law.scale)
    ends = [fit_scaled_ncx2(errors, shape=rho) for rho in RIDGE]
    return {
        "ib": _listed(inductive_bias(law, eps)),
        "fallback": _listed(sankaran_inductive_bias(law, eps)),
        "scipy": _listed(scipy_ib),
        "empirical": _listed(empirical),
        "ridge": [_listed(inductive_bias(end, eps)) for end in ends],
        "ridge_deficit": [errors.size * (law.log_likelihood - end.log_likelihood) for end in ends],
    }


def _one_seed(seed: int, cfg: dict, ds: Any, bar: tqdm) -> tuple[dict, dict]:
    idx = np.random.default_rng(seed).permutation(len(ds.x_train))[: cfg["n_train"]]
    split = (ds.x_train[idx].astype(np.float64), ds.y_train[idx], ds.x_test, ds.y_test)
    raw = {}
    for space in SPACES:
        start = time.perf_counter()
        raw[space] = _space_errors(space, cfg, seed, split)
        raw[space]["seconds"] = time.perf_counter() - start
        bar.update(1)
    out: dict[str, Any] = {"spaces": {}, "eps": {}}
    for metric in METRICS:
        eps = _targets({s: raw[s][metric] for s in ("mlp", "cnn")})
        out["eps"][metric] = eps.tolist()
        for space in SPACES:
            e = raw[space][metric]
            law = fit_scaled_ncx2(np.maximum(e, 0.5 / len(ds.y_test)))
            rec = out["spaces"].setdefault(space, {"train_mse": raw[space]["train_mse"]})
            rec["seconds"] = raw[space]["seconds"]
            rec[metric] = {
                "mean": float(e.mean()),
                "std": float(e.std()),
                "n": int(e.size),
                "fit": {"df": law.df, "nc": law.nc, "scale": law.scale},
                **_estimates(e, law, eps),
            }
    return out, {s: {m: raw[s][m] for m in METRICS} for s in SPACES}


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Kernel vs MLP vs CNN hypothesis spaces on digits: fitted error laws, ``IB(eps)`` and
    verdicts; writes ``inductive_bias_hist.png`` into ``out_dir``."""
    from losskit.arena.datasets import load_dataset

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = SETTINGS[bool(quick)]
    ds = load_dataset("digits", data_dir, progress=False)
    runs, first_errors = [], None
    with _one_thread(), tqdm(total=seeds * len(SPACES), desc=NAME, leave=False) as bar:
        for seed in range(seeds):
            result, errors = _one_seed(seed, cfg, ds, bar)
            runs.append(result)
            first_errors = first_errors or errors
    plot = f"{NAME}_hist.png"
    hist_plot(out / plot, first_errors, runs[0])
    setting = (
        f"sklearn digits (8x8, pixels / 16), {cfg['n_train']} random training digits per seed "
        f"from the arena's train split, the {len(ds.y_test)} test digits, {seeds} seed(s). "
        f"Kernel space: {cfg['kernel']} RBF Gaussian-process posterior samples (lengthscale "
        f"{LENGTHSCALE}, zero noise, exact interpolation of the one-hot targets). MLP space: "
        f"{cfg['members']} ReLU MLPs 64-{HIDDEN[0]}-{HIDDEN[1]}-10; CNN space: {cfg['members']} "
        f"CNNs conv3x3({CHANNELS[0]})-pool-conv3x3({CHANNELS[1]})-linear; each trained from "
        f"its own random initialisation by full-batch Adam (lr {LR}, {cfg['steps']} steps) on "
        "the MSE to one-hot targets."
    )
    return DemoResult(
        name=NAME,
        title="Inductive bias of kernel, MLP and CNN hypothesis spaces on digits",
        papers=(30,),
        markdown=markdown(runs, setting, plot, QUANTILES),
        verdicts=verdicts(runs),
        data={"settings": cfg, "runs": runs, "lengthscale": LENGTHSCALE, "lr": LR},
    )
