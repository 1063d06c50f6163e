"""Distillation trials: a student trained against a teacher (``Trial.teacher`` set).

:func:`~losskit.arena.trial.run_trial` sends a trial with a ``teacher`` spec here. The trial's
``model`` is the student, its ``objective`` one of the distillation track's objectives
(:data:`~losskit.arena.distill_objectives.ADAPTERS`, which declares what each needs), its
``scenario`` the label scenario of the training split (teacher and student train on the same
samples and labels). The teacher (:mod:`losskit.arena.distill_data`) is trained once per
(dataset, scenario, seed, teacher spec) and cached; every trial of that teacher reuses its
outputs. Training is deterministic per seed, as in the multiclass loop: one torch thread,
deterministic algorithms, ``torch.manual_seed(seed)`` right before the student is built (so a
cached teacher and a freshly trained one give the same student), a seeded batch order. Unlike
the multiclass loop, students and teachers follow a cosine learning-rate decay to 0 over
their epochs (one step per epoch): with a constant rate the final epoch of a small CNN swings
by several points from one epoch to the next, more than the differences being measured.

Result (final epoch): the multiclass metrics of the student on the clean test split (for the
CIFAR-10H teacher: the held-out half of the test images), ``teacher_metrics`` (the same
metrics of the teacher), ``teacher_params`` / ``student_params`` (the student's count is the
model used at inference, without auxiliary heads or projectors), ``task = "distill"``.
Curves per epoch: ``train_loss`` and ``test_accuracy``, the latter on at most
:data:`CURVE_SAMPLES` test samples (a fixed seeded subset; all of them for digits and TREC),
so that a CIFAR epoch is not dominated by evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from losskit.arena.distill_data import (
    TeacherOutputs,
    bow_inputs,
    cifar10h_split,
    human_teacher,
    parse_teacher,
    trained_teacher,
)
from losskit.arena.distill_objectives import DistillObjective, Student, get_adapter
from losskit.arena.metrics import classification_metrics
from losskit.arena.models import Standardizer, build_model, is_image
from losskit.arena.trial import (
    Trial,
    deterministic,
    load_cached,
    make_optimizer,
    predict,
    take_step,
    versions,
)

CURVE_SAMPLES = 2000


def _curve_subset(n: int) -> np.ndarray:
    if n <= CURVE_SAMPLES:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, CURVE_SAMPLES, replace=False))


def check_distill_objective(name: str, teacher: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a distillation-track objective (its module is
    imported, so it is registered) that can learn from ``teacher`` (a human teacher gives
    probabilities only: no logits or features)."""
    spec = parse_teacher(teacher)
    adapter = get_adapter(name)
    if spec.human and not adapter.teacher_probs_ok:
        raise ValueError(f"objective {name!r} needs the teacher's logits and features; teacher "
                         f"{spec.kind!r} gives probabilities only")  # fmt: skip


def _identity(x: np.ndarray) -> Standardizer:
    """No standardisation (the bag-of-words view)."""
    dim = x.shape[1]
    return Standardizer(np.zeros(dim, np.float32), np.ones(dim, np.float32), image=False)


