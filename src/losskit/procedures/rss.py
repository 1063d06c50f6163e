"""Robust self-supervised training (RSS, paper 41): out-of-domain unlabeled data as a
robust self-labelling regulariser.

With a per-sample loss ``l(Z, y; theta)`` (default cross-entropy on ``model(Z)``), a
transport cost ``c(Z, X) = ||Z - X||_2^2`` (over all input features) and ``gamma >= 0``, the
robust loss is the Lagrangian distributionally robust loss

    phi_gamma(X, y; theta) = sup_Z  l(Z, y; theta) - gamma c(Z, X).

RSS minimises, over ``m`` labelled pairs and ``n`` unlabeled inputs ``X'_j`` that may come
from a shifted distribution,

    (1/m) sum_i phi_gamma(X_i, y_i; theta)
        + (lambda/n) sum_j phi_gamma'(X'_j, h_theta(X'_j); theta),

where ``h_theta(X') = argmax_c model(X')_c`` is the model's own current label (taken without
gradient; the unperturbed input). The inner sup runs ``steps`` steps of gradient ascent from
``Z = X``, ``Z <- Z + (alpha / (t + 1)) grad_Z [l - gamma c]``, ``t = 0, 1, ...`` (the
schedule of the authors' histopathology code), with the model in eval mode; each sample's
ascent uses only its own gradient. The outer gradient treats ``Z*`` as fixed (Danskin), so
``phi`` carries the gradient of ``l(Z*, y; theta)``.

Limits and defaults: ``gamma = inf`` (or ``steps = 0``) gives ``Z* = X`` and ``phi = l``
(the paper's non-robust setting); with it and ``lambda = 0`` RSS is plain supervised
training on the same batches (tested). ``steps = 10`` as the authors' code. The step size
``alpha`` defaults to ``1 / (2 gamma)``, losskit's choice: the first step then lands on the
maximiser of the linearised objective, ``X + grad_X l / (2 gamma)`` (the code uses a fixed
``alpha = 1e-3``). ``gamma``, ``gamma'`` and ``lambda`` depend on the data scale; the authors
tune them per experiment (their tables span ``1e-7`` to ``10``).

Differences from the authors' code (``deepmancer/rss-training-iclr2024``): their unlabeled
term uses the raw logits of ``model(X')`` as a soft cross-entropy target, without detaching
them; here the target is the hard label ``h_theta(X')`` of the paper's formula (and of their
linear simulation, whose unlabeled ramp loss is on ``|f(X')|``). Their ascent leaves the
model in eval mode for the rest of training; here the mode is restored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number, check_reduction
from losskit._core.registry import register
from losskit.procedures.imbalance_recipes import (
    Augment,
    check_inputs,
    check_targets,
    predict_logits,
    pseudo_labels,
)
from losskit.procedures.paired_batches import check_count, generators, paired_batches

LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> per-sample losses [N]


def _ce(outputs: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(outputs, target, reduction="none")


def _check_gamma(name: str, gamma: float) -> float:
    return check_number(name, gamma, low=0.0, high=math.inf)


def _cost(z: Tensor, x: Tensor) -> Tensor:
    return (z - x).pow(2).flatten(1).sum(dim=1)


def adversarial_inputs(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    gamma: float,
    steps: int = 10,
    step_size: float | None = None,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """The ascent's ``Z*`` for ``phi_gamma`` (module docstring), detached, shaped like ``x``."""
    gamma = _check_gamma("gamma", gamma)
    steps = check_count("steps", steps, 0)
    if math.isinf(gamma) or steps == 0:
        return x.detach()
    if step_size is None and gamma == 0.0:
        raise ValueError("step_size is required when gamma = 0 (the default is 1 / (2 gamma))")
    alpha = 1.0 / (2.0 * gamma) if step_size is None else step_size
    alpha = check_number("step_size", alpha, low=0.0, low_open=True, high=math.inf, high_open=True)
    loss_fn = loss_fn or _ce
    was = model.training
    model.eval()
    x0 = x.detach()
    z = x0.clone()
    for t in range(steps):
        z.requires_grad_(True)
        objective = loss_fn(model(z), target).sum() - gamma * _cost(z, x0).sum()
        (grad,) = torch.autograd.grad(objective, z)
        z = (z + alpha / (t + 1) * grad).detach()
    model.train(was)
    return z


