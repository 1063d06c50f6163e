"""Demonstration of paper 48: bag-level vs instance-level losses for aggregate responses,
and the interpolating estimator between them.

:func:`run` (the arena's demo interface) trains from bag-mean responses only, with random bags
of several sizes, in three settings (:mod:`losskit.procedures.aggregate_trials`): the paper's
Gaussian linear model with exact risk and bias-variance over replicate training sets, linear
regression on scikit-learn's diabetes data, and one-hidden-layer MLPs on the same data trained
with the torch losses. ``rho`` of the interpolating loss is chosen by cross-validation over
bags, which needs no individual response.

The verdict rule is the arena's: 'yes' where one mean beats the other by more than the larger
standard deviation over seeds, 'no' where it loses by that much, 'tie' otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from losskit.arena.demos import DemoResult, Verdict
from losskit.procedures import aggregate_trials as trials

NAME = "aggregate"
TITLE = "Learning from aggregate responses: bag-level vs instance-level losses"
LABELS = {"bag": "bag level (rho = 0)", "instance": "instance level (rho = 1)",
          "interpolating": "interpolating (rho by CV over bags)"}  # fmt: skip
SETTINGS = ("synthetic", "diabetes_linear", "diabetes_mlp")


def _config(quick: bool) -> dict:
    full = dict(sizes=(2, 5, 10, 20, 50), rhos=trials.RHOS, folds=4, n=2000, d=50,
                replicates=20, repeats=10, mlp_repeats=2, steps=200, lr=2e-3)  # fmt: skip
    if quick:
        full.update(sizes=(2, 10), rhos=(0.0, 0.1, 1.0), folds=2, n=300, d=10, replicates=3,
                    repeats=1, mlp_repeats=1, steps=20)  # fmt: skip
    return full


def _ms(v) -> str:
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}"


def _compare(a, b) -> str:
    """'yes' where mean(a) is lower (better) than mean(b) by more than the larger std."""
    gap, spread = np.mean(b) - np.mean(a), max(np.std(a), np.std(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def _collect(runs: list[dict], sizes, keys) -> dict:
    """``{key: {k: [value per seed]}}`` from per-seed trial results."""
    return {key: {k: [r[k][key] for r in runs] for k in sizes} for key in keys}


def _table(data: dict, sizes, rows: dict[str, str], extra: dict[str, float] | None = None):
    out = ["| estimator | " + " | ".join(f"k = {k}" for k in sizes) + " |"]
    out.append("|---|" + "---|" * len(sizes))
    for key, label in rows.items():
        out.append(f"| {label} | " + " | ".join(_ms(data[key][k]) for k in sizes) + " |")
    for label, value in (extra or {}).items():
        out.append(f"| {label} | " + " | ".join([_ms(value)] * len(sizes)) + " |")
    return out


def _interpolation_verdict(label: str, data: dict, sizes) -> Verdict:
    calls, parts = [], []
    for k in sizes:
        best = min(("bag", "instance"), key=lambda a: np.mean(data[a][k]))
        calls.append(_compare(data["interpolating"][k], data[best][k]))
        parts.append(f"k={k}: {np.mean(data['interpolating'][k]):.3f} vs {best} "
                     f"{np.mean(data[best][k]):.3f} ({calls[-1]})")  # fmt: skip
    wins, losses = calls.count("yes"), calls.count("no")
    verdict = ("partly" if wins else "no") if losses else ("yes" if wins else "tie")
    return Verdict(f"{label}: the interpolating estimator (rho by CV over bags) is at least as "
                   "good as the better of bag and instance level, and better somewhere",
                   verdict, "; ".join(parts))  # fmt: skip


def _verdicts(res: dict, sizes, n: int, d: int) -> list[Verdict]:
    syn = res["synthetic"]
    ok = [k for k in sizes if n // k > d + 1]
    small = [np.mean(syn["bag_bias2"][k]) < 0.1 * min(np.mean(syn["instance_bias2"][k]),
             np.mean(syn["bag_var"][k])) for k in ok]  # fmt: skip
    ev = "; ".join(f"k={k}: bag bias^2 {np.mean(syn['bag_bias2'][k]):.4f}, variance "
                   f"{np.mean(syn['bag_var'][k]):.4f}" for k in ok)  # fmt: skip
    out = [Verdict("The bag-level estimator is unbiased (linear model, random bags, more bags "
                   "than parameters)", "yes" if all(small) else "partly" if any(small) else "no",
                   f"bias^2 below 10% of both its variance and the instance-level bias^2 at "
                   f"{sum(small)}/{len(ok)} bag sizes; {ev}")]  # fmt: skip
    biased = [_compare(syn["bag_bias2"][k], syn["instance_bias2"][k]) for k in sizes]
    lowvar = [_compare(syn["instance_var"][k], syn["bag_var"][k]) for k in sizes]
    both = [b == "yes" and v == "yes" for b, v in zip(biased, lowvar, strict=True)]
    out.append(Verdict(
        "The instance-level estimator is biased but has lower variance than the bag-level one",
        "yes" if all(both) else "partly" if any(both) else "no",
        "; ".join(f"k={k}: bias^2 {np.mean(syn['instance_bias2'][k]):.3f} vs "
                  f"{np.mean(syn['bag_bias2'][k]):.3f}, variance "
                  f"{np.mean(syn['instance_var'][k]):.3f} vs {np.mean(syn['bag_var'][k]):.3f}"
                  for k in sizes),
    ))  # fmt: skip
    names = {"synthetic": "linear model", "diabetes_linear": "diabetes, linear",
             "diabetes_mlp": "diabetes, MLP"}  # fmt: skip
    out += [_interpolation_verdict(names[s], res[s], sizes) for s in SETTINGS]
    cross, parts = 0, []
    for s in SETTINGS:
        lo, hi = sizes[0], sizes[-1]
        a = _compare(res[s]["bag"][lo], res[s]["instance"][lo])
        b = _compare(res[s]["instance"][hi], res[s]["bag"][hi])
        cross += a == "yes" and b == "yes"
        parts.append(f"{names[s]}: bag better at k={lo} ({a}), instance better at k={hi} ({b})")
    out.append(Verdict(
        "Bag level wins for small bags and instance level for large bags (few bags per "
        "parameter): this library's reading of the paper's bag-size analysis",
        "yes" if cross == len(SETTINGS) else "partly" if cross else "no", "; ".join(parts),
    ))  # fmt: skip
    return out


def _plot(res: dict, sizes, rhos, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.6))
    panels = [(axes[0, 0], "synthetic", "linear model: risk / Var(y)"),
              (axes[1, 0], "diabetes_linear", "diabetes, linear: test MSE / Var(y)"),
              (axes[1, 1], "diabetes_mlp", "diabetes, MLP: test MSE / Var(y)")]  # fmt: skip
    for ax, setting, title in panels:
        for arm, style in zip(trials.ARMS, ("o-", "s-", "^-"), strict=True):
            m = [np.mean(res[setting][arm][k]) for k in sizes]
            s = [np.std(res[setting][arm][k]) for k in sizes]
            ax.errorbar(sizes, m, yerr=s, fmt=style, ms=4, capsize=2, label=LABELS[arm])
        if "individual" in res[setting]:
            ax.axhline(np.mean(res[setting]["individual"]), color="k", ls=":", label="k = 1")
        ax.set(xscale="log", yscale="log", xlabel="bag size k", title=title)
    ax = axes[0, 1]
    for arm, color in (("bag", "C0"), ("instance", "C1")):
        for part, style in (("bias2", "-"), ("var", "--")):
            m = [max(np.mean(res["synthetic"][f"{arm}_{part}"][k]), 1e-4) for k in sizes]
            ax.plot(sizes, m, style, color=color, marker="o", ms=3, label=f"{arm} {part}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="bag size k",
        title="linear model: bias^2 (<= 1e-4 drawn at 1e-4), variance",
    )
    ax = axes[0, 2]
    for k in sizes:
        curve = np.mean(res["synthetic"]["curve"][k], axis=0)
        ax.plot(rhos, curve, "o-", ms=3, label=f"k = {k}")
    ax.set(xlabel="rho", title="linear model: risk / Var(y) vs fixed rho")
    ax.set_xscale("symlog", linthresh=min(r for r in rhos if r > 0))
    ax = axes[1, 2]
    for arm, style in zip(trials.ARMS, ("o--", "s--", "^--"), strict=True):
        m = [np.mean(res["diabetes_linear"][f"sorted_{arm}"][k]) for k in sizes]
        ax.plot(sizes, m, style, ms=4, label=f"{arm}, sorted bags")
    ax.set(
        xscale="log", yscale="log", xlabel="bag size k", title="diabetes, linear: PC1-sorted bags"
    )
    for i, ax in enumerate(axes.flat):
        if i != 2:  # bag size on a log axis, labelled at the sizes used
            ax.set_xticks(sizes, [str(k) for k in sizes])
            ax.xaxis.set_minor_formatter(NullFormatter())
        if i not in (1, 2):
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _run_seeds(c: dict, seeds: int, x: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """Per-seed results of the three settings, and the seconds each took."""
    from tqdm.auto import tqdm

    sizes, rhos, folds, test_size = c["sizes"], c["rhos"], c["folds"], len(y) // 5
    runs: dict[str, list] = {s: [] for s in SETTINGS}
    seconds = dict.fromkeys(SETTINGS, 0.0)
    calls = {
        "synthetic": lambda seed: trials.synthetic_trial(
            seed, n=c["n"], d=c["d"], sigma=1.0, bag_sizes=sizes, replicates=c["replicates"],
            rhos=rhos, folds=folds),
        "diabetes_linear": lambda seed: trials.diabetes_linear_trial(
            seed, x, y, bag_sizes=sizes, repeats=c["repeats"], rhos=rhos, folds=folds,
            test_size=test_size),
        "diabetes_mlp": lambda seed: trials.diabetes_mlp_trial(
            seed, x, y, bag_sizes=sizes, repeats=c["mlp_repeats"], rhos=rhos, folds=folds,
            test_size=test_size, hidden=32, steps=c["steps"], lr=c["lr"], weight_decay=0.1),
    }  # fmt: skip
    for seed in tqdm(range(seeds), desc="aggregate demo", unit="seed"):
        for setting, call in calls.items():
            tic = time.perf_counter()
            runs[setting].append(call(seed))
            seconds[setting] += time.perf_counter() - tic
    return runs, seconds


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Bag-level vs instance-level vs interpolating estimators on the linear model and on
    diabetes (linear and MLP); see the module docstring. ``data_dir`` is not used: the
    diabetes data ships with scikit-learn."""
    from threadpoolctl import threadpool_limits

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = _config(quick)
    sizes, rhos, folds = c["sizes"], c["rhos"], c["folds"]
    x, y = trials.load_diabetes_data()
    test_size = len(y) // 5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is many times faster on busy cores
    try:
        with threadpool_limits(1):
            runs, seconds = _run_seeds(c, seeds, x, y)
    finally:
        torch.set_num_threads(threads)
    arms = [*trials.ARMS, "rho"]
    res = {
        "synthetic": _collect(runs["synthetic"], sizes, arms + ["curve"] + [
            f"{a}_{p}" for a in trials.ARMS for p in ("bias2", "var")]),
        "diabetes_linear": _collect(runs["diabetes_linear"], sizes,
                                    arms + [f"sorted_{a}" for a in arms]),
        "diabetes_mlp": _collect(runs["diabetes_mlp"], sizes, arms),
    }  # fmt: skip
    for s in ("diabetes_linear", "diabetes_mlp"):
        res[s]["individual"] = [r["individual"] for r in runs[s]]
    res["synthetic"]["oracle"] = {k: [min(v) for v in res["synthetic"]["curve"][k]] for k in sizes}
    plot = f"{NAME}_plot.png"
    _plot(res, sizes, rhos, out_dir / plot)
    verdicts = _verdicts(res, sizes, c["n"], c["d"])
    rows = {**LABELS, "rho": "rho chosen (mean)"}
    md = [
        f"Learning from bag means only: the training responses are replaced by the mean "
        f"response of random bags of size k (m = n // k bags; leftover instances join bags), "
        f"{seeds} seed(s), mean ± std over seeds. Estimators: bag level (rho = 0), instance "
        f"level (rho = 1) and the interpolating loss `|B|(ybar - fbar)^2 + rho * sum (f_i - "
        f"fbar)^2` with rho from {list(rhos)} chosen by {folds}-fold cross-validation over "
        "bags (held-out size-weighted bag loss; no individual response used). Errors are "
        "mean squared errors divided by Var(y).",
        "",
        f"**Linear model** (the paper's setting): x ~ N(0, I_{c['d']}), y = x'w + e, "
        f"||w|| = 1, e ~ N(0, 1) (SNR 1), n = {c['n']} training instances, closed-form fits "
        f"with an intercept, exact risk; {c['replicates']} replicate training sets per seed "
        "(w fixed per seed) give bias^2 (corrected for the finite number of replicates) and "
        "variance of the fitted parameters, in units of Var(y) = 2. 'best fixed rho' is the "
        "lowest risk over the rho grid in hindsight.",
        "",
        *_table(res["synthetic"], sizes, {**rows, "oracle": "best fixed rho (oracle)"}),
        "",
        *_table(res["synthetic"], sizes, {f"{a}_{p}": f"{a} {p}" for a in ("bag", "instance")
                                          for p in ("bias2", "var")}),  # fmt: skip
        "",
        f"**Diabetes, linear** (scikit-learn's diabetes: 442 patients, 10 features; "
        f"{len(y) - test_size} train / {test_size} test per seed, features standardised on "
        f"the training split; {c['repeats']} random baggings per split). 'sorted' bags group "
        "consecutive instances along the first principal component of the features (a "
        "curated construction that is not from the paper). k = 1 is least squares on the "
        "individual responses.",
        "",
        *_table(res["diabetes_linear"], sizes,
                {**rows, **{f"sorted_{a}": f"{a}, sorted bags" for a in (*trials.ARMS, "rho")}},
                {"individual responses (k = 1)": res["diabetes_linear"]["individual"]}),
        "",
        f"**Diabetes, MLP**: 10-32-1 ReLU networks, AdamW (lr {c['lr']}, weight decay 0.1), "
        f"{c['steps']} full-batch steps on the torch losses "
        "(`aggregate_interpolating_loss`, `within_bag_scatter`); every rho x fold model is "
        "trained in one batch; "
        f"{c['mlp_repeats']} random baggings per split.",
        "",
        *_table(res["diabetes_mlp"], sizes, rows,
                {"individual responses (k = 1)": res["diabetes_mlp"]["individual"]}),
        "",
        f"![bag-level vs instance-level]({plot})",
        "",
        f"Timings: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}.",
    ]  # fmt: skip
    data = {"settings": {s: {key: {str(k): v for k, v in d.items()} if isinstance(d, dict)
                             else d for key, d in res[s].items()} for s in SETTINGS},
            "sizes": list(sizes), "rhos": list(rhos), "seeds": seeds, "quick": quick,
            "seconds": seconds}  # fmt: skip
    return DemoResult(name=NAME, title=TITLE, papers=(48,), markdown="\n".join(md),
                      verdicts=verdicts, data=data,
                      seconds=time.perf_counter() - start)  # fmt: skip
