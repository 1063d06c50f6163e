"""Noisy-label recipes of the arena (papers 12, 32, 34); see :mod:`losskit.arena.recipes`.

Each runner takes a :class:`~losskit.arena.recipe_run.RecipeRun` and the recipe's parameters
and returns ``(final test logits, extra record fields)``; the curves go into ``run.curves``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from losskit.arena.recipe_run import RecipeRun, augment_images

Output = tuple[np.ndarray, dict[str, Any]]


def forget_rate(run: RecipeRun, value: Any) -> float:
    """``"noise"``: the scenario's actual noise rate (co-teaching's tau = epsilon, which Han et
    al. take as known); otherwise the number given."""
    return run.data.noise_rate if value == "noise" else float(value)


def ramp_epochs(run: RecipeRun, value: Any, epochs: int) -> int:
    """``"auto"``: a fifth of the epochs (at least 1); otherwise the number given."""
    return max(1, round(epochs / 5)) if value == "auto" else int(value)


def holdout_split(run: RecipeRun, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random ``(train rows, held-out rows)`` of the noisy training split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {fraction}")
    perm = np.random.default_rng(run.trial.seed).permutation(len(run.y))
    cut = max(1, int(round(fraction * len(perm))))
    return np.sort(perm[cut:]), np.sort(perm[:cut])


def _removal_stats(run: RecipeRun, removed: np.ndarray) -> dict[str, float]:
    noisy = run.data.labels != run.data.clean
    hits = float((removed & noisy).sum())
    return {
        "removed_fraction": float(removed.mean()),
        "removed_precision": hits / max(int(removed.sum()), 1),
        "removed_recall": hits / max(int(noisy.sum()), 1),
    }


def cleaned(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 34: out-of-fold probabilities from ``folds``-fold cross-validation of the trial's
    model (the arena CE loop), :func:`losskit.labels.find_label_issues` (``filter_by``), then
    a fresh model trained on the samples not flagged."""
    from losskit.labels import cross_val_pred_probs, find_label_issues

    epochs = run.trial.epochs
    probs = cross_val_pred_probs(
        run.x, run.data.labels, model_factory=run.new_model, num_classes=run.num_classes,
        train_fn=lambda m, x, y: run.fit_ce(m, epochs=epochs, x=x, y=torch.from_numpy(y)),
        n_folds=int(p["folds"]), seed=run.trial.seed,
    )  # fmt: skip
    flagged = np.asarray(find_label_issues(run.data.labels, probs, filter_by=p["filter_by"]))
    keep = torch.from_numpy(np.flatnonzero(~flagged))
    torch.manual_seed(run.trial.seed)
    model = run.new_model()
    run.fit_ce(model, epochs=epochs, x=run.x[keep], y=run.y[keep], log=True)
    return run.test_logits(model), {"recipe": _removal_stats(run, flagged)}


