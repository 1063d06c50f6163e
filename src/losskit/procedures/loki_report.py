"""Tables, plot and markdown of the Loki demonstration (:mod:`losskit.procedures.loki_demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from losskit.procedures import loki_tasks as tasks


def ms(values: Any, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of ``scale * values``."""
    v = scale * np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def hit_rate(run: dict) -> str:
    """``mean ± std`` (in %) of the hit rate over the seeds that made unobserved predictions,
    with their count when some made none; '–' when none did."""
    v = np.asarray(run["hit_rate"], dtype=float)
    v = v[~np.isnan(v)]
    if not v.size:
        return "–"
    note = f" ({v.size} of {len(run['hit_rate'])} seeds)" if v.size < len(run["hit_rate"]) else ""
    return ms(v) + note


def table(runs: dict, ref: str, names_col: bool) -> list[str]:
    """One row per rule: accuracy, held-out-class accuracy, unobserved share and hit rate
    (in %), E[d²]."""
    cols = [
        "rule",
        "test accuracy",
        "held-out-class accuracy",
        "unobserved predictions",
        "hits among them",
        f"E[d²] {ref}",
    ] + (["E[d²] names"] if names_col else [])
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for rule, r in runs.items():
        cells = [
            ms(r["accuracy"]),
            ms(r["held_out_accuracy"]),
            ms(r["unobserved_share"]),
            hit_rate(r),
            ms(r["esd"], 1.0, 3),
        ] + ([ms(r["esd_names"], 1.0, 3)] if names_col else [])
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict[str, tuple[dict, str]], path: Path) -> None:
    """Per dataset (``label -> (runs, name of the E[d²] metric)``): held-out-class accuracy,
    and the paired changes of test accuracy and E[d²] against argmax, of every rule (mean ±
    std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(15, 3.8 * len(results)), squeeze=False)
    for row, (label, (runs, ref)) in zip(axes, results.items(), strict=True):
        rules = [r for r in runs if r != "Loki, discrete"]
        acc, esd = np.asarray(runs["argmax"]["accuracy"]), np.asarray(runs["argmax"]["esd"])
        panels = {
            "held-out-class accuracy (%)": [
                100 * np.asarray(runs[r]["held_out_accuracy"]) for r in rules
            ],
            "test accuracy change against argmax (points)": [
                100 * (np.asarray(runs[r]["accuracy"]) - acc) for r in rules
            ],
            f"E[d²] ({ref}) change against argmax (%)": [
                100 * (np.asarray(runs[r]["esd"]) / esd - 1) for r in rules
            ],
        }
        for ax, (title, vals) in zip(row, panels.items(), strict=True):
            ax.bar(
                range(len(rules)),
                [v.mean() for v in vals],
                yerr=[v.std() for v in vals],
                color=["0.6"] + ["C0"] * (len(rules) - 1),
                capsize=3,
            )
            ax.set_xticks(
                range(len(rules)),
                [r.removeprefix("Loki, ") for r in rules],
                rotation=35,
                ha="right",
                fontsize=8,
            )
            ax.set_title(f"{label}: {title}", fontsize=9)
            ax.axhline(0, color="k", lw=0.6)
            ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _full_table(full: dict) -> list[str]:
    lines = ["| rule | test accuracy | E[d²] tree | E[d²] names |", "|---|---|---|---|"]
    for rule, s in full.items():
        lines.append(
            f"| {rule} | {100 * s['accuracy']:.1f} | {s['esd']:.3f} | {s['esd_names']:.3f} |"
        )
    return lines


def markdown(
    trec: Any,
    trec_runs: dict,
    trec_sizes: dict,
    full: dict,
    cifar_runs: dict,
    cifar_sizes: dict,
    seeds: int,
    plot_name: str,
    quick: bool,
) -> str:
    """The demo's markdown section body."""
    comps = ", ".join(map(str, tasks.TREC_COMPONENTS))
    md = [
        f"Logistic-regression probes (scikit-learn, multinomial, L2 with C = 1, L-BFGS) are "
        f"trained on the observed classes only; `argmax` predicts the most probable observed "
        f"class, Loki the Fréchet mean argmin_y Σ_k p_k d(y, λ_k)² over all classes. {seeds} "
        "seed(s); a seed draws the held-out classes. Mean ± std over seeds, in % except E[d²]"
        f"{' (quick settings: subsampled)' if quick else ''}.",
        "",
        f"**TREC-50** (all-MiniLM-L6-v2 question embeddings, {len(trec.y_train)} train / "
        f"{len(trec.y_test)} test questions). Held out: half (rounded down) of the fine classes "
        f"of every coarse class, {50 - trec_sizes['observed'][0]} of 50; the probe sees "
        f"{ms(trec_sizes['train'], 1, 0)} training questions of the "
        f"{trec_sizes['observed'][0]} observed classes. Test accuracy and E[d²] are on the "
        "test split; held-out-class accuracy and the share of unobserved predictions are on "
        "every question of a held-out class, train and test split "
        f"({ms(trec_sizes['unseen'], 1, 0)} questions, none seen in training). Metrics: "
        "`tree` = root → coarse → fine path length (siblings 2, other fine classes 4); "
        "`names` = Euclidean distance between "
        "MiniLM embeddings of the class descriptions (Li & Roth's definitions, e.g. "
        f"'location: cities'), `names, r PCs` the same on their top r = {comps} principal "
        "components; E[d²] is measured under the tree metric and under `names`.",
        "",
        *table(trec_runs, "tree", names_col=True),
    ]
    if full:
        md += [
            "",
            "TREC-50 with all 50 classes observed (one fit):",
            "",
            *_full_table(full),
        ]
    md += [
        "",
        f"**CIFAR-10** ({cifar_sizes['per_train']} training images per observed class, "
        f"{cifar_sizes['test']} test images, 10 classes balanced; features: 2x2-pooled pixels "
        f"whitened to {tasks.CIFAR_PCA} principal components fitted on the observed classes' "
        f"training images). Held out: {tasks.CIFAR_HELD_OUT} of the 10 classes. Metric: "
        "`names` = Euclidean distance between MiniLM embeddings of the class names (the "
        "paper's self-derived metric uses CLIP text embeddings), full or on their top "
        f"{', '.join(map(str, tasks.CIFAR_COMPONENTS))} principal components; E[d²] under "
        "`names`. Held-out-class accuracy on the test images of the held-out classes.",
        "",
        *table(cifar_runs, "names", names_col=False),
        "",
        f"![Loki against argmax]({plot_name})",
        "",
        "Notes. In a two-level hierarchy an unobserved fine class y under coarse class c has "
        "Fréchet variance 4 P_c + 16 (1 − P_c) (P_c: probability on c's observed fine "
        "classes), never below that of an observed class, so Loki with the tree metric cannot "
        "predict held-out fine classes (proved in the tests); it only moves predictions "
        "between observed classes. With a Euclidean class embedding, Loki predicts the class "
        "nearest to the probability-weighted mean embedding Σ_k p_k e_k; in 384 dimensions "
        "the class points are nearly equidistant and rarely nearest to such a mean, while a "
        "few principal components put unobserved classes inside the hull of observed ones. "
        "Verdict rule (paired over seeds): 'yes' where the mean improvement exceeds its std, "
        "'no' where the mean loss does, 'tie' otherwise. A rule 'predicts held-out classes' "
        "when their accuracy is at least 2 % and above its std, and its hits among unobserved "
        "predictions (the "
        "share of its predictions of unobserved classes, on held-out-class examples, that are "
        "right) beat a uniform guess among the held-out classes "
        f"(1/{50 - trec_sizes['observed'][0]} for TREC-50, 1/{tasks.CIFAR_HELD_OUT} for "
        "CIFAR-10).",
    ]
    return "\n".join(md)
