"""Paper 15's two recipes for class-imbalanced learning: pseudo-labels and self-supervision.

**Semi-supervised** (:func:`semi_supervised_training`). A base classifier ``f_0`` is trained
on the imbalanced labelled set ``D_L``; it labels an unlabeled pool ``D_U`` with its argmax,
``y~ = argmax_c f_0(x)_c`` (no threshold, as the paper's ``gen_pseudolabels.py``); a fresh
model is trained on both with

    L(theta) = L_CE(D_L) + omega * L_CE(D~_U),

computed per step as the weighted mean ``sum_i w_i c_(y_i) l_i / sum_i w_i c_(y_i)`` over the
step's labelled batch (``w_i = 1``) and its share of the pseudo-labelled pool (``w_i =
omega``), ``c`` the optional per-class weights. ``omega = 1`` is the reference code's
training on the concatenation ``D_L u D~_U``; ``omega = 0`` is plain supervised training on
the very same labelled batches (tested; the labelled batch and the pool's share go through
the model in two forward passes, so this is exact for models without batch statistics or
randomness in the forward pass). Batches: :mod:`losskit.procedures.paired_batches`.

**Self-supervised pre-training, SSP** (:func:`ssp_training`). The backbone (the model without
its last layer) is first trained on a pretext task on the imbalanced training inputs alone,
no labels, then the whole model is trained with the (optionally class-weighted) CE. Pretexts
(:mod:`losskit.procedures.imbalance_pretext`): ``"rotation"``, predicting which of 0, 90,
180, 270 degrees an image was turned (the paper's CIFAR pretext, ``pretrain_rot.py``), and
``"contrastive"``, SimCLR-style InfoNCE between two noisy views (feature noise and feature
dropout) for inputs that are not images (sentence embeddings), standing in for the paper's
MoCo.

Defaults: Adam (lr 1e-3) instead of the paper's SGD (lr 0.1, 200 epochs, ResNet-32) to fit
small models on a CPU; unlabeled pool 5x the labelled set in the paper (the caller's choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_class_weight, check_number
from losskit._core.registry import register
from losskit.procedures.imbalance_pretext import PRETEXTS, pretrain_backbone
from losskit.procedures.paired_batches import check_count, generators, paired_batches

ModelFactory = Callable[[], nn.Module]
Augment = Callable[[Tensor, torch.Generator], Tensor]  # (batch, generator) -> augmented batch


def check_inputs(name: str, x: Tensor, *, allow_empty: bool = False) -> Tensor:
    """A floating, finite tensor ``[N, ...]`` (``N >= 1`` unless ``allow_empty``)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise ValueError(f"{name} must be a floating tensor [N, ...], got {type(x).__name__}")
    if len(x) == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return x


def check_targets(name: str, y: Tensor, n: int, num_classes: int) -> Tensor:
    """Integer class indices ``[n]`` in ``[0, num_classes)``."""
    if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must hold class indices in [0, {num_classes})")
    return y.long()


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, *, batch_size: int = 4096) -> Tensor:
    """``model(x)`` in eval mode, in chunks, without gradients (the model's mode is restored)."""
    check_inputs("x", x)
    batch_size = check_count("batch_size", batch_size, 1)
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def pseudo_labels(model: nn.Module, x: Tensor, *, batch_size: int = 4096) -> Tensor:
    """The base model's hard labels ``argmax_c model(x)_c``, int64 ``[N]``."""
    return predict_logits(model, x, batch_size=batch_size).argmax(dim=1)


def _num_classes(model: nn.Module, x: Tensor) -> int:
    out = predict_logits(model, x[:1])
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"model must map x to logits [N, C], C >= 2, got {tuple(out.shape)}")
    return int(out.shape[1])