def robust_loss(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    gamma: float,
    steps: int = 10,
    step_size: float | None = None,
    loss_fn: LossFn | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``phi_gamma(x_i, target_i; theta) = l(Z*_i, target_i) - gamma c(Z*_i, x_i)`` with the
    gradient of ``l(Z*, target)`` in the model's parameters; ``reduction`` over samples."""
    check_reduction(reduction)
    check_inputs("x", x)
    z = adversarial_inputs(
        model, x, target, gamma=gamma, steps=steps, step_size=step_size, loss_fn=loss_fn
    )
    phi = (loss_fn or _ce)(model(z), target)
    if not math.isinf(gamma):
        phi = phi - gamma * _cost(z, x.detach())
    return phi.mean() if reduction == "mean" else phi.sum() if reduction == "sum" else phi


def rss_regularizer(
    model: nn.Module,
    x_unlabeled: Tensor,
    *,
    gamma: float,
    steps: int = 10,
    step_size: float | None = None,
    loss_fn: LossFn | None = None,
) -> Tensor:
    """``(1/n) sum_j phi_gamma(X'_j, h_theta(X'_j); theta)``, ``h_theta`` the model's argmax
    label taken without gradient (in eval mode)."""
    labels = pseudo_labels(model, check_inputs("x_unlabeled", x_unlabeled))
    return robust_loss(model, x_unlabeled, labels, gamma=gamma, steps=steps,
                       step_size=step_size, loss_fn=loss_fn)  # fmt: skip


def rss_training(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_unlabeled: Tensor,
    *,
    lam: float = 1.0,
    gamma: float = 1.0,
    gamma_unlabeled: float = 1.0,
    steps: int = 10,
    step_size: float | None = None,
    loss_fn: LossFn | None = None,
    warmup_epochs: int = 0,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    augment: Augment | None = None,
    seed: int = 0,
    evaluate: Callable[[nn.Module, int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place (Adam) on the RSS objective; returns one dict per epoch
    (``epoch``, ``labelled`` and ``unlabeled``: the mean of each term's ``phi``, and what
    ``evaluate(model, epoch)`` returned).

    Each step pairs a labelled batch with a share of ``x_unlabeled``
    (:func:`~losskit.procedures.paired_batches.paired_batches`) and minimises
    ``mean phi_gamma + lam * mean phi_gamma'``. During the first ``warmup_epochs`` the
    unlabeled term is off (``lam = 0``), so that the self-labels come from a model that has
    seen the labels. ``step_size`` (``alpha``) applies to both ascents; by default each uses
    ``1 / (2 gamma)`` with its own ``gamma``. ``loss_fn``: per-sample loss on
    ``(model outputs, integer targets)``, default cross-entropy. ``augment(batch, generator)``
    transforms every labelled batch and unlabeled chunk first, as in
    :func:`~losskit.procedures.imbalance_recipes.fit_classifier`."""
    check_inputs("x", x)
    check_inputs("x_unlabeled", x_unlabeled)
    if x_unlabeled.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_unlabeled rows must have shape {tuple(x.shape[1:])} like x")
    out = predict_logits(model, x[:1])
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"model must map x to outputs [N, C], C >= 2, got {tuple(out.shape)}")
    y = check_targets("y", y, len(x), int(out.shape[1]))
    lam = check_number("lam", lam, low=0.0, high=math.inf, high_open=True)
    for name, g in (("gamma", gamma), ("gamma_unlabeled", gamma_unlabeled)):
        _check_gamma(name, g)
    steps = check_count("steps", steps, 0)
    warmup_epochs = check_count("warmup_epochs", warmup_epochs, 0)
    epochs = check_count("epochs", epochs, 1)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    weight_decay = check_number("weight_decay", weight_decay, low=0.0)
    if augment is not None and not callable(augment):
        raise ValueError("augment must be a callable (batch, generator) -> batch")
    if evaluate is not None and not callable(evaluate):
        raise ValueError("evaluate must be a callable (model, epoch) -> dict")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen, pool_gen = generators(seed)
    robust = dict(steps=steps, step_size=step_size, loss_fn=loss_fn)
    history: list[dict[str, Any]] = []
    for epoch in range(epochs):
        weight = 0.0 if epoch < warmup_epochs else lam
        model.train()
        sums = [0.0, 0.0, 0]
        for idx, jdx in paired_batches(len(x), len(x_unlabeled), batch_size, gen, pool_gen):
            xl, xu = x[idx], x_unlabeled[jdx]
            if augment is not None:
                xl = augment(xl, gen)
                xu = augment(xu, pool_gen) if len(jdx) else xu
            labelled = robust_loss(model, xl, y[idx], gamma=gamma, **robust)
            loss = labelled
            if len(jdx):
                unlabeled = rss_regularizer(model, xu, gamma=gamma_unlabeled, **robust)
                loss = loss + weight * unlabeled
                sums[1] += float(unlabeled.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums[0] += float(labelled.detach())
            sums[2] += 1
        row: dict[str, Any] = {"epoch": epoch, "lam": weight, "labelled": sums[0] / sums[2],
                               "unlabeled": sums[1] / sums[2]}  # fmt: skip
        if evaluate is not None:
            row.update(evaluate(model, epoch))
        history.append(row)
    return history


register(
    "rss_training",
    kind="procedure",
    family="procedures",
    papers=(41,),
    summary="RSS: robust (Lagrangian DRO) loss on labelled data + lambda x robust loss of the "
    "model's own labels on (out-of-domain) unlabeled data.",
    defaults={"lam": 1.0, "gamma": 1.0, "gamma_unlabeled": 1.0, "steps": 10},
    function=rss_training,
)
