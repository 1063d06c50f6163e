"""Training recipes as arena competitors: procedures that own their models and loops run in
the same scenarios, with the same model, optimiser, epochs and test split as the objectives.

A recipe is named like an objective in a track (``"co_teaching"``, ``"rcal:reg_weight=0.5"``)
and recorded like one, so the boards rank it next to the robust losses. Every recipe trains
``trial.model`` (those marked *hidden* need a hidden layer: ``mlp`` or ``cnn``) with
``trial.lr``, ``trial.batch_size`` and ``trial.epochs`` (Adam for the procedures that fix
their optimiser), and is scored by the final model's test logits.

=================== ===== ====================================================================
recipe              paper what runs
=================== ===== ====================================================================
cleaned             34    K-fold out-of-fold probabilities, ``find_label_issues``, retrain on
                          the samples not flagged (``folds=4``, ``filter_by``)
co_teaching         12    two networks exchange small-loss samples; ``forget_rate="noise"`` is
                          the scenario's true noise rate (tau = epsilon, as Han et al.);
                          ``num_gradual="auto"`` = a fifth of the epochs
nested_dropout      12    nested dropout on the penultimate features (``sigma=10``), cut chosen
                          on a held-out 10 % of the noisy training split (hidden)
co_teaching_nested  12    both: nested networks for half the epochs, cuts chosen, then
                          co-teaching at the chosen cuts (hidden)
rcal                32    contrastive pre-training (``pretrain_epochs="auto"`` = epochs),
                          calibrated class Gaussians, classifier with mixup, sampled
                          representations and the calibration term (hidden)
semi_supervised     15    pseudo-labels on the pool of samples the scenario dropped (unlabeled)
ssp                 15    rotation (images) / two-view InfoNCE (features) pre-training (hidden)
rss                 41    robust loss + ``lam`` x robust self-labelling loss on the pool
=================== ===== ====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from losskit.arena import recipe_longtail, recipe_noisy
from losskit.arena.recipe_run import RecipeRun

Runner = Callable[[RecipeRun, dict[str, Any]], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Recipe:
    """A recipe's registered procedure (its papers), runner and default parameters."""

    procedure: str
    runner: Runner
    defaults: dict[str, Any] = field(default_factory=dict)
    hidden: bool = False  # needs a model with a hidden layer


_NESTED = {"sigma": 10.0, "holdout": 0.1}
_CO = {"forget_rate": "noise", "num_gradual": "auto"}
RECIPES: dict[str, Recipe] = {
    "cleaned": Recipe(
        "find_label_issues", recipe_noisy.cleaned, {"folds": 4, "filter_by": "prune_by_noise_rate"}
    ),
    "co_teaching": Recipe("co_teaching", recipe_noisy.co_teaching, _CO),
    "nested_dropout": Recipe("nested_dropout", recipe_noisy.nested_dropout, _NESTED, True),
    "co_teaching_nested": Recipe(
        "co_teaching", recipe_noisy.co_teaching_nested, {**_CO, **_NESTED, "warmup": 0.5}, True
    ),
    "rcal": Recipe(
        "rcal",
        recipe_noisy.rcal,
        {
            "pretrain_epochs": "auto",
            "temperature": 0.2,
            "q": 1,
            "reg_weight": 1.0,
            "mixup_alpha": 1.0,
        },
        True,
    ),  # fmt: skip
    "semi_supervised": Recipe(
        "semi_supervised_pseudo_labels",
        recipe_longtail.semi_supervised,
        {"pool_ratio": 5.0, "unlabeled_weight": 1.0},
    ),
    "ssp": Recipe(
        "self_supervised_pretraining", recipe_longtail.ssp, {"pretrain_epochs": "auto"}, True
    ),
    "rss": Recipe(
        "rss_training",
        recipe_longtail.rss,
        {"pool_ratio": 5.0, "lam": 0.1, "gamma": 1.0, "steps": 5, "warmup": 0.5},
    ),
}


def is_recipe(name: str) -> bool:
    """Whether ``name`` is an arena recipe rather than a registered objective."""
    return name in RECIPES


def check_recipe(name: str, params: dict[str, Any], model: str) -> None:
    """``ValueError`` for an unknown recipe or parameter, or a model the recipe cannot use."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    unknown = sorted(set(params) - set(recipe.defaults))
    if unknown:
        raise ValueError(
            f"recipe {name!r} takes parameters {sorted(recipe.defaults)}, got unknown {unknown}"
        )
    if recipe.hidden and model == "linear":
        raise ValueError(f"recipe {name!r} needs a model with a hidden layer, got 'linear'")


def recipe_papers(name: str) -> tuple[int, ...]:
    """The papers of a recipe's procedure (from the registry)."""
    import losskit

    return tuple(losskit.get(RECIPES[name].procedure).papers)


def run_recipe(trial: Any, data: Any) -> tuple[np.ndarray, dict, dict[str, Any]]:
    """Run recipe ``trial.objective`` on the prepared scenario ``data``; returns the final
    test logits, the curves and the recipe's extra record fields (``"recipe"``: its own
    diagnostics, ``"recipe_params"``: every parameter with defaults filled in)."""
    check_recipe(trial.objective, trial.params, trial.model)
    recipe = RECIPES[trial.objective]
    params = {**recipe.defaults, **trial.params}
    run = RecipeRun(trial, data)
    logits, extra = recipe.runner(run, params)
    return logits, run.curves, {**extra, "recipe_params": params}
