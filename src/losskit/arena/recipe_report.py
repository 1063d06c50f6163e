"""The report's section on training recipes (:mod:`losskit.arena.recipes`): what each recipe
row ran, and the recipes' own diagnostics (how much confident learning removed and how much
of it was noise, the share of clean labels among co-teaching's kept samples, the chosen
nested-dropout cut, the pseudo-labels' accuracy), mean over seeds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from losskit.arena.recipes import RECIPES, recipe_papers

Record = Mapping[str, Any]

NOTE = (
    "Recipe rows train the same model with the same optimiser, learning rate, batch size and "
    "epochs as the objective rows, and are scored on the same clean test split. `cleaned` "
    "(34): 4-fold out-of-fold probabilities of the model, `find_label_issues` "
    "(prune_by_noise_rate), retraining on the rest. `co_teaching` (12): two networks swap "
    "small-loss samples, forget rate = the scenario's true noise rate (as Han et al.), ramp "
    "over a fifth of the epochs; network A scored. `nested_dropout` (12): nested dropout "
    "(sigma 10) on the penultimate features, cut chosen on a held-out 10 % of the noisy "
    "training labels. `co_teaching_nested` (12): both, co-teaching for the second half. "
    "`rcal` (32): in-batch contrastive pre-training for as many epochs (crops and flips on "
    "images, noisy feature views otherwise), calibrated class Gaussians, mixup, sampled "
    "representations and the calibration term. `semi_supervised` (15): pseudo-labels on "
    "the training samples the long-tail scenario dropped (at most 5x the labelled count); "
    "`ssp` (15): rotation (images) or two-view InfoNCE (features) pre-training; `rss` (41): "
    "robust loss plus 0.1 x robust self-labelling loss on that pool (gamma 1, 5 ascent "
    "steps, pool term from half-way)."
)
_SHOWN = {  # key -> (label, format: "%" percent of a fraction, "n" count, "x" plain number)
    "removed_fraction": ("removed", "%"),
    "removed_precision": ("removed that were noisy", "%"),
    "removed_recall": ("noisy labels removed", "%"),
    "forget_rate": ("forget rate", "%"),
    "kept_clean_fraction": ("clean among kept", "%"),
    "cut": ("cut (of dim)", "cut"),
    "pseudo_label_accuracy": ("pseudo-label accuracy", "%"),
    "pool_size": ("pool size", "n"),
    "kept_fraction": ("LOF inliers", "%"),
    "pretrain_loss": ("last pre-training loss", "x"),
}


def _cell(label: str, kind: str, mean: float, rows: list[Record]) -> str:
    if kind == "cut":
        return f"{label} {mean:.0f} of {rows[0]['recipe'].get('dim', '?')}"
    if kind == "n":
        return f"{label} {mean:.0f}"
    return f"{label} {mean:.3f}" if kind == "x" else f"{label} {100 * mean:.1f} %"


def is_recipe_record(r: Record) -> bool:
    return r.get("objective", "").split(":")[0] in RECIPES and isinstance(r.get("recipe"), dict)


def recipe_table(records: Iterable[Record]) -> str:
    """Markdown table of the recipes' diagnostics, one row per (dataset, scenario, recipe);
    empty string when the records hold no recipe."""
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        if is_recipe_record(r):
            groups.setdefault((r["dataset"], r["scenario"], r["objective"]), []).append(r)
    if not groups:
        return ""
    out = ["| dataset / scenario | recipe (papers) | seeds | diagnostics (mean over seeds) |",
           "|---|---|---|---|"]  # fmt: skip
    for (ds, sc, obj), rows in sorted(groups.items()):
        cells = []
        for key, (label, kind) in _SHOWN.items():
            values = [r["recipe"][key] for r in rows if key in r["recipe"]]
            if values:
                cells.append(_cell(label, kind, float(np.mean(values)), rows))
        papers = ", ".join(map(str, recipe_papers(obj.split(":")[0])))
        out.append(f"| {ds} / {sc} | `{obj}` ({papers}) | {len(rows)} | {'; '.join(cells)} |")
    return "\n".join(out)