def co_teaching(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 12 / Han et al.: two networks of the trial's model exchange small-loss samples
    (:func:`losskit.procedures.co_teaching`); network A is scored."""
    from losskit.procedures import co_teaching as train

    a, b = run.new_model(), run.new_model()
    epochs, tau = run.trial.epochs, forget_rate(run, p["forget_rate"])
    result = train(
        a, b, run.x, run.y, forget_rate=tau,
        num_gradual=ramp_epochs(run, p["num_gradual"], epochs), epochs=epochs,
        optimizer=run.optimizer, batch_size=run.trial.batch_size, seed=run.trial.seed,
        clean=torch.from_numpy(run.data.clean),
        evaluate=lambda ma, mb, ep: {"test_accuracy": run.test_accuracy(ma)},
    )  # fmt: skip
    for row in result.history:
        run.curves["train_loss"].append(row["loss_a"])
        run.curves["test_accuracy"].append(row["test_accuracy"])
    last = result.history[-1]
    return run.test_logits(a), {
        "recipe": {"forget_rate": tau, "kept_clean_fraction": last["precision_a"]}
    }


def _nested(run: RecipeRun, sigma: float, seed: int) -> Any:
    from losskit.procedures import NestedDropout, NestedDropoutNet

    backbone, head = run.split(run.new_model())
    gen = torch.Generator().manual_seed(seed)
    return NestedDropoutNet(backbone, head, NestedDropout(head.in_features, sigma=sigma,
                                                         generator=gen))  # fmt: skip


def nested_dropout(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 12: nested dropout (Gaussian cut distribution, ``sigma``) on the penultimate
    features, cross-entropy training on all but a ``holdout`` share of the noisy training
    split, and the cut chosen by accuracy on that share (noisy labels: no clean data used)."""
    train, held = (torch.from_numpy(r) for r in holdout_split(run, float(p["holdout"])))
    net = _nested(run, float(p["sigma"]), run.trial.seed)
    run.fit_ce(net, epochs=run.trial.epochs, x=run.x[train], y=run.y[train], log=True)
    net.select_cut(run.x[held], run.y[held])
    run.curves["test_accuracy"][-1] = run.test_accuracy(net)  # the last point at the chosen cut
    return run.test_logits(net), {"recipe": {"cut": int(net.nested.cut),
                                             "dim": net.nested.dim}}  # fmt: skip


def co_teaching_nested(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 12's combination: two nested-dropout networks trained with cross-entropy for
    ``warmup`` of the epochs, cuts chosen on the held-out share, then co-teaching for the
    remaining epochs with the small-loss ranking at the chosen cut (``selection="eval"``)."""
    from losskit.procedures import co_teaching as train

    epochs = run.trial.epochs
    first = min(max(1, round(float(p["warmup"]) * epochs)), epochs - 1)
    rows, held = (torch.from_numpy(r) for r in holdout_split(run, float(p["holdout"])))
    sigma, seed = float(p["sigma"]), run.trial.seed
    nets = [_nested(run, sigma, seed), _nested(run, sigma, seed + 1)]
    for net in nets:
        run.fit_ce(net, epochs=first, x=run.x[rows], y=run.y[rows])
        net.select_cut(run.x[held], run.y[held])
    run.curves["train_loss"] += [None] * first
    run.curves["test_accuracy"] += [None] * (first - 1) + [run.test_accuracy(nets[0])]
    result = train(
        nets[0], nets[1], run.x[rows], run.y[rows],
        forget_rate=forget_rate(run, p["forget_rate"]),
        num_gradual=ramp_epochs(run, p["num_gradual"], epochs - first), epochs=epochs - first,
        optimizer=run.optimizer, batch_size=run.trial.batch_size, seed=seed, selection="eval",
        evaluate=lambda ma, mb, ep: {"test_accuracy": run.test_accuracy(ma)},
    )  # fmt: skip
    for row in result.history:
        run.curves["train_loss"].append(row["loss_a"])
        run.curves["test_accuracy"].append(row["test_accuracy"])
    return run.test_logits(nets[0]), {"recipe": {"cut": int(nets[0].nested.cut),
                                                 "dim": nets[0].nested.dim}}  # fmt: skip


def rcal(run: RecipeRun, p: dict[str, Any]) -> Output:
    """Paper 32: contrastive pre-training of the trial's backbone (image crops and flips, or
    feature noise and dropout views), per-class calibrated Gaussians, then the backbone and
    its head trained with mixup, sampled representations and the individual calibration
    term (:func:`losskit.procedures.rcal`)."""
    from losskit.procedures import rcal as train

    encoder, head = run.split(run.new_model())
    epochs, t = run.trial.epochs, run.trial
    pre = epochs if p["pretrain_epochs"] == "auto" else int(p["pretrain_epochs"])
    result = train(
        encoder, run.x, run.y, run.num_classes, pretrain_epochs=pre, pretrain_lr=t.lr,
        pretrain_batch_size=max(t.batch_size, 256), temperature=float(p["temperature"]),
        augment=augment_images if run.image else None, q=int(p["q"]),
        reg_weight=float(p["reg_weight"]), mixup_alpha=float(p["mixup_alpha"]), epochs=epochs,
        batch_size=t.batch_size, lr=t.lr, classifier=head, clean=run.data.clean, seed=t.seed,
        evaluate=lambda enc, clf, ep: {"test_accuracy": run.test_accuracy(torch.nn.Sequential(
            enc, clf))},
    )  # fmt: skip
    for row in result.history:
        run.curves["train_loss"].append(row["loss"])
        run.curves["test_accuracy"].append(row["test_accuracy"])
    diag = {k: v for k, v in result.diagnostics.items() if isinstance(v, (int, float))}
    return run.test_logits(torch.nn.Sequential(encoder, head)), {"recipe": diag}
