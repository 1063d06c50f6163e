"""Verdicts of the memorization demonstration (:mod:`losskit.procedures.memorization_demo`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit.arena.demos import Verdict
from losskit.procedures.memorization_demo import LAM, TAIL
from losskit.procedures.memorization_report import (
    HIGH_INFLUENCE,
    Results,
    high_influence,
    ms,
    removal_accuracy,
)


def paired(diffs: Any) -> str:
    """'yes' where the mean of the per-seed differences is positive and above their std,
    'no' where it is negative and below minus the std, 'tie' otherwise."""
    mean, std = float(np.mean(diffs)), float(np.std(diffs))
    return "yes" if mean > std and mean > 0 else "no" if mean < -std and mean < 0 else "tie"


def combine(verdicts: list[str]) -> str:
    """'yes' if every verdict is yes, 'partly' if some are, else 'no' if any is no, else tie."""
    if all(v == "yes" for v in verdicts):
        return "yes"
    return "partly" if "yes" in verdicts else "no" if "no" in verdicts else "tie"


def verdicts(res: Results) -> list[Verdict]:
    """Six claims: tail and mislabeled examples are memorized more, removing the most
    memorized examples hurts (on the tail above all), fitting the training set pays on the
    tail, and high-influence pairs are same-class pairs from the tail."""
    c, nz, fr = res.clean, res.noisy, res.sizes.removal
    tail, head = [s["tail"] for s in c], [s["head"] for s in c]
    out = [
        Verdict(
            f"Rare classes are memorized more: questions of classes with < {TAIL} training "
            "questions have higher memorization scores than the others",
            paired(np.subtract(tail, head)),
            f"mean mem {ms(tail, 1, 3)} (tail) vs {ms(head, 1, 3)}; Spearman correlation of "
            f"class size and class-mean mem {ms([s['spearman'] for s in c], 1, 2)}",
        ),
        Verdict(
            "Mislabeled examples are memorized: flipped labels get higher scores than clean ones",
            paired([s["flipped"] - s["clean"] for s in nz]),
            f"mean mem {ms([s['flipped'] for s in nz], 1, 3)} (flipped) vs "
            f"{ms([s['clean'] for s in nz], 1, 3)}; AUROC of mem for finding them "
            f"{ms([s['auroc'] for s in nz], 1, 3)}",
        ),
    ]
    top, rnd = (removal_accuracy(res, arm, "all") for arm in ("top", "random"))
    each = [paired(rnd[:, k] - top[:, k]) for k in range(len(fr))]
    out.append(
        Verdict(
            "Removing the most memorized training examples lowers test accuracy more than "
            "removing as many random ones",
            combine(each),
            "; ".join(
                f"{100 * q:.0f} % removed: {ms(top[:, k])} vs {ms(rnd[:, k])} % ({each[k]})"
                for k, q in enumerate(fr)
            ),
        )
    )
    drop = {
        key: removal_accuracy(res, "random", key) - removal_accuracy(res, "top", key)
        for key in ("tail", "head")
    }
    each = [paired(drop["tail"][:, k] - drop["head"][:, k]) for k in range(len(fr))]
    out.append(
        Verdict(
            "The extra loss from removing the most memorized examples falls on the tail classes",
            combine(each),
            "extra drop (random minus top-mem accuracy), tail vs head classes: "
            + "; ".join(
                f"{100 * q:.0f} %: {ms(drop['tail'][:, k])} vs {ms(drop['head'][:, k])} points "
                f"({each[k]})"
                for k, q in enumerate(fr)
            ),
        )
    )
    sw, lams = res.sweep, res.sizes.lambdas
    best_tail = sw[0]["tail"] > max(s["tail"] for s in sw[1:])
    best_all = sw[0]["all"] >= max(s["all"] for s in sw[1:])
    out.append(
        Verdict(
            f"Not fitting the training set costs accuracy on the long tail: the ridge lam = {LAM} "
            "that fits it beats larger ones that do not, most on the tail classes (one "
            "deterministic fit per lam, no seeds)",
            "yes" if best_tail and best_all else "partly" if best_tail or best_all else "no",
            "; ".join(
                f"lam {lam:g}: train {100 * s['train']:.1f}, test {100 * s['all']:.1f}, tail "
                f"{100 * s['tail']:.1f} %"
                for lam, s in zip(lams, sw, strict=True)
            ),
        )
    )
    h = high_influence(res)
    same = h["pairs"] > 0 and h["same_label"] > 0.5
    tail_heavy = h["pairs"] > 0 and h["tail_share"] > h["test_tail_share"]
    out.append(
        Verdict(
            f"High-influence pairs (infl >= {HIGH_INFLUENCE}) join a test question to a training "
            "question of its class, over-represented in the tail (pooled estimate, no seeds)",
            "yes" if same and tail_heavy else "partly" if same or tail_heavy else "no",
            f"{h['pairs']} pairs reaching {h['test_questions']} test questions; same label "
            f"{100 * h['same_label']:.0f} %; tail classes hold {100 * h['tail_share']:.0f} % of "
            f"those test questions vs {100 * h['test_tail_share']:.0f} % of the test set",
        )
    )
    return out
