"""Tables, plot and verdicts of the label-error demo (:mod:`label_errors_demo`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from losskit.arena.demos import Verdict
from losskit.labels.label_issues import FILTERS
from losskit.procedures.label_errors_cifar10n import LABEL_SETS

PAPER_REVIEWED, PAPER_VALIDATED = 275, 54  # paper 34, Table 1 (CIFAR-10): CL guessed, validated


def ms(values, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of ``values`` times ``scale``."""
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def _arena_rule(a, b) -> str:
    """'yes' where mean(a) beats mean(b) by more than the larger std, 'no' where it loses by
    that much, 'tie' otherwise."""
    gap, spread = np.mean(a) - np.mean(b), max(np.std(a), np.std(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def _test_table(t: dict) -> list[str]:
    lines = [
        "| selection | flagged | of them reviewed | validated errors found | recall | "
        "precision among reviewed | precision (unreviewed = correct) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in t["rows"].items():
        lines.append(
            f"| {name} | {r['flagged']} | {r['reviewed']} | {r['found']} / {t['confirmed']} | "
            f"{100 * r['recall']:.1f} % | {100 * r['precision_reviewed']:.1f} % | "
            f"{100 * r['precision']:.1f} % |"
        )
    return lines


def _detection_table(parts: dict[str, dict], names: list[str]) -> list[str]:
    head = " | ".join(f"{n}: precision | recall | flagged" for n in names)
    lines = [f"| filter | {head} |", "|---|" + "---|---|---|" * len(names)]
    for f in FILTERS:
        cells = []
        for n in names:
            r = parts[n]
            flagged = ms(r[f + "/flagged"], 1, 0)
            cells.append(f"{ms(r[f + '/precision'])} | {ms(r[f + '/recall'])} | {flagged}")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def markdown(data: dict, plot_name: str) -> str:
    t, c, d, s = data["cifar10_test"], data["cifar10n"], data["digits"], data["setting"]
    seeds = s["seeds"]
    noise_rows = [
        f"| {n} | {ms(c[n]['noise_true'])} | {ms(c[n]['noise_est'])} | {ms(c[n]['acc_clean'])} | "
        f"{ms(c[n]['acc_noisy'])} |"
        for n in LABEL_SETS
    ]
    ap = ", ".join(f"{k} {v:.3f}" for k, v in t["average_precision"].items())
    maj = t["majority"]
    return "\n".join(
        [
            f"![precision and recall of the filters]({plot_name})",
            "",
            "### 1. CIFAR-10 test set: released probabilities vs the human review",
            "",
            f"Paper 34's cross-validated probabilities for the {t['n']:,} test images (argmax "
            f"accuracy {100 * t['accuracy']:.2f} %) and its Mechanical Turk review of "
            f"{t['reviewed']} flagged images (5 workers; a 3-of-5 majority chose the given label "
            f"for {maj['given']}, the guessed label for {maj['guessed']}, neither for "
            f"{maj['neither']}); {t['confirmed']} images without a majority for the given label "
            f"are the validated errors (paper: {PAPER_VALIDATED} of {PAPER_REVIEWED}). Confident "
            f"learning estimates {100 * t['noise_rate']:.2f} % noise ({t['num_issues']} labels). "
            "The paper's rule flags the lowest normalized margins, as many as that estimate. "
            "Images outside the review have unknown status: the last column counts them as "
            f"correct (a lower bound). The low-memory path gives identical masks: "
            f"{t['low_memory_identical']}. Deterministic (no seed).",
            "",
            *_test_table(t),
            "",
            f"Average precision of each label-quality score for ranking the {t['confirmed']} "
            f"validated errors first among the {t['reviewed']} reviewed images: {ap}.",
            "",
            "### 2. CIFAR-10N: finding the human label noise with a cheap model",
            "",
            f"Model: unsupervised k-means patch features (Coates et al. 2011: 6x6 whitened "
            f"patches, {s['centroids']} centroids, stride {s['stride']}, triangle code pooled over "
            f"4 quadrants = {4 * s['centroids']} features; no label is used) and a softmax head "
            f"(L-BFGS, l2 = {s['l2']}, {s['max_iter']} iterations), {s['folds']}-fold "
            f"stratified cross-validation on the noisy labels. Images: a pool of {s['pool']:,} "
            f"training images drawn once; each seed ({seeds} in all) draws {s['subset']:,} of "
            "them and its own folds. Chosen because a CNN per fold and label set does not fit "
            "the CPU budget; the model is weak (accuracy below), which bounds the precision of "
            "any filter. Truth: noisy label != clean label. Mean ± std over seeds, in %.",
            "",
            "| label set | true noise rate | estimated (1 - trace of joint) | accuracy vs clean "
            "| accuracy vs noisy |",
            "|---|---|---|---|---|",
            *noise_rows,
            "",
            *_detection_table(c, list(LABEL_SETS)),
            "",
            "### 3. digits: 5 % flipped labels, strong model",
            "",
            f"All 1,797 sklearn digits{' (quick: 600)' if s['quick'] else ''}, 5 % of labels "
            f"moved to a random other class per seed, {d['folds']}-fold softmax head on the pixels "
            f"(accuracy vs clean labels {ms(d['acc_clean'])} %; true noise "
            f"{ms(d['noise_true'])} %, estimated {ms(d['noise_est'])} %).",
            "",
            *_detection_table({"digits": d}, ["digits"]),
            "",
            f"Sizes: {'quick (smoke) setting' if s['quick'] else 'full setting'}; seeds: {seeds}; "
            f"{data['seconds']:.0f} s.",
        ]
    )


def verdicts(data: dict) -> list[Verdict]:
    t, c, d = data["cifar10_test"], data["cifar10n"], data["digits"]
    paper = t["rows"]["paper's rule (lowest margin)"]
    default = t["rows"]["prune_by_noise_rate"]
    share = PAPER_VALIDATED / PAPER_REVIEWED
    out = [
        Verdict(
            f"CIFAR-10 test: confident learning's candidates hold the {PAPER_VALIDATED} "
            f"human-validated label errors (paper: {PAPER_VALIDATED} of {PAPER_REVIEWED} flagged)",
            "yes" if paper["found"] == t["confirmed"] == PAPER_VALIDATED else "partly",
            f"the review file gives {t['confirmed']} validated of {t['reviewed']}; the paper's "
            f"rule on the released probabilities flags {paper['flagged']} images, "
            f"{paper['reviewed']} of the {t['reviewed']} reviewed and {paper['found']} of the "
            "validated errors; "
            f"cleanlab's default filter finds {default['found']} ({default['flagged']} flagged)",
        ),
        Verdict(
            f"Share of CIFAR-10 candidates humans confirm: {100 * share:.1f} %",
            "yes" if abs(paper["precision"] - share) < 0.03 else "no",
            f"paper's rule: {paper['found']} / {paper['flagged']} = "
            f"{100 * paper['precision']:.1f} % (unreviewed counted as correct); default "
            f"filter {100 * default['precision']:.1f} %",
        ),
    ]
    lift = {
        n: np.mean(c[n]["prune_by_noise_rate/precision"]) / np.mean(c[n]["noise_true"])
        for n in LABEL_SETS
    }
    out.append(
        Verdict(
            "CIFAR-10N: confident learning finds real human label noise well above chance "
            "(precision >= 1.5x the noise rate) from a cheap model's cross-validated probabilities",
            "yes" if min(lift.values()) >= 1.5 else "partly" if max(lift.values()) >= 1.5 else "no",
            "; ".join(
                f"{n}: precision {ms(c[n]['prune_by_noise_rate/precision'])} % vs noise "
                f"{ms(c[n]['noise_true'])} % ({lift[n]:.1f}x), recall "
                f"{ms(c[n]['prune_by_noise_rate/recall'])} %"
                for n in LABEL_SETS
            ),
        )
    )
    rule = {
        n: _arena_rule(c[n]["prune_by_noise_rate/precision"], c[n]["predicted_neq_given/precision"])
        for n in LABEL_SETS
    }
    wins = sum(v == "yes" for v in rule.values())
    out.append(
        Verdict(
            "Confident learning (default filter) is more precise than the argmax baseline "
            "(predicted != given), on CIFAR-10N",
            "yes" if wins == len(rule) else "partly" if wins else "no",
            "; ".join(
                f"{n}: {ms(c[n]['prune_by_noise_rate/precision'])} vs "
                f"{ms(c[n]['predicted_neq_given/precision'])} % ({rule[n]})"
                for n in LABEL_SETS
            ),
        )
    )
    sets = {**{n: c[n] for n in LABEL_SETS}, "digits": d}
    rel = {n: abs(np.mean(r["noise_est"]) / np.mean(r["noise_true"]) - 1) for n, r in sets.items()}
    good = [n for n, v in rel.items() if v <= 0.25]
    out.append(
        Verdict(
            "The estimated noise rate (1 - trace of the calibrated joint) is within 25 % "
            "(relative) of the true rate",
            "yes" if len(good) == len(rel) else "partly" if good else "no",
            "; ".join(
                f"{n}: {ms(r['noise_est'])} vs {ms(r['noise_true'])} %" for n, r in sets.items()
            )
            + " (the weak CIFAR-10N model's own errors count as noise)",
        )
    )
    p, r = np.mean(d["prune_by_noise_rate/precision"]), np.mean(d["prune_by_noise_rate/recall"])
    out.append(
        Verdict(
            "digits, 5 % flipped labels, 5-fold cross-validated linear model: precision and recall "
            "of the flips above 0.7 (the reference map's check)",
            "yes" if min(p, r) > 0.7 else "partly" if max(p, r) > 0.7 else "no",
            f"precision {ms(d['prune_by_noise_rate/precision'])} %, recall "
            f"{ms(d['prune_by_noise_rate/recall'])} % (default filter)",
        )
    )
    return out


def plot(path: Path, data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, c = data["cifar10_test"], data["cifar10n"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(t["rows"])
    found = [t["rows"][n]["found"] for n in names]
    flagged = [t["rows"][n]["flagged"] for n in names]
    xs = np.arange(len(names))
    ax1.bar(xs - 0.2, flagged, 0.4, label="flagged")
    ax1.bar(xs + 0.2, found, 0.4, label=f"validated errors found (of {t['confirmed']})")
    ax1.set_xticks(xs, [n.replace("_", " ") for n in names], rotation=30, ha="right", fontsize=8)
    ax1.set_title("CIFAR-10 test: released probabilities")
    ax1.legend(fontsize=8)
    markers = dict(zip(FILTERS, "osD^v", strict=True))
    for color, n in zip(("C0", "C1", "C2"), LABEL_SETS, strict=True):
        for f in FILTERS:
            p, r = np.array(c[n][f + "/precision"]), np.array(c[n][f + "/recall"])
            ax2.errorbar(
                r.mean(), p.mean(), xerr=r.std(), yerr=p.std(), fmt=markers[f], color=color
            )
        ax2.axhline(np.mean(c[n]["noise_true"]), color=color, ls=":", lw=1)
        ax2.plot([], [], color=color, label=f"{n} (dotted: noise rate)")
    for f in FILTERS:
        ax2.plot([], [], markers[f], color="gray", label=f)
    ax2.set_xlabel("recall of the noisy labels")
    ax2.set_ylabel("precision")
    ax2.set_title("CIFAR-10N: cheap model, cross-validated")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
