"""The training split of a multiclass trial under its label scenario, and its result record.

:func:`prepare_multiclass` applies the trial's scenario to the training labels (the test split
stays clean) and fits the input :class:`~losskit.arena.models.Standardizer` on the kept
training samples; :func:`multiclass_result` scores final test logits and assembles the JSON
record every multiclass trial stores. Both are shared by the plain objective loop of
:func:`losskit.arena.trial.run_trial` and the training recipes of
:mod:`losskit.arena.recipes`, so their rows are computed and reported the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from losskit.arena.metrics import classification_metrics
from losskit.arena.models import Standardizer

LONG_TAIL_RATIO = 2.0  # observed max/min class count from which group accuracies are reported


@dataclass
class ScenarioData:
    """A dataset with its scenario applied: ``index`` (kept training rows, into
    ``ds.x_train``), ``labels`` (their observed labels), ``clean`` (their true labels),
    ``x_train`` (the kept inputs), ``counts`` (observed class counts), ``std`` (fitted on
    ``x_train``) and the seconds spent preparing (``data_time``)."""

    ds: Any
    index: np.ndarray
    labels: np.ndarray
    clean: np.ndarray
    x_train: np.ndarray
    counts: np.ndarray
    std: Standardizer
    data_time: float

    @property
    def num_classes(self) -> int:
        return int(self.ds.num_classes)

    @property
    def imbalance_ratio(self) -> float:
        return float(self.counts.max() / max(self.counts.min(), 1))

    @property
    def noise_rate(self) -> float:
        return float(np.mean(self.labels != self.clean))

    def unlabeled_index(self) -> np.ndarray:
        """Training rows the scenario dropped (sorted): an unlabeled pool from the training
        distribution, empty for scenarios that keep every sample."""
        return np.setdiff1d(np.arange(len(self.ds.y_train)), self.index)


def prepare_multiclass(
    trial: Any, ds: Any, scenario_fn: Callable[..., Any] | None = None, *, start: float
) -> ScenarioData:
    """Apply ``trial.scenario`` (``scenario_fn``, default :func:`losskit.labels.apply_scenario`,
    seeded by ``trial.seed``) to ``ds``'s training labels; ``start`` is the trial's
    ``time.perf_counter()`` start (for ``data_time``)."""
    if ds.task != "multiclass":
        raise ValueError(f"dataset {ds.name!r} is {ds.task!r}, not multiclass")
    if scenario_fn is None:
        from losskit.labels import apply_scenario as scenario_fn
    c = scenario_fn(trial.scenario, ds.y_train, ds.num_classes, seed=trial.seed, extras=ds.extras)
    index = np.asarray(c.index, dtype=np.int64)
    labels = np.asarray(c.labels, dtype=np.int64)
    if labels.shape != index.shape or len(labels) == 0:
        raise ValueError(f"scenario {trial.scenario!r} returned mismatched or empty labels")
    x_train = ds.x_train[index]
    return ScenarioData(
        ds=ds,
        index=index,
        labels=labels,
        clean=np.asarray(c.clean, dtype=np.int64),
        x_train=x_train,
        counts=np.bincount(labels, minlength=ds.num_classes),
        std=Standardizer.fit(x_train),
        data_time=time.perf_counter() - start,
    )


def multiclass_result(
    data: ScenarioData,
    logits: np.ndarray,
    curves: dict[str, list[float | None]],
    *,
    start: float,
    versions: dict[str, str],
    diverged_at: int | None = None,
    groups_fn: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    long_tail: bool | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The stored record of a multiclass trial whose final test logits are ``logits``.

    Group (head/medium/tail) accuracies are added when ``long_tail`` is true, or, when it is
    ``None``, when the observed class counts have a max/min ratio of at least
    :data:`LONG_TAIL_RATIO` (``groups_fn`` default :func:`losskit.labels.class_groups`).
    ``extra`` joins the record (a recipe's own diagnostics)."""
    if long_tail is None:
        long_tail = data.imbalance_ratio >= LONG_TAIL_RATIO
    groups = None
    if long_tail:
        if groups_fn is None:
            from losskit.labels import class_groups as groups_fn
        groups = {k: np.asarray(v, dtype=np.int64) for k, v in groups_fn(data.counts).items()}
    scored = classification_metrics(logits, data.ds.y_test, data.num_classes, groups)
    return {
        **scored,
        "class_groups": None if groups is None else {k: v.tolist() for k, v in groups.items()},
        "noise_rate": data.noise_rate,
        "num_train": int(len(data.labels)),
        "train_class_counts": data.counts.tolist(),
        "imbalance_ratio": data.imbalance_ratio,
        "diverged": diverged_at is not None,
        "diverged_epoch": diverged_at,
        "curves": curves,
        **(extra or {}),
        "data_time": data.data_time,
        "wall_time": time.perf_counter() - start,
        "versions": versions,
    }