def fit_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    x_pseudo: Tensor | None = None,
    y_pseudo: Tensor | None = None,
    pseudo_weight: float = 1.0,
    class_weight: Tensor | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    augment: Augment | None = None,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` in place (Adam) on the weighted CE of the module docstring; returns the
    mean training loss of every epoch. Without ``x_pseudo`` this is plain (class-weighted)
    cross-entropy training with the batches of :func:`paired_batches`. ``augment(batch,
    generator)``, when given, transforms every labelled batch (drawing from the labelled
    batch generator) and every pseudo-labelled chunk (drawing from the pool's generator)."""
    check_inputs("x", x)
    c = _num_classes(model, x)
    y = check_targets("y", y, len(x), c)
    if (x_pseudo is None) != (y_pseudo is None):
        raise ValueError("x_pseudo and y_pseudo must be given together")
    if x_pseudo is None:
        x_pseudo, y_pseudo = x[:0], y[:0]
    check_inputs("x_pseudo", x_pseudo, allow_empty=True)
    if x_pseudo.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_pseudo rows must have shape {tuple(x.shape[1:])} like x")
    y_pseudo = check_targets("y_pseudo", y_pseudo, len(x_pseudo), c)
    omega = check_number("pseudo_weight", pseudo_weight, low=0.0, high=math.inf, high_open=True)
    check_class_weight(class_weight, c, "class_weight")
    cw = torch.ones(c) if class_weight is None else class_weight.detach()
    cw = cw.to(device=x.device, dtype=x.dtype)
    epochs = check_count("epochs", epochs, 1)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    weight_decay = check_number("weight_decay", weight_decay, low=0.0)
    if augment is not None and not callable(augment):
        raise ValueError("augment must be a callable (batch, generator) -> batch")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen, pool_gen = generators(seed)
    history = []
    for _ in range(epochs):
        model.train()
        total, steps = 0.0, 0
        for idx, jdx in paired_batches(len(x), len(x_pseudo), batch_size, gen, pool_gen):
            xl, yl = x[idx], y[idx]
            wl = cw[yl]
            num = wl @ F.cross_entropy(model(augment(xl, gen) if augment else xl), yl,
                                       reduction="none")  # fmt: skip
            den = wl.sum()
            if len(jdx):  # a separate forward: the labelled part never sees the pool
                xp, yp = x_pseudo[jdx], y_pseudo[jdx]
                wp = omega * cw[yp]
                num = num + wp @ F.cross_entropy(model(augment(xp, pool_gen) if augment else xp),
                                                 yp, reduction="none")  # fmt: skip
                den = den + wp.sum()
            loss = num / den.clamp_min(torch.finfo(den.dtype).tiny)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        history.append(total / steps)
    return history


def _fresh(factory: ModelFactory, seed: int) -> nn.Module:
    if not callable(factory):
        raise ValueError("model_factory must be a callable () -> nn.Module")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model_factory must return an nn.Module, got {type(model).__name__}")
    return model


@dataclass
class SemiSupervisedResult:
    """The base model (labelled data only), the final model, the pool's pseudo-labels and
    the per-epoch training losses of both."""

    base: nn.Module
    model: nn.Module
    pseudo_labels: Tensor
    base_losses: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def semi_supervised_training(
    model_factory: ModelFactory,
    x: Tensor,
    y: Tensor,
    x_unlabeled: Tensor,
    *,
    unlabeled_weight: float = 1.0,
    base: nn.Module | None = None,
    class_weight: Tensor | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    augment: Augment | None = None,
    seed: int = 0,
) -> SemiSupervisedResult:
    """Paper 15's semi-supervised recipe (module docstring): train the base model on
    ``(x, y)`` (or use the trained ``base`` given), pseudo-label ``x_unlabeled``, then train a
    fresh model on both with weight ``unlabeled_weight`` (omega) on the pseudo-labelled term.

    Both models come from ``model_factory()`` under ``torch.manual_seed(seed)`` (same
    initialisation) and are trained with the same arguments and batch seed."""
    check_inputs("x_unlabeled", x_unlabeled)
    fit = dict(class_weight=class_weight, epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, augment=augment, seed=seed)  # fmt: skip
    base_losses: list[float] = []
    if base is None:
        base = _fresh(model_factory, seed)
        base_losses = fit_classifier(base, x, y, **fit)
    labels = pseudo_labels(base, x_unlabeled)
    model = _fresh(model_factory, seed)
    losses = fit_classifier(
        model, x, y, x_pseudo=x_unlabeled, y_pseudo=labels, pseudo_weight=unlabeled_weight, **fit
    )
    return SemiSupervisedResult(base, model, labels, base_losses, losses)


@dataclass
class SSPResult:
    """The model after self-supervised pre-training and supervised training, with the mean
    loss of every pre-training epoch and every supervised epoch."""

    model: nn.Module
    pretrain_losses: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def ssp_training(
    model_factory: ModelFactory,
    x: Tensor,
    y: Tensor,
    *,
    pretext: str = "rotation",
    image_shape: tuple[int, ...] | None = None,
    x_pretrain: Tensor | None = None,
    pretrain_epochs: int = 100,
    pretrain_kwargs: dict | None = None,
    class_weight: Tensor | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    augment: Augment | None = None,
    seed: int = 0,
) -> SSPResult:
    """Paper 15's SSP recipe (module docstring). ``model_factory()`` (seeded like
    :func:`semi_supervised_training`) must return an ``nn.Sequential`` whose last child is
    the classifier; the rest is the backbone. It is pre-trained on ``x_pretrain`` (default
    ``x``, the imbalanced training inputs, as in the paper) with
    :func:`~losskit.procedures.imbalance_pretext.pretrain_backbone` (``pretext``,
    ``image_shape`` for rotations, further ``pretrain_kwargs``, the same ``batch_size``,
    ``lr``, ``augment`` and ``seed``), then the whole model is trained by
    :func:`fit_classifier` (the classifier keeps its initialisation until then)."""
    if pretext not in PRETEXTS:
        raise ValueError(f"pretext must be one of {PRETEXTS}, got {pretext!r}")
    model = _fresh(model_factory, seed)
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        raise ValueError("model_factory must return an nn.Sequential [backbone..., classifier]")
    pre = pretrain_backbone(
        model[:-1],
        x if x_pretrain is None else x_pretrain,
        pretext=pretext,
        image_shape=image_shape,
        epochs=pretrain_epochs,
        batch_size=batch_size,
        lr=lr,
        augment=augment,
        seed=seed,
        **(pretrain_kwargs or {}),
    )
    fit = dict(class_weight=class_weight, epochs=epochs, batch_size=batch_size, lr=lr,
               weight_decay=weight_decay, augment=augment, seed=seed)  # fmt: skip
    losses = fit_classifier(model, x, y, **fit)
    return SSPResult(model, pre, losses)


register(
    "semi_supervised_pseudo_labels",
    kind="procedure",
    family="procedures",
    papers=(15,),
    summary="Train on imbalanced labels, pseudo-label extra unlabeled data with the argmax, "
    "retrain on L_CE(D_L) + omega L_CE(D~_U).",
    defaults={"unlabeled_weight": 1.0},
    function=semi_supervised_training,
)
register(
    "self_supervised_pretraining",
    kind="procedure",
    family="procedures",
    papers=(15,),
    summary="SSP: pre-train the backbone on a pretext task (rotation or contrastive views) on "
    "the imbalanced inputs, then train the classifier as usual.",
    defaults={"pretext": "rotation"},
    function=ssp_training,
)