def run_distill_trial(
    trial: Trial,
    *,
    data_dir: Any = None,
    dataset_loader: Callable[..., Any] | None = None,
    scenario_fn: Callable[..., Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the teacher (or load it from the cache) and the student of ``trial``; return the
    JSON-ready result (see the module docstring). ``dataset_loader`` and ``scenario_fn`` as in
    :func:`~losskit.arena.trial.run_trial`. A non-finite loss stops training
    (``"diverged": true``)."""
    start = time.perf_counter()
    spec = parse_teacher(trial.teacher)
    adapter = get_adapter(trial.objective)
    ds = load_cached(trial.dataset, data_dir, dataset_loader)
    if ds.task != "multiclass":
        raise ValueError(f"distillation needs a multiclass dataset; {ds.name!r} is {ds.task!r}")
    c = ds.num_classes
    if spec.human:
        probs = ds.extras.get(f"{spec.kind}/probs")
        if probs is None:
            raise ValueError(f"teacher {spec.kind!r} needs extras['{spec.kind}/probs'] "
                             f"(CIFAR-10 test images); dataset {ds.name!r} has none")  # fmt: skip
        if trial.scenario != "clean":
            raise ValueError(
                f"teacher {spec.kind!r} takes scenario 'clean', got {trial.scenario!r}"
            )
        train, held = cifar10h_split(ds.y_test)
        x_s, y, clean = ds.x_test[train], ds.y_test[train], ds.y_test[train]
        x_s_test, y_test = ds.x_test[held], ds.y_test[held]

        def get_teacher() -> TeacherOutputs:
            return human_teacher(probs, train, held, y_test)
    else:
        if scenario_fn is None:
            from losskit.labels import apply_scenario as scenario_fn
        part = scenario_fn(trial.scenario, ds.y_train, c, seed=trial.seed, extras=ds.extras)
        index = np.asarray(part.index, dtype=np.int64)
        y = np.asarray(part.labels, dtype=np.int64)
        clean = np.asarray(part.clean, dtype=np.int64)
        if y.shape != index.shape or len(y) == 0:
            raise ValueError(f"scenario {trial.scenario!r} returned mismatched or empty labels")
        if spec.student_input == "bow":
            bow_train, x_s_test = bow_inputs(ds.name, data_dir)
            x_s = bow_train[index]
        else:
            x_s, x_s_test = ds.x_train[index], ds.x_test
        y_test = ds.y_test

        def get_teacher() -> TeacherOutputs:
            return trained_teacher(spec, seed=trial.seed, scenario=trial.scenario,
                                   x_train=ds.x_train[index], y_train=y, x_test=ds.x_test,
                                   y_test=ds.y_test, num_classes=c)  # fmt: skip

    counts = np.bincount(y, minlength=c)
    data_time = time.perf_counter() - start

    with deterministic(threads):
        teacher = get_teacher()
        torch.manual_seed(trial.seed)
        std = Standardizer.fit(x_s) if spec.student_input == "same" else _identity(x_s)
        model = build_model(trial.model, x_s[:1], c)
        student = Student(model, c, dual_head=adapter.dual_head)
        t_out = torch.from_numpy(teacher.outputs)
        t_feat = None if teacher.features is None else torch.from_numpy(teacher.features)
        target = torch.from_numpy(y)
        context: dict[str, Any] = {
            "teacher_probs": teacher.probs,
            "in_features": student.width,
            "num_classes": c,
            "num_epochs": trial.epochs,
            "teacher_width": None if t_feat is None else t_feat.shape[1],
        }
        if adapter.needs_teacher_features and t_feat is not None:
            from losskit.distillation.feature_norm import class_means_from_features

            context["class_means"] = class_means_from_features(t_feat, target, c)
        objective = DistillObjective(trial.objective, dict(trial.params), context)
        opt = make_optimizer(trial, [*student.parameters(), *objective.parameters()])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=trial.epochs)
        x_pre = None if is_image(x_s) else std(x_s)
        gen = torch.Generator().manual_seed(trial.seed)
        curve = _curve_subset(len(y_test))
        curves: dict[str, list[float | None]] = {"train_loss": [], "test_accuracy": []}
        diverged_at: int | None = None
        for epoch in range(trial.epochs):
            objective.set_epoch(epoch)
            student.train()
            objective.train()
            total = 0.0
            for idx in torch.randperm(len(y), generator=gen).split(trial.batch_size):
                xb = x_pre[idx] if x_pre is not None else std(x_s[idx.numpy()])
                tf = None if t_feat is None else t_feat[idx]
                loss = objective(student.outputs(xb), t_out[idx], tf, target[idx])
                if not take_step(opt, loss):
                    diverged_at = epoch
                    break
                total += float(loss.detach()) * len(idx)
            sched.step()
            scores = predict(student, std, x_s_test[curve])
            curves["train_loss"].append(total / len(y) if diverged_at is None else None)
            curves["test_accuracy"].append(float(np.mean(scores.argmax(1) == y_test[curve])))
            if diverged_at is not None:
                break
        logits = predict(student, std, x_s_test)

    scored = classification_metrics(logits, y_test, c)
    return {
        **scored,
        "task": "distill",
        "teacher_metrics": teacher.metrics,
        "teacher_params": teacher.num_params,
        "student_params": sum(p.numel() for p in model.parameters()),
        "teacher_key": teacher.key,
        "teacher_trained": teacher.trained,
        "teacher_train_time": teacher.train_time,
        "class_groups": None,
        "noise_rate": float(np.mean(y != clean)),
        "num_train": int(len(y)),
        "num_test": int(len(y_test)),
        "train_class_counts": counts.tolist(),
        "diverged": diverged_at is not None,
        "diverged_epoch": diverged_at,
        "curves": curves,
        "data_time": data_time,
        "wall_time": time.perf_counter() - start,
        "versions": versions(),
    }
