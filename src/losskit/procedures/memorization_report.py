"""Verdicts, tables, plot and raw numbers of the memorization demonstration
(:mod:`losskit.procedures.memorization_demo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from losskit.procedures.memorization_demo import (
    BUCKETS,
    FRACTION,
    LAM,
    NOISE,
    TAIL,
    TAU,
    Data,
    Sizes,
)

HIGH_INFLUENCE = 0.5  # pairs at or above this influence count as high-influence pairs
SHOWN = 10  # questions and pairs listed


@dataclass
class Results:
    """Everything the demo measured: the ridge sweep (one dict per ``lam``), per-seed clean,
    flipped-label and removal results, and the estimates pooled over the seeds."""

    sizes: Sizes
    data: Data
    sweep: list[dict]
    clean: list[dict]
    noisy: list[dict]
    removal: list[dict]
    pooled: dict
    seeds: int
    quick: bool


def ms(values: Any, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of ``scale * values``."""
    v = scale * np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def removal_accuracy(res: Results, arm: str, key: str) -> np.ndarray:
    """[seeds, fractions] test accuracy of ``arm`` on ``key`` (all / tail / head)."""
    return np.array([[a[key] for a in r[arm]] for r in res.removal])


def high_influence(res: Results) -> dict[str, Any]:
    """Pairs with pooled influence >= ``HIGH_INFLUENCE``: count, test questions they reach,
    share with the same label, share of those test questions in tail classes."""
    d, infl = res.data, np.nan_to_num(res.pooled["influence"], nan=-np.inf)
    i, j = np.nonzero(infl >= HIGH_INFLUENCE)
    tests = np.unique(j)
    return {
        "pairs": int(len(i)),
        "test_questions": int(len(tests)),
        "same_label": float(np.mean(d.y[i] == d.y_test[j])) if len(i) else float("nan"),
        "tail_share": float(np.mean(d.tail_test[tests])) if len(tests) else float("nan"),
        "test_tail_share": float(np.mean(d.tail_test)),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _examples(res: Results) -> list[str]:
    d, p = res.data, res.pooled
    names, counts = d.class_names, d.counts
    score = np.nan_to_num(p["score"], nan=-np.inf)
    tiebreak = np.random.default_rng(0).random(len(score))
    lines = [
        "| mem | label (training questions) | predicted by the models without it | question |",
        "|---|---|---|---|",
    ]
    for i in np.lexsort((tiebreak, -score))[:SHOWN]:
        pred = names[p["out_pred"][i]] if p["out_pred"][i] >= 0 else "–"
        lines.append(
            f"| {p['score'][i]:.2f} | {names[d.y[i]]} ({counts[d.y[i]]}) | {pred} | "
            f"{_cell(d.texts[i])} |"
        )
    infl = np.nan_to_num(p["influence"], nan=-np.inf)
    tiebreak = np.random.default_rng(1).random(infl.size)
    lines += [
        "",
        f"Highest-influence pairs (influence of the training question on the test question, "
        f"pooled over {p['models']} models):",
        "",
        "| infl | mem of the training question | training question (label) | "
        "test question (label) |",
        "|---|---|---|---|",
    ]
    for flat in np.lexsort((tiebreak, -infl.ravel()))[:SHOWN]:
        i, j = divmod(int(flat), infl.shape[1])
        lines.append(
            f"| {infl[i, j]:.2f} | {p['score'][i]:.2f} | {_cell(d.texts[i])} ({names[d.y[i]]}) "
            f"| {_cell(d.texts_test[j])} ({names[d.y_test[j]]}) |"
        )
    return lines


def markdown(res: Results, plot_name: str) -> str:
    d, sz, c, nz = res.data, res.sizes, res.clean, res.noisy
    counts, tail = d.counts, d.counts < TAIL
    size = counts[d.y]
    lines = [
        f"TREC-50 questions ({len(d.y)} training / {len(d.y_test)} test, "
        f"{len(counts)} fine classes with {counts.max()} down to {counts.min()} training "
        f"questions) as frozen all-MiniLM-L6-v2 embeddings. Tail: the {tail.sum()} classes "
        f"with fewer than {TAIL} training questions ({int(tail[d.y].sum())} training / "
        f"{int(d.tail_test.sum())} test questions). Model: kernel ridge regression on "
        f"one-hot labels, k(x, x') = exp((x.x' - 1) / {TAU:g}), ridge lam = {LAM} "
        f"(training accuracy {100 * res.sweep[0]['train']:.1f} %, test "
        f"{100 * res.sweep[0]['all']:.1f} % on the whole training set). Per seed: "
        f"{sz.models} models on random {100 * FRACTION:.0f} % subsets (clean labels), "
        f"{sz.noisy_models} more with {100 * NOISE:.0f} % of the training labels flipped to "
        f"another class ({nz[0]['n_flipped']} questions), and the removal refits. "
        f"{res.seeds} seed(s), mean ± std over seeds. Pooled over the seeds: "
        f"{res.pooled['models']} clean models, every question left out by at least "
        f"{res.pooled['n_out_min']} of them."
        + (" Quick setting: a subset of the training set and few models." if res.quick else ""),
        "",
        f"![Memorization on TREC-50]({plot_name})",
        "",
        "| subsampling estimate (per seed) | value |",
        "|---|---|",
        f"| test accuracy of the subset models (%) | {ms([s['test_accuracy'] for s in c])} |",
        f"| accuracy on training questions they saw (%) | {ms([s['acc_in'] for s in c])} |",
        f"| accuracy on training questions they did not see (%) | "
        f"{ms([s['acc_out'] for s in c])} |",
        f"| questions with mem >= 0.5 (%) | {ms([s['high_share'] for s in c])} |",
        f"| questions without an estimate (never left out) (%) | "
        f"{ms([s['nan_share'] for s in c])} |",
        "",
        "| class size (training questions) | classes | training questions | mean mem |",
        "|---|---|---|---|",
    ]
    for b, (lo, hi) in enumerate(BUCKETS):
        label = f"{lo}-{hi - 1}" if hi < 10**6 else f">= {lo}"
        n_cls = int(((counts >= lo) & (counts < hi)).sum())
        n_q = int(((size >= lo) & (size < hi)).sum())
        lines.append(f"| {label} | {n_cls} | {n_q} | {ms([s['buckets'][b] for s in c], 1, 3)} |")
    lines += [
        "",
        f"Spearman correlation of class size and class-mean mem over the classes: "
        f"{ms([s['spearman'] for s in c], 1, 2)}.",
        "",
        f"| {100 * NOISE:.0f} % flipped labels | flipped | clean |",
        "|---|---|---|",
        f"| mean mem | {ms([s['flipped'] for s in nz], 1, 3)} | "
        f"{ms([s['clean'] for s in nz], 1, 3)} |",
        f"| mem >= 0.5 (%) | {ms([s['flipped_high'] for s in nz])} | "
        f"{ms([s['clean_high'] for s in nz])} |",
        "",
        f"AUROC of mem for finding the flipped labels: {ms([s['auroc'] for s in nz], 1, 3)}.",
        "",
        "Test accuracy (%) after removing the top-mem training questions (this seed's "
        "estimate) or as many random ones, refitted on the rest:",
        "",
        "| removed | questions | all: top mem | all: random | tail: top mem | tail: random "
        "| head: top mem | head: random |",
        "|---|---|---|---|---|---|---|---|",
        f"| none | 0 | {100 * res.sweep[0]['all']:.1f} | | {100 * res.sweep[0]['tail']:.1f} "
        f"| | {100 * res.sweep[0]['head']:.1f} | |",
    ]
    arms = {
        (a, k): removal_accuracy(res, a, k)
        for a in ("top", "random")
        for k in ("all", "tail", "head")
    }
    for f, q in enumerate(sz.removal):
        cells = [ms(arms[(a, k)][:, f]) for k in ("all", "tail", "head") for a in ("top", "random")]
        lines.append(
            f"| {100 * q:.0f} % | {int(round(q * len(d.y)))} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Ridge sweep on the whole training set (one deterministic fit each):",
        "",
        "| lam | training accuracy | test | tail | head |",
        "|---|---|---|---|---|",
        *(
            f"| {lam:g} | {100 * s['train']:.1f} | {100 * s['all']:.1f} | {100 * s['tail']:.1f} "
            f"| {100 * s['head']:.1f} |"
            for lam, s in zip(sz.lambdas, res.sweep, strict=True)
        ),
        "",
        f"Most memorized training questions (pooled over {res.pooled['models']} models; ties "
        "in random order):",
        "",
        *_examples(res),
    ]
    h = high_influence(res)
    lines += [
        "",
        f"Pairs with influence >= {HIGH_INFLUENCE}: {h['pairs']}, reaching "
        f"{h['test_questions']} test questions; {100 * h['same_label']:.0f} % of the pairs "
        f"share the label; {100 * h['tail_share']:.0f} % of those test questions are in tail "
        f"classes (test set: {100 * h['test_tail_share']:.0f} %).",
        "",
        "Notes: the estimator measures memorization by the algorithm on random 70 % subsets, "
        "not on the full training set; a question left out by few models gets a noisy "
        "score (its standard error is about 0.5 / sqrt(models left out)), so the "
        "tables average over questions and the example lists use the pooled estimate. The "
        "paper itself is theory; its claims are checked here through Feldman & Zhang's "
        "estimator and removal experiment, on text instead of images. Verdict rule: 'yes' "
        "where the mean per-seed difference is positive and larger than its std, 'no' where "
        "it is negative and larger than its std, 'tie' otherwise; over several removal sizes "
        "'yes' needs every size, 'partly' some.",
    ]
    return "\n".join(lines)


def raw(res: Results) -> dict[str, Any]:
    """JSON-serialisable numbers: per-seed statistics, the sweep, the removal accuracies, the
    class sizes with their pooled class-mean scores, and the high-influence summary."""
    drop = {"score"}
    return {
        "sizes": {
            "n_train": len(res.data.y),
            "n_test": len(res.data.y_test),
            "models": res.sizes.models,
            "noisy_models": res.sizes.noisy_models,
            "removal": list(res.sizes.removal),
            "lambdas": list(res.sizes.lambdas),
        },
        "clean": [{k: v for k, v in s.items() if k not in drop} for s in res.clean],
        "noisy": [{k: v for k, v in s.items() if k != "flipped_scores"} for s in res.noisy],
        "removal": res.removal,
        "sweep": res.sweep,
        "class_sizes": res.data.counts.tolist(),
        "class_mean_mem": [None if np.isnan(v) else float(v) for v in res.pooled["class_means"]],
        "pooled_models": res.pooled["models"],
        "high_influence": high_influence(res),
        "seeds": res.seeds,
        "quick": res.quick,
    }
