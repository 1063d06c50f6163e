"""Tables of the large-step GD demonstration (paper 36) and the helpers its verdicts share."""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit.arena.demos import Verdict

SEPARABLE = ("gauss_sep", "digits_3v8", "digits_3v8_imbalanced")
NONSEPARABLE = ("gauss_flip10", "digits_even_odd")
LABELS = {"gd": "LR+GD", "normalized_gd": "Normalized LR+GD"}
# the paper's Table 1 on the dataset of its Theorem 5.1: (method, step) -> iterations
PAPER_TABLE_1 = {
    ("normalized_gd", 100.0): 2,
    ("normalized_gd", 10.0): 2,
    ("normalized_gd", 1.0): 16,
    ("normalized_gd", 0.1): 157,
    ("gd", 100.0): 308,
}


def mean_std(values: list[float], fmt: str = ".3g") -> str:
    return f"{np.mean(values):{fmt}} ± {np.std(values):{fmt}}"


def filled(values: list[int | None], cap: int) -> list[int]:
    return [cap if v is None else v for v in values]


def _iters(values: list[int | None], cap: int) -> str:
    """Mean ± std over seeds; runs past the budget count as the budget and get a '≥'."""
    return ("≥ " if None in values else "") + mean_std(filled(values, cap), ".4g")


