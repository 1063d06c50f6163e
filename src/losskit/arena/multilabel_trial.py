"""Multi-label arena trials: :func:`run_multilabel_trial` (``run_trial`` sends multi-label
datasets here).

The same :class:`~losskit.arena.trial.Trial`, the same determinism (one torch thread,
deterministic algorithms, the trial's seed), the same models (``L`` outputs) and standardiser
as the multiclass loop. The scenario (:func:`losskit.labels.apply_multilabel_scenario`) acts
on the training split only; the test split stays complete.

**Objective protocol.** As in :mod:`losskit.arena.trial`, through
:class:`~losskit.arena.trial.TrialObjective`, with the multi-label context:
``class_counts`` (``torch.long [L]``, positives per label in the *observed* training labels),
``num_samples``, ``num_classes`` (= ``L``), ``num_epochs`` and ``label_cooccurrence``
(``float32 [L, L]``, samples where labels i and j are both observed positive; its diagonal is
``class_counts``). Targets are ``float32`` 0/1 ``[B, L]``; when the scenario gives a mask of
known entries it is passed (``bool [B, L]``) as the third argument, ``loss(logits, target,
mask)``; a module's ``input_regularizer(model, inputs, logits, target, mask)`` is added to
the loss when defined.

**Metrics** (final epoch, clean test split) from
:func:`losskit.diagnostics.multilabel.multilabel_metrics` with ``threshold=0`` on the outputs
(logits), ``ks=(1, 3, 5)`` (those ``<= L``) and Jain et al. propensities from the *true*
training label counts, plus ``head_map``, ``medium_map`` and ``tail_map``: the mAP over the
labels split into thirds by true training frequency (most frequent third first; the split is
the same for every scenario and seed of a dataset). Curves per epoch: ``train_loss`` and
``test_map``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from losskit.arena.models import Standardizer, build_model
from losskit.arena.trial import (
    Trial,
    TrialObjective,
    deterministic,
    load_cached,
    make_optimizer,
    predict,
    take_step,
    versions,
)
from losskit.diagnostics.multilabel import (
    label_propensity,
    mean_average_precision,
    multilabel_metrics,
)

KS = (1, 3, 5)
LABEL_GROUPS = ("head", "medium", "tail")


def label_groups(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Labels split into thirds by ``counts`` (descending, ties by label id): head, medium,
    tail; sizes differ by at most one (the larger groups first)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    return dict(zip(LABEL_GROUPS, np.array_split(order, 3), strict=True))


def group_map(scores: np.ndarray, target: np.ndarray, groups: dict[str, np.ndarray]) -> dict:
    """``<group>_map``: the mAP over each group's labels (NaN where none has a test positive)."""
    return {
        f"{name}_map": mean_average_precision(scores[:, cols], target[:, cols])
        if len(cols) and target[:, cols].any()
        else float("nan")
        for name, cols in groups.items()
    }


def run_multilabel_trial(
    trial: Trial,
    *,
    data_dir: Any = None,
    dataset_loader: Callable[..., Any] | None = None,
    scenario_fn: Callable[..., Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate a multi-label ``trial``; returns the JSON-ready result dict.

    ``scenario_fn(spec, y_train, seed=...)`` defaults to
    :func:`losskit.labels.apply_multilabel_scenario` and must return an object with
    ``labels`` (0/1 ``[n, L]``), ``mask`` (bool ``[n, L]`` or ``None``) and ``clean``. A
    non-finite loss stops training (``"diverged": true``). See the module docstring.
    """
    start = time.perf_counter()
    if scenario_fn is None:
        from losskit.labels.multilabel import apply_multilabel_scenario as scenario_fn
    ds = load_cached(trial.dataset, data_dir, dataset_loader)
    if ds.task != "multilabel":
        raise ValueError(
            f"run_multilabel_trial needs a multilabel dataset; {ds.name!r} is {ds.task!r}"
        )
    part = scenario_fn(trial.scenario, ds.y_train, seed=trial.seed)
    labels = np.asarray(part.labels, dtype=np.int64)
    clean = np.asarray(part.clean, dtype=np.int64)
    if labels.shape != ds.y_train.shape or clean.shape != labels.shape:
        raise ValueError(
            f"scenario {trial.scenario!r} returned labels {labels.shape}, expected "
            f"{ds.y_train.shape}"
        )
    mask = None if part.mask is None else torch.as_tensor(np.asarray(part.mask, dtype=bool))
    n, num_labels = labels.shape
    counts = labels.sum(axis=0)
    true_counts = clean.sum(axis=0)
    data_time = time.perf_counter() - start

    with deterministic(threads):
        torch.manual_seed(trial.seed)
        std = Standardizer.fit(ds.x_train)
        model = build_model(trial.model, ds.x_train[:1], num_labels)
        y = torch.from_numpy(labels).float()
        context = {
            "class_counts": torch.as_tensor(counts, dtype=torch.long),
            "num_samples": n,
            "num_classes": num_labels,
            "num_epochs": trial.epochs,
            "label_cooccurrence": y.T @ y,
        }
        objective = TrialObjective(trial.objective, dict(trial.params), context)
        opt = make_optimizer(trial, [*model.parameters(), *objective.parameters()])
        x = std(ds.x_train)
        gen = torch.Generator().manual_seed(trial.seed)
        curves: dict[str, list[float | None]] = {"train_loss": [], "test_map": []}
        diverged_at: int | None = None
        for epoch in range(trial.epochs):
            objective.set_epoch(epoch)
            model.train()
            total = 0.0
            for idx in torch.randperm(n, generator=gen).split(trial.batch_size):
                xb, yb = x[idx], y[idx]
                mb = None if mask is None else mask[idx]
                logits = model(xb)
                loss = objective(logits, yb, idx, mb)
                extra = objective.regularizer(model, xb, logits, yb, mb)
                if extra is not None:
                    loss = loss + extra
                if not take_step(opt, loss):
                    diverged_at = epoch
                    break
                total += float(loss.detach()) * len(idx)
            scores = predict(model, std, ds.x_test)
            finite = bool(np.isfinite(scores).all())
            curves["train_loss"].append(total / n if diverged_at is None else None)
            curves["test_map"].append(mean_average_precision(scores, ds.y_test) if finite else None)
            if not finite and diverged_at is None:
                diverged_at = epoch
            if diverged_at is not None:
                break

    groups = label_groups(true_counts)
    scored: dict[str, float] = {}
    if finite:  # a loss that turned non-finite stopped training before the step
        ks = tuple(k for k in KS if k <= num_labels)
        propensity = label_propensity(true_counts, n)
        scored = multilabel_metrics(scores, ds.y_test, threshold=0.0, ks=ks, propensity=propensity)
        scored.update(group_map(scores, ds.y_test, groups))
    dropped = (clean == 1) & (labels == 0)
    return {
        "task": "multilabel",
        "metrics": scored,
        "label_groups": {k: v.tolist() for k, v in groups.items()},
        "noise_rate": float(dropped.sum() / max(int(clean.sum()), 1)),
        "unknown_rate": 0.0 if mask is None else float(1.0 - mask.float().mean()),
        "empty_rows": float(np.mean(labels.sum(axis=1) == 0)),
        "num_train": n,
        "train_class_counts": counts.tolist(),
        "diverged": diverged_at is not None,
        "diverged_epoch": diverged_at,
        "curves": curves,
        "data_time": data_time,
        "wall_time": time.perf_counter() - start,
        "versions": versions(),
    }
