"""Long-tail recipes of the arena (papers 15, 41); see :mod:`losskit.arena.recipes`.

The unlabeled data are the training samples the scenario dropped (``longtail:R`` removes most
of the tail classes' samples), at most ``pool_ratio`` times the labelled count: in-domain
unlabeled data whose class balance differs from the labelled set's, the setting of paper 15's
extra unlabeled data. Runners return ``(final test logits, extra record fields)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit.arena.recipe_run import RecipeRun

Output = tuple[np.ndarray, dict[str, Any]]


def _fit_args(run: RecipeRun) -> dict[str, Any]:
    t = run.trial
    return dict(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                seed=t.seed)  # fmt: skip


def _losses(run: RecipeRun, losses: list[float], model: Any) -> None:
    run.curves["train_loss"] += list(losses)
    run.curves["test_accuracy"] += [None] * (len(losses) - 1) + [run.test_accuracy(model)]


def semi_supervised(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 15: a base model trained on the labels pseudo-labels the pool (argmax), then a
    fresh model trains on ``L_CE(labelled) + omega L_CE(pseudo-labelled)``
    (:func:`losskit.procedures.semi_supervised_training`, Adam with the trial's lr)."""
    from losskit.procedures import semi_supervised_training

    rows, pool = run.unlabeled_pool(float(p["pool_ratio"]))
    result = semi_supervised_training(
        run.new_model, run.x, run.y, pool, unlabeled_weight=float(p["unlabeled_weight"]),
        **_fit_args(run),
    )  # fmt: skip
    _losses(run, result.losses, result.model)
    truth = run.data.ds.y_train[rows]
    extra = {
        "pool_size": len(rows),
        "pseudo_label_accuracy": float(np.mean(result.pseudo_labels.numpy() == truth)),
    }
    return run.test_logits(result.model), {"recipe": extra}


def ssp(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 15: self-supervised pre-training of the backbone on the (imbalanced) training
    inputs, rotation prediction for images, two-view InfoNCE for features, then
    cross-entropy training of the whole model (:func:`losskit.procedures.ssp_training`)."""
    from losskit.procedures import ssp_training

    pre = run.trial.epochs if p["pretrain_epochs"] == "auto" else int(p["pretrain_epochs"])
    result = ssp_training(
        lambda: run.sequential(run.new_model()), run.x, run.y,
        pretext="rotation" if run.image else "contrastive",
        image_shape=(3, 32, 32) if run.image else None, pretrain_epochs=pre, **_fit_args(run),
    )  # fmt: skip
    _losses(run, result.losses, result.model)
    return run.test_logits(result.model), {"recipe": {"pretrain_loss": result.pretrain_losses[-1]}}


def rss(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 41: the distributionally robust loss of the labels plus ``lam`` times the robust
    loss of the model's own labels on the pool, after ``warmup`` of the epochs on the labels
    alone (:func:`losskit.procedures.rss_training`)."""
    from losskit.procedures import rss_training

    rows, pool = run.unlabeled_pool(float(p["pool_ratio"]))
    model = run.new_model()
    args = _fit_args(run)
    history = rss_training(
        model, run.x, run.y, pool, lam=float(p["lam"]), gamma=float(p["gamma"]),
        gamma_unlabeled=float(p["gamma"]), steps=int(p["steps"]),
        warmup_epochs=round(float(p["warmup"]) * args["epochs"]),
        evaluate=lambda m, ep: {"test_accuracy": run.test_accuracy(m)}, **args,
    )  # fmt: skip
    for row in history:
        run.curves["train_loss"].append(row["labelled"])
        run.curves["test_accuracy"].append(row["test_accuracy"])
    return run.test_logits(model), {"recipe": {"pool_size": len(rows)}}
