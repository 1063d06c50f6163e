"""The soft-label evaluation protocol of paper 58 (dataset compression: labels vs images).

Paper 58 evaluates a compressed training set (a distilled or pruned subset) by training a fresh
student on it, either on **hard labels** (cross-entropy on the ground truth) or on the
teacher's **soft labels**: ``KL(softmax(t / T) || softmax(s / T))`` averaged over the batch,
with the teacher run on the same images. Its finding: with soft labels even a *random* subset
is competitive with state-of-the-art distilled sets, i.e. the labels carry most of the value.
:func:`soft_label_protocol` runs both arms on random subsets of several sizes, for several
temperatures, with and without Hinton's ``T^2`` factor, over seeds, and returns the table.

The loss (:func:`soft_label_loss`), per sample: ``l_i = s * KL(softmax(t_i / T) ||
softmax(s_i / T))`` with ``s = T^2`` (``scale_t2=True``, Hinton's KD, :func:`kd_loss`) or
``s = 1`` (``scale_t2=False``, the paper's evaluation code). A one-hot teacher at ``T = 1`` (the
limit of a perfect teacher's softmax at a vanishing temperature) gives exactly cross-entropy.

**The T^2 question.** The gradient with respect to the student's logits is ``(s / T) *
(softmax(s_i / T) - softmax(t_i / T))``: ``T * (...)`` with the factor, ``(...) / T`` without,
a ratio of exactly ``T^2`` (400 at the paper's ``T = 20``). Hinton's factor keeps the gradient
scale independent of ``T`` (at large ``T`` the scaled loss tends to matching centred logits
with squared error / C), which matters when soft and hard losses are mixed. Trained purely on
soft labels, dropping it divides the effective learning rate of SGD by ``T^2``. The paper
drops it: its evaluation script (``train_KD.py``, shared with SRe2L's validation code) uses
``nn.KLDivLoss(reduction="batchmean")`` with the ``loss * T * T`` line commented out, at
``T = 20``, with **AdamW** (lr 1e-3, weight decay 0.01, cosine schedule, 300 epochs, batch
1024, CutMix). Adam's step ``m / (sqrt(v) + eps)`` does not change when the loss is multiplied
by a constant (except through ``eps``), and AdamW's decoupled weight decay does not see the
gradient, so under the paper's optimiser the factor is nearly irrelevant; under SGD it is not.
Both optimisers are offered (``optimizer="adamw"`` or ``"sgd"``, momentum 0.9) and both
scalings are measured by the demo (:mod:`losskit.procedures.soft_label_demo`). Deviation: no
CutMix or other augmentation (feature vectors), and the teacher's outputs are fixed per image
rather than recomputed per crop.

Inputs: features ``x_*`` ``[n, D]``, teacher logits ``[n_train, C]`` on ``x_train`` (or
probabilities with ``teacher_probs=True``), integer labels ``y_*``. ``subset_sizes``: counts
(int) or fractions of ``n_train`` (float in (0, 1]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_class_target, check_number, check_scores
from losskit._core.registry import register
from losskit.distillation._common import (
    DistillLossModule,
    check_temperature,
    finish_distill,
    kl_rows,
    prepare_distill,
)


def soft_label_loss(
    student_logits: Tensor,
    teacher: Tensor,
    *,
    temperature: float = 20.0,
    scale_t2: bool = False,
    teacher_probs: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """``KL(softmax(t / T) || softmax(s / T))`` per sample, times ``T^2`` when ``scale_t2``
    (then it equals :func:`~losskit.distillation.kd.kd_loss`). Defaults: the paper's ``T = 20``
    without ``T^2``."""
    temp = check_temperature(temperature)
    b = prepare_distill(student_logits, teacher, teacher_probs=teacher_probs, reduction=reduction)
    loss = kl_rows(b.teacher_log_probs(temp), b.student_log_probs(temp))
    return finish_distill(loss * temp**2 if scale_t2 else loss, b, reduction)


class SoftLabelLoss(DistillLossModule):
    """Module form of :func:`soft_label_loss`: ``forward(student, teacher)``."""

    def __init__(
        self,
        *,
        temperature: float = 20.0,
        scale_t2: bool = False,
        teacher_probs: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction, teacher_probs=teacher_probs)
        self.temperature = check_temperature(temperature)
        self.scale_t2 = bool(scale_t2)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return soft_label_loss(
            student,
            teacher,
            temperature=self.temperature,
            scale_t2=self.scale_t2,
            teacher_probs=self.teacher_probs,
            reduction=self.reduction,
        )


def _tensor(x: Tensor | np.ndarray, dtype: torch.dtype) -> Tensor:
    return (x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))).detach().to(dtype)


def _subset_count(size: float, n: int) -> int:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        count = int(size)
    else:
        count = round(check_number("subset_sizes", size, low=0.0, high=1.0, low_open=True) * n)
    if not 1 <= count <= n:
        raise ValueError(f"subset_sizes must give between 1 and {n} samples, got {size!r}")
    return count


def _train(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    optimizer: str,
    lr: float,
    weight_decay: float,
    epochs: int,
    batch_size: int,
    seed: int,
) -> list[float]:
    """Minibatch training with a cosine schedule; the batch order depends on ``seed`` only.
    Returns the mean training loss of each epoch."""
    params = list(model.parameters())
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), batch_size):
            b = order[start : start + batch_size]
            loss = loss_fn(model(x[b]), target[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        losses.append(total / len(x))
    return losses


def soft_label_protocol(
    x_train: Tensor | np.ndarray,
    teacher_logits: Tensor | np.ndarray,
    y_train: Tensor | np.ndarray,
    x_test: Tensor | np.ndarray,
    y_test: Tensor | np.ndarray,
    *,
    temperatures: Sequence[float] = (1.0, 4.0),
    scale_t2: Sequence[bool] = (True, False),
    subset_sizes: Sequence[float] = (0.1, 0.5),
    student_factory: Callable[[], nn.Module] | None = None,
    epochs: int = 100,
    seeds: Sequence[int] = (0, 1, 2),
    optimizer: str = "adamw",
    lr: float | None = None,
    weight_decay: float = 0.01,
    batch_size: int = 64,
    teacher_probs: bool = False,
    hard: bool = True,
) -> list[dict[str, Any]]:
    """Train a fresh student per (subset size, seed, arm) and return one row per run.

    Arms: ``"hard"`` (cross-entropy on ``y_train``; with ``hard=True``) and ``"soft"`` for each
    temperature and each ``scale_t2`` value. Within a (size, seed) pair every arm sees the same
    random subset, the same initial weights (``student_factory()`` after
    ``torch.manual_seed(seed)``; default an MLP D-64-C) and the same batch order. ``lr``
    defaults to 1e-3 for AdamW (the paper's) and 0.1 for SGD. Row keys: ``subset_size``,
    ``subset_fraction``, ``seed``, ``labels``, ``temperature``, ``scale_t2``, ``optimizer``,
    ``test_accuracy``, ``losses`` (mean training loss per epoch).
    """
    x = _tensor(x_train, torch.float32)
    xt = _tensor(x_test, torch.float32)
    teacher = _tensor(teacher_logits, torch.float32)
    y, yt = _tensor(y_train, torch.long), _tensor(y_test, torch.long)
    check_scores(teacher, "teacher_logits")
    if teacher_probs:
        check_class_target(teacher, teacher, name="teacher_logits")
    n, c = teacher.shape
    if x.ndim != 2 or len(x) != n or len(y) != n:
        raise ValueError(
            f"x_train and y_train must have {n} rows like teacher_logits, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if xt.ndim != 2 or xt.shape[1] != x.shape[1] or len(yt) != len(xt):
        raise ValueError(
            f"x_test [m, {x.shape[1]}] and y_test [m] must match, got "
            f"{tuple(xt.shape)} and {tuple(yt.shape)}"
        )
    check_class_target(y, teacher, name="y_train", allow_soft=False)
    check_choice("optimizer", optimizer, ("adamw", "sgd"))
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    rate = check_number(
        "lr",
        lr if lr is not None else (1e-3 if optimizer == "adamw" else 0.1),
        low=0.0,
        low_open=True,
    )
    wd = check_number("weight_decay", weight_decay, low=0.0)
    temps = [check_temperature(t, "temperatures") for t in temperatures]
    arms: list[tuple[str, float | None, bool | None]] = [("hard", None, None)] if hard else []
    arms += [("soft", t, bool(s)) for t in temps for s in scale_t2]
    if not arms:
        raise ValueError("no arm to run: give temperatures and scale_t2, or hard=True")
    factory = student_factory or (
        lambda: nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, c))
    )
    rows = []
    for size in subset_sizes:
        count = _subset_count(size, n)
        for seed in seeds:
            sub = torch.as_tensor(np.random.default_rng(seed).choice(n, count, replace=False))
            for labels, temp, scaled in arms:
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    model = factory()

                target = y[sub] if temp is None else teacher[sub]
                loss_fn = (
                    F.cross_entropy
                    if temp is None
                    else functools.partial(
                        soft_label_loss,
                        temperature=temp,
                        scale_t2=scaled,
                        teacher_probs=teacher_probs,
                    )
                )
                losses = _train(
                    model,
                    x[sub],
                    target,
                    loss_fn,
                    optimizer=optimizer,
                    lr=rate,
                    weight_decay=wd,
                    epochs=epochs,
                    batch_size=batch_size,
                    seed=seed,
                )
                with torch.no_grad():
                    acc = float((model.eval()(xt).argmax(1) == yt).float().mean())
                rows.append(
                    {
                        "subset_size": count,
                        "subset_fraction": count / n,
                        "seed": seed,
                        "labels": labels,
                        "temperature": temp,
                        "scale_t2": scaled,
                        "optimizer": optimizer,
                        "test_accuracy": acc,
                        "losses": losses,
                    }
                )
    return rows


register(
    "soft_label_protocol",
    kind="procedure",
    family="procedures",
    papers=(58,),
    summary="Students on random subsets with teacher soft labels (KL at T, ±T²) vs hard labels.",
    defaults={
        "temperature": 20.0,
        "scale_t2": False,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.01,
    },
    function=soft_label_protocol,
    module=SoftLabelLoss,
)
