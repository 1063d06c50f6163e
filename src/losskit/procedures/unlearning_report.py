"""Tables, verdicts and plot of the unlearning demonstration
(:mod:`losskit.procedures.unlearning_demo`).

Verdict rules, per dataset and task (means over seeds, in points of %):

- "approaches retraining while keeping accuracy": LAF's forget accuracy covers at least 3/4 of
  the way from the original model's to retraining's, ``|LAF - retrain| <= |original - retrain|
  / 4`` (or within 1 point where the two differ by less than 1 point), and its retain and test
  accuracy are at most ``KEEP`` points below retraining's. 'yes' when both hold, 'partly' when
  one does, 'no' otherwise.
- "closer to retraining than fine-tuning": per seed, the distance to that seed's retrained
  model ``|d forget| + |d test| + |d MIA|``; 'yes' where fine-tuning's minus LAF's is larger
  than its standard deviation over seeds, 'no' where it is smaller than minus that, 'tie'
  otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from losskit.arena.demos import Verdict

METHODS = ("original", "retrain", "fine-tune", "LAF")
LABELS = {
    "original": "original",
    "retrain": "retrain from scratch (labels)",
    "fine-tune": "fine-tune on remaining (labels)",
    "LAF": "LAF (no labels)",
}
TASK_TITLES = {"class": "one whole class", "random": "a random 10 % of the training rows"}
DATA_TITLES = {"digits": "digits", "trec6": "TREC-6"}
KEEP = 2.0


def _values(runs: list[dict], method: str, key: str) -> np.ndarray:
    return np.array([100 * r["scores"][method][key] for r in runs], dtype=float)


def ms(v: np.ndarray) -> str:
    """``mean ± std`` with one decimal."""
    return f"{np.mean(v):.1f} ± {np.std(v):.1f}"


def table(runs: list[dict], task: str) -> list[str]:
    keys = ["forget", "retain", "test"] + (["test_forgotten_class"] if task == "class" else [])
    names = {
        "forget": "forget acc.",
        "retain": "retain acc.",
        "test": "test acc." + (" (other classes)" if task == "class" else ""),
        "test_forgotten_class": "test acc. (forgotten class)",
        "mia": "MIA score",
    }
    cols = [*keys, "mia"]
    lines = [
        "| method | " + " | ".join(names[k] for k in cols) + " |",
        "|---" * (1 + len(cols)) + "|",
    ]
    for m in METHODS:
        lines.append(f"| {LABELS[m]} | " + " | ".join(ms(_values(runs, m, k)) for k in cols) + " |")
    return lines


def _approach(runs: list[dict]) -> tuple[str, str]:
    keys = ("forget", "retain", "test")
    mean = {m: {k: _values(runs, m, k).mean() for k in keys} for m in METHODS}
    gap = abs(mean["original"]["forget"] - mean["retrain"]["forget"])
    miss = abs(mean["LAF"]["forget"] - mean["retrain"]["forget"])
    close = miss <= (gap / 4 if gap >= 1.0 else 1.0)
    drops = {k: mean["retrain"][k] - mean["LAF"][k] for k in ("retain", "test")}
    keep = max(drops.values()) <= KEEP
    verdict = "yes" if close and keep else "partly" if close or keep else "no"
    evidence = (
        f"forget acc. LAF {mean['LAF']['forget']:.1f} vs retrain {mean['retrain']['forget']:.1f} "
        f"(original {mean['original']['forget']:.1f}, fine-tune "
        f"{mean['fine-tune']['forget']:.1f}); retain / test acc. LAF {mean['LAF']['retain']:.1f}"
        f" / {mean['LAF']['test']:.1f} vs retrain {mean['retrain']['retain']:.1f} / "
        f"{mean['retrain']['test']:.1f} %"
    )
    return verdict, evidence


def _distance(runs: list[dict], method: str) -> np.ndarray:
    keys = ("forget", "test", "mia")
    return sum(np.abs(_values(runs, method, k) - _values(runs, "retrain", k)) for k in keys)


def _closer(runs: list[dict]) -> tuple[str, str]:
    laf, ft = _distance(runs, "LAF"), _distance(runs, "fine-tune")
    gain = ft - laf
    mean, std = float(gain.mean()), float(gain.std())
    verdict = "yes" if mean > std and mean > 0 else "no" if mean < -std and mean < 0 else "tie"
    mia = {m: ms(_values(runs, m, "mia")) for m in ("LAF", "fine-tune", "retrain")}
    evidence = (
        f"distance to retraining (|d forget| + |d test| + |d MIA|, points): LAF {ms(laf)}, "
        f"fine-tune {ms(ft)}; MIA LAF {mia['LAF']}, fine-tune {mia['fine-tune']}, retrain "
        f"{mia['retrain']} %"
    )
    return verdict, evidence


def verdicts(results: dict[str, dict]) -> list[Verdict]:
    out = []
    for name, r in results.items():
        for task, runs in r["runs"].items():
            where = f"{DATA_TITLES.get(name, name)}, {TASK_TITLES[task]}"
            v, e = _approach(runs)
            out.append(
                Verdict(
                    f"{where}: LAF, without labels, approaches retraining on forget accuracy "
                    "while keeping retain and test accuracy",
                    v,
                    e,
                )
            )
            v, e = _closer(runs)
            out.append(
                Verdict(
                    f"{where}: LAF (no labels) ends closer to retraining than fine-tuning (labels)",
                    v,
                    e,
                )
            )
    return out


def markdown(
    results: dict[str, dict], *, settings: dict, seeds: int, quick: bool, plot_name: str
) -> str:
    """The demo's markdown section: setting, sizes, one table per dataset and task, plot."""
    train, laf, temp = settings["train"], settings["laf"], settings["temperature"]
    lines = [
        f"Setting{' (quick smoke run)' if quick else ''}: the arena's MLP (2 x 256 ReLU; the "
        "encoder is all but the last linear layer) trained with Adam (lr "
        f"{train['lr']}, batch {train['batch_size']}, {train['epochs']} epochs);"
        f" retraining repeats that recipe on the remaining rows; fine-tuning trains the "
        f"original {settings['finetune_epochs']} more epochs on them; both use labels. LAF gets "
        f"only the inputs: VAEs (latent {laf['latent_dim']}, {laf['vae_epochs']} epochs), "
        f"then about {settings['laf_steps']} alternating UE / RA steps of batch "
        f"{laf['batch_size']} (lr_ue {laf['lr_ue']}, lr_ra {laf['lr_ra']}, T = "
        f"{temp['class']:g} for class and {temp['random']:g} for random"
        f" removal). {seeds} seeds (data subsample, split, initialisation, batch order); mean ± "
        "std in %.",
        "",
        "MIA score: cross-validated accuracy of a logistic-regression attack on the sorted "
        "log-softmax outputs, forgotten training rows against test rows of the same "
        "distribution (class removal: the forgotten class's test rows), balanced; 50 % = "
        "indistinguishable from unseen data.",
        "",
        "| dataset | training rows | test rows | forgotten class | forget rows (class / random)"
        " | LAF epochs (class / random) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        sz = {t: r["runs"][t][0]["sizes"] for t in r["runs"]}
        lines.append(
            f"| {DATA_TITLES.get(name, name)} | {r['train']} | {r['test']} | "
            f"{r['forget_class']} | {sz['class']['forget']} / {sz['random']['forget']} | "
            f"{sz['class']['laf_epochs']} / {sz['random']['laf_epochs']} |"
        )
    for name, r in results.items():
        for task, runs in r["runs"].items():
            lines += ["", f"**{DATA_TITLES.get(name, name)}, forgetting {TASK_TITLES[task]}**", ""]
            lines += table(runs, task)
    lines += [
        "",
        f"![LAF trajectory against the baselines]({plot_name})",
        "",
        "The plot follows LAF step by step (forget and test accuracy, mean over seeds) against "
        "the end points of retraining and fine-tuning. Without labels LAF has no signal for "
        "when to stop: the step budget alone sets how far the forgotten representations are "
        "pushed.",
        "",
        "Verdict rules: 'approaches retraining' needs LAF's forget accuracy within a quarter of "
        "the original-to-retrain gap of retraining's (within 1 point where that gap is under 1 "
        f"point) and retain and test accuracy at most {KEEP:g} points below retraining's "
        "('partly': one of the two). 'Closer than fine-tuning' compares, seed by seed, the "
        "distance to the retrained model, |d forget| + |d test| + |d MIA| in points: 'yes' / "
        "'no' where the mean difference exceeds its std over seeds, 'tie' otherwise.",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Per dataset and task: LAF's forget and test accuracy against its steps, with the
    original, retrained and fine-tuned models as horizontal lines (means over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(n, t) for n in results for t in results[n]["runs"]]
    rows = math.ceil(len(panels) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(9.5, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, task) in zip(axes.flat, panels, strict=False):
        runs = results[name]["runs"][task]
        steps = runs[0]["trajectory"]["step"]
        for key, color in (("forget", "C3"), ("test", "C0")):
            curve = 100 * np.mean([r["trajectory"][key] for r in runs], axis=0)
            ax.plot(steps, curve, color=color, label=f"LAF {key}")
            for m, style in (("retrain", "--"), ("fine-tune", ":")):
                ax.axhline(_values(runs, m, key).mean(), color=color, ls=style, lw=1)
        ax.plot([], [], "k--", lw=1, label="retrain")
        ax.plot([], [], "k:", lw=1, label="fine-tune")
        ax.set_title(f"{DATA_TITLES.get(name, name)}: {task} removal", fontsize=9)
        ax.set_xlabel("LAF step")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