def fewer(a: list[float], b: list[float]) -> str:
    """'yes' where mean(a) is below mean(b) by more than the larger std, 'no' where it is
    above by that much, 'tie' otherwise (the arena's rule)."""
    gap, spread = np.mean(b) - np.mean(a), max(np.std(a), np.std(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def column(seeds: list[dict], method: str, field: str, i: int) -> list:
    return [s[method][field][i] for s in seeds]


def overall(votes: list[str]) -> str:
    return votes[0] if len(set(votes)) == 1 and votes[0] in ("yes", "no") else "partly"


def _datasets_table(results: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| dataset | n | d | separable (LP), seeds | R²/μ² | n R²/μ² | f* | 2/L | budget T |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, seeds in results.items():
        sep = sum(s["separable"] for s in seeds)
        ratio = [s["R2_over_mu2"] for s in seeds if "R2_over_mu2" in s]
        nr = [s["n"] * s["R2_over_mu2"] for s in seeds if "R2_over_mu2" in s]
        fstar = [s["f_star"] for s in seeds if not s["separable"]]
        two_l = [s["two_over_L"] for s in seeds]
        cells = [mean_std(v, ".4g") if v else "-" for v in (ratio, nr, fstar, two_l)]
        lines.append(
            f"| {key} | {seeds[0]['n']} | {seeds[0]['d']} | {sep}/{len(seeds)} | "
            + " | ".join(cells)
            + f" | {seeds[0]['max_iter']} |"
        )
    return lines


def _separable_tables(results: dict, gammas: list[float]) -> list[str]:
    head = "| gamma | " + " | ".join(f"{k}: {LABELS[m]}" for k in SEPARABLE for m in LABELS)
    lines = ["**Iterations to separate** (first t with every y_i a_iᵀw_t > 0; mean ± std):", ""]
    lines += [head + " |", "|---" * (1 + 2 * len(SEPARABLE)) + "|"]
    for i, g in enumerate(gammas):
        cells = [
            _iters(column(results[k], m, "iterations", i), results[k][0]["max_iter"])
            for k in SEPARABLE
            for m in LABELS
        ]
        lines.append(f"| {g:g} | " + " | ".join(cells) + " |")
    limit = [
        _iters([s[m]["limit_iterations"] for s in results[k]], results[k][0]["max_iter"])
        for k in SEPARABLE
        for m in LABELS
    ]
    lines += ["| ∞ (Batch / Normalized Batch Perceptron) | " + " | ".join(limit) + " |", ""]
    lines += [
        "**Logistic loss before and after separation** (LR+GD): f(w_t) at the probe iteration "
        "t_p (one before the earliest separation of any run on that dataset and seed, so no "
        "run has separated yet) and where the run ends (at separation, or at T):",
        "",
        "| gamma | " + " | ".join(f"{k}: f(w_tp) | {k}: f at the end" for k in SEPARABLE) + " |",
        "|---" * (1 + 2 * len(SEPARABLE)) + "|",
    ]
    for i, g in enumerate(gammas):
        cells = []
        for k in SEPARABLE:
            probed = [v for v in column(results[k], "gd", "loss_probe", i) if v is not None]
            cells += [mean_std(probed) if probed else "-"]
            cells += [mean_std(column(results[k], "gd", "loss_final", i))]
        lines.append(f"| {g:g} | " + " | ".join(cells) + " |")
    tps = []
    for k in SEPARABLE:
        t = [s["t_probe"] for s in results[k] if s["t_probe"] is not None]
        tps.append(f"{k} {mean_std(t, '.3g') if t else '-'} ({len(t)}/{len(results[k])} seeds)")
    note = "Probe iterations t_p (none on seeds where a run separates at t = 1): "
    under = " A loss of 0 is below the float64 range (about 1e-308)."
    return lines + ["", note + ", ".join(tps) + "." + under, ""]


def _agreement_table(results: dict, gammas: list[float]) -> list[str]:
    """``gammas``: the agreement grid (the step grid and larger steps)."""
    lines = [
        "**Agreement with the perceptron limit**: share of the compared iterates (from w_0 = 0 "
        "until the perceptron separates, at most 1 + the agreement window) before the first "
        "iterate whose sign pattern sign(y_i a_iᵀw_t) differs; LR+GD vs Batch Perceptron / "
        "Normalized LR+GD vs Normalized Batch Perceptron, mean over seeds, %:",
        "",
        "| gamma | " + " | ".join(results) + " |",
        "|---" * (1 + len(results)) + "|",
    ]
    for i, g in enumerate(gammas):
        cells = []
        for seeds in results.values():
            pair = [
                np.mean([s[m]["agreement"][i] / s[m]["agreement_window"] for s in seeds])
                for m in LABELS
            ]
            cells.append(f"{100 * pair[0]:.0f} / {100 * pair[1]:.0f}")
        lines.append(f"| {g:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _nonseparable_table(results: dict, gammas: list[float]) -> list[str]:
    lines = [
        "**Data that are not separable**: relative loss gap (f(w_T) - f*)/f* after the budget T "
        "and training error at T (LR+GD / Normalized LR+GD, %):",
        "",
        "| gamma | "
        + " | ".join(f"{k}: gap LR+GD | {k}: gap Normalized | {k}: error %" for k in NONSEPARABLE)
        + " |",
        "|---" * (1 + 3 * len(NONSEPARABLE)) + "|",
    ]
    for i, g in enumerate(gammas):
        cells = []
        for k in NONSEPARABLE:
            seeds = results[k]
            for m in LABELS:
                cells.append(
                    mean_std([(s[m]["loss_final"][i] - s["f_star"]) / s["f_star"] for s in seeds])
                )
            errs = [np.mean([100 * s[m]["error_final"][i] for s in seeds]) for m in LABELS]
            cells.append(f"{errs[0]:.1f} / {errs[1]:.1f}")
        lines.append(f"| {g:g} | " + " | ".join(cells) + " |")
    limit = []
    for k in NONSEPARABLE:
        errs = [np.mean([100 * s[m]["limit_error_final"] for s in results[k]]) for m in LABELS]
        limit += ["-", "-", f"{errs[0]:.1f} / {errs[1]:.1f}"]
    return lines + ["| ∞ (perceptrons) | " + " | ".join(limit) + " |", ""]


def _worst_table(worst: dict[str, Any]) -> list[str]:
    sizes = worst["sizes"]
    lines = [
        "**The dataset of the paper's Theorem 5.1** (one point (0.5, -1) of class +1, n - 1 "
        "points (-0.5, -1) of class -1; μ = 0.5, R² = 1.25): iterations to separate",
        "",
        "| n | " + " | ".join(str(n) for n in sizes) + " |",
        "|---" * (1 + len(sizes)) + "|",
        "| Batch Perceptron | " + " | ".join(str(v) for v in worst["perceptron"]) + " |",
        "| Normalized Batch Perceptron | "
        + " | ".join(str(v) for v in worst["normalized_perceptron"])
        + " |",
        "",
        f"At n = {sizes[-1]} (budget {worst['budget']}), beside the paper's Table 1 on this "
        "dataset:",
        "",
        "| step gamma | LR+GD | Normalized LR+GD | paper, LR+GD | paper, Normalized |",
        "|---|---|---|---|---|",
    ]
    for i, g in enumerate(worst["steps"]):
        ours = [worst[m][i] if worst[m][i] is not None else f"> {worst['budget']}" for m in LABELS]
        paper = [PAPER_TABLE_1.get((m, g), "") for m in LABELS]
        lines.append(f"| {g:g} | {ours[0]} | {ours[1]} | {paper[0]} | {paper[1]} |")
    return lines + [""]


def report(
    results: dict,
    worst: dict,
    gammas: list[float],
    agree_gammas: list[float],
    found: list[Verdict],
    *,
    seeds: int,
    quick: bool,
    trajectories: bool,
) -> str:
    """The markdown section: setting, tables, plot links and the verdicts ``found``."""
    name = "large_step_gd"
    lines = [
        "Full-batch gradient descent on the logistic loss f(w) = 1/n Σ log(1 + exp(-y_i a_iᵀw)) "
        "from w_0 = 0 (homogeneous; the digits features carry a constant 1), its γ → ∞ limit "
        "(Batch Perceptron, Theorem 3.2), Normalized LR+GD (w_{t+1} = w_t - γ β_t ∇f(w_t), "
        "β_t = (1/n Σ σ(-y_i a_iᵀw_t))⁻¹) and its limit (Normalized Batch Perceptron), on "
        f"step sizes γ ∈ {{{', '.join(f'{g:g}' for g in gammas)}}}; {seeds} seed(s) (data "
        "draws and digit subsets; the methods are deterministic); every run stops at "
        "separation or after a budget of T iterations" + (" (quick setting)." if quick else "."),
        "",
        "Datasets: gauss_sep, a stretched Gaussian (axis scales 1 … 1/10) labelled by a random "
        "hyperplane with margin ≥ 0.02; digits_3v8, sklearn digits 3 (+1) vs 8 (-1); "
        "digits_3v8_imbalanced, threes and eights 1 : 8; gauss_flip10, the Gaussian with 10 % "
        "of labels flipped; digits_even_odd, digits even (+1) vs odd (-1); the digits are random "
        "subsets of the 1,797 images per seed (sizes below). Separability is checked by linear "
        "programming; μ is the max-margin (NNLS), f* the minimum of f (Newton's method), "
        "L = λ_max(AᵀA)/(4n) the smoothness of f.",
        "",
        *_datasets_table(results),
        "",
        *_separable_tables(results, gammas),
        f"![iterations against step size]({name}_iterations.png)",
        "",
        *_agreement_table(results, agree_gammas),
        *_nonseparable_table(results, gammas),
        f"![losses against step size]({name}_losses.png)",
        "",
        *_worst_table(worst),
    ]
    if trajectories:
        lines += [f"![LR+GD trajectories on digits 3 vs 8]({name}_trajectories.png)", ""]
    lines += ["Verdicts:", ""]
    lines += [f"- {v.claim}: **{v.verdict}** ({v.evidence})." for v in found]
    return "\n".join(lines)
