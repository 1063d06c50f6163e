"""The runs behind the large-step GD demonstration (paper 36): datasets and one probe per
dataset and seed. :mod:`losskit.procedures.large_step_gd_demo` turns them into tables,
plots and verdicts."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from losskit.diagnostics.large_step_data import (
    is_linearly_separable,
    max_margin,
    nonseparable_dataset,
    separable_dataset,
)
from losskit.diagnostics.large_step_gd import (
    logistic_loss,
    perceptron_agreement,
    run_large_step_gd,
)

GD_METHODS = ("gd", "normalized_gd")
PERCEPTRONS = {"gd": "batch_perceptron", "normalized_gd": "normalized_batch_perceptron"}


def digits_features(data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 sklearn digits (train and test splits of the arena's loader): 64 pixels in
    [0, 1] plus a constant 1 (intercept), float64, and the digit labels."""
    from losskit.arena.datasets import load_dataset

    ds = load_dataset("digits", data_dir, progress=False)
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    return np.hstack([x, np.ones((len(x), 1))]), np.concatenate([ds.y_train, ds.y_test])


def datasets(
    seed: int, quick: bool, digits: tuple[np.ndarray, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The five probe datasets of one seed (``+-1`` labels): a stretched Gaussian (d = 10,
    margin 0.02) and digits 3 vs 8 (a random 80 % of the 357 images, ``3 -> +1``) and the same
    pair imbalanced 1 : 8 (20 threes, 160 eights), all separable; the Gaussian with 10 %
    flipped labels and digits even vs odd (1,000 random images), not separable. ``quick``
    keeps a quarter of the separable digits, 100 Gaussian points and 600 digits for even vs
    odd (still not separable; fewer than about 400 usually are)."""
    rng = np.random.default_rng(seed)
    x, lab = digits
    small = 0.25 if quick else 1.0

    def pick(idx: np.ndarray, k: int) -> np.ndarray:
        return rng.choice(idx, size=max(int(k * small), 4), replace=False)

    three, eight = np.flatnonzero(lab == 3), np.flatnonzero(lab == 8)
    pair = pick(np.concatenate([three, eight]), int(0.8 * (len(three) + len(eight))))
    imbalanced = np.concatenate([pick(three, 20), pick(eight, 160)])
    everything = rng.choice(len(lab), size=600 if quick else 1000, replace=False)
    n_gauss = 100 if quick else 300
    return {
        "gauss_sep": separable_dataset(n_gauss, 10, margin=0.02, seed=seed),
        "digits_3v8": (x[pair], np.where(lab[pair] == 3, 1.0, -1.0)),
        "digits_3v8_imbalanced": (x[imbalanced], np.where(lab[imbalanced] == 3, 1.0, -1.0)),
        "gauss_flip10": nonseparable_dataset(n_gauss, 10, flip=0.1, seed=seed),
        "digits_even_odd": (x[everything], np.where(lab[everything] % 2 == 0, 1.0, -1.0)),
    }


def logistic_minimum(a: np.ndarray, y: np.ndarray, *, steps: int = 200) -> float:
    """``min_w f(w)`` by Newton's method with backtracking (finite for data that are not
    separable); stops when the Newton decrement ``g^T H^-1 g / 2`` falls below 1e-15."""
    z = y[:, None] * a
    w = np.zeros(a.shape[1])

    def f(v: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -(z @ v)).mean())

    value = f(w)
    for _ in range(steps):
        s = expit(-(z @ w))
        grad = -(s @ z) / len(z)
        hess = (z * (s * (1 - s))[:, None]).T @ z / len(z)
        direction = np.linalg.lstsq(hess, -grad, rcond=None)[0]
        decrement = -float(grad @ direction)
        if decrement < 2e-15:
            break
        t = 1.0
        while f(w + t * direction) > value - 0.25 * t * decrement and t > 1e-12:
            t *= 0.5
        w = w + t * direction
        value = f(w)
    return value


def probe(
    a: np.ndarray,
    y: np.ndarray,
    gammas: list[float],
    max_iter: int,
    *,
    agree_gammas: list[float],
    agree_iter: int,
    trajectory_len: int = 0,
) -> dict[str, Any]:
    """Every method at every step size on one dataset, up to separation or ``max_iter``
    steps (the final loss is the loss there).

    Per method and step size: first separating iteration (``None`` past the budget), loss at
    the probe iteration ``t_p`` (one before the earliest separation of any run, where no run
    has separated yet; ``None`` where a run separates at iteration 1), final loss and final
    training error; per step size of ``agree_gammas``, the number of leading iterates (of at
    most ``agree_iter + 1``) whose sign pattern equals the (Normalized) Batch Perceptron's.
    The perceptrons' sets do not depend on ``gamma``; their losses are those of
    ``gamma theta_t``.
    With ``trajectory_len > 0``, LR+GD's first losses and training errors are kept too.
    """
    n = len(a)
    out: dict[str, Any] = {"n": n, "d": a.shape[1], "separable": is_linearly_separable(a, y)}
    out["two_over_L"] = float(8 * n / np.linalg.eigvalsh(a.T @ a).max())
    if out["separable"]:
        mu = max_margin(a, y)
        out["R2_over_mu2"] = float((a**2).sum(axis=1).max() / mu**2)
        out["f_star"] = 0.0  # the infimum, not attained
    else:
        out["f_star"] = logistic_minimum(a, y)
    runs = {
        m: [run_large_step_gd(a, y, method=m, gamma=g, max_iter=max_iter) for g in gammas]
        for m in GD_METHODS
    }
    limits = {
        m: run_large_step_gd(a, y, method=p, max_iter=max_iter, keep_iterates=True)
        for m, p in PERCEPTRONS.items()
    }
    firsts = [r.iterations for rs in runs.values() for r in rs] + [
        r.iterations for r in limits.values()
    ]
    first = min((t for t in firsts if t is not None), default=max_iter + 1)
    t_probe = first - 1 if first >= 2 else None
    out["t_probe"] = t_probe
    for m in GD_METHODS:
        rs, lim = runs[m], limits[m]
        theta_probe = lim.iterates[min(t_probe or 0, len(lim.iterates) - 1)]
        out[m] = {
            "iterations": [r.iterations for r in rs],
            "loss_probe": [float(r.losses[t_probe]) if t_probe else None for r in rs],
            "loss_final": [float(r.losses[-1]) for r in rs],
            "error_final": [float(r.misclassified[-1] / n) for r in rs],
            "agreement": [
                perceptron_agreement(a, y, g, max_iter=agree_iter, normalized=m != "gd")
                for g in agree_gammas
            ],
            "limit_iterations": lim.iterations,
            "limit_loss_probe": [
                logistic_loss(a, y, g * theta_probe) if t_probe else None for g in gammas
            ],
            "limit_loss_final": [logistic_loss(a, y, g * lim.w) for g in gammas],
            "limit_error_final": float(lim.misclassified[-1] / n),
            "agreement_window": min(lim.iterations or agree_iter, agree_iter) + 1,
        }
    if trajectory_len:
        out["trajectories"] = {
            f"{g:g}": (r.losses[:trajectory_len], r.misclassified[:trajectory_len] / n)
            for g, r in zip(gammas, runs["gd"], strict=True)
        }
    return out
