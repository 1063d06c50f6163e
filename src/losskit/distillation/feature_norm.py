"""ND loss: align student features with the teacher's class means and reward large norms
(paper 21, "Improving Knowledge Distillation via Regularizing Feature Norm and Direction").

Inputs (features, not class logits):

=====================  ===============  =================================================
argument               shape            meaning
=====================  ===============  =================================================
``student_features``   ``[N, D]`` float the student's penultimate features, after a
                                        projector to the teacher's width ``D`` when the
                                        widths differ (:func:`nd_projector`)
``teacher_features``   ``[N, D]`` float the teacher's penultimate features of the same
                                        samples; detached, only their norms are used
``class_means``        ``[C, D]`` float ``c_k``: the mean of the teacher's training
                                        features of class ``k`` (:func:`teacher_class_means`)
``target``             ``[N]`` integer  class indices; ``ignore_index`` entries skipped
=====================  ===============  =================================================

Formula, with ``e_y = c_y / ||c_y||``::

    ND_i = lam * (1 - <f_s_i, e_y> / max(||f_s_i||, ||f_t_i||))
         = lam * (1 - cos(f_s_i, c_y) * min(1, ||f_s_i|| / ||f_t_i||))

The *direction* term is ``cos(f_s, c_y)``, the *norm* term ``min(1, ||f_s|| / ||f_t||)``.
With ``||f_s|| >= ||f_t||`` the loss is ``lam * (1 - cos(f_s, c_y))``: it does not change when
``f_s`` is scaled, so its gradient is orthogonal to ``f_s``, and it is zero when ``f_s`` points
along ``c_y``. With ``||f_s|| < ||f_t||`` it is linear in ``f_s``, with the constant gradient
``-lam * e_y / ||f_t||``. That gradient moves ``f_s`` along the class mean and grows its norm
until the norm reaches the teacher's. ``ND_i = 0`` exactly when ``f_s_i`` has the direction
of ``c_y`` and ``||f_s_i|| >= ||f_t_i||``. Values lie in ``[0, 2 lam]``. ``reduction="mean"``
is the paper's ``(lam / B) sum_i``, taken over the samples that are not ignored.

Defaults (``CIFAR/train_cifar.sh`` and the README of the reference code): ``lam = 2.0``, the
KD++ value for ResNet-56 -> ResNet-20. Other pairs use 0.5 to 4.0, and the DKD++, DIST++ and
ReviewKD++ examples use 4.0. ND is not used alone. The paper adds it to an existing
distillation objective, and you build that sum yourself:

- KD++: ``CE + lam_kd * min(1, epoch / 20) * kd_loss(T=4) + nd_loss``. The KD weight is
  warmed up over 20 epochs (``--warm_up 20``), and ``lam_kd`` is 1.0 to 4.0 by pair.
- DKD++ and DIST++: the same, with DKD or DIST in place of KD.

Where this follows the paper rather than the reference code (``WangYZ1608/
Knowledge-Distillation-via-ND``, ``DirectNormLoss``): the code loops over samples in Python,
hard-codes ``.cuda()``, and stores the class means rounded to 4 decimals in JSON. Here the loss is
vectorised, the device follows the inputs, and the class means are kept at full precision,
accumulated in float64. As in the code, the max-norm is not detached: when ``||f_s||`` is the
larger norm, the gradient flows through it, which is what makes the loss ``1 - cos``. A zero
student feature with a zero teacher feature gives ``ND = lam``: the denominator is clamped to
the dtype's smallest positive number, where the paper's formula is 0/0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from losskit._core.checks import (
    check_class_target,
    check_finite,
    check_number,
    check_reduction,
    check_scores,
    checks_enabled,
)
from losskit._core.precision import compute_dtype, upcast_all
from losskit._core.reduction import reduce_loss, safe_target, sample_weights
from losskit._core.registry import register


def nd_loss(
    student_features: Tensor,
    class_means: Tensor,
    target: Tensor,
    *,
    teacher_features: Tensor,
    lam: float = 2.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """``lam * (1 - <f_s, c_y / ||c_y||> / max(||f_s||, ||f_t||))`` per sample. The teacher
    features and class means receive no gradient."""
    check_reduction(reduction)
    lam = check_number("lam", lam, low=0.0)
    check_scores(student_features, "student_features", min_classes=1)
    n, d = student_features.shape
    check_scores(teacher_features, "teacher_features", min_classes=1)
    if tuple(teacher_features.shape) != (n, d):
        raise ValueError(
            f"teacher_features must have the shape of student_features {(n, d)}, "
            f"got {tuple(teacher_features.shape)}"
        )
    _check_class_means(class_means, d)
    shape_nc = student_features[:, :1].expand(n, class_means.shape[0])  # a view, no memory
    check_class_target(target, shape_nc, ignore_index=ignore_index, allow_soft=False)
    s, t, c = upcast_all(student_features, teacher_features.detach(), class_means.detach())
    w, keep = sample_weights(target, None, ignore_index)
    y = safe_target(target, keep)
    direction = c / torch.linalg.vector_norm(c, dim=1, keepdim=True)
    along = (s * direction[y]).sum(dim=1)
    ref = torch.maximum(torch.linalg.vector_norm(s, dim=1), torch.linalg.vector_norm(t, dim=1))
    loss = lam * (1 - along / ref.clamp_min(torch.finfo(ref.dtype).tiny))
    return reduce_loss(loss, reduction, w).to(student_features.dtype)


class NDLoss(nn.Module):
    """Module form of :func:`nd_loss`; ``class_means [C, D]`` is a buffer.
    ``forward(student_features, teacher_features, target)``."""

    def __init__(
        self,
        class_means: Tensor,
        *,
        lam: float = 2.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_class_means(class_means)
        self.lam = check_number("lam", lam, low=0.0)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        self.register_buffer("class_means", class_means.detach().clone())

    def forward(self, student_features: Tensor, teacher_features: Tensor, target: Tensor) -> Tensor:
        return nd_loss(
            student_features, self.class_means, target, teacher_features=teacher_features,
            lam=self.lam, ignore_index=self.ignore_index, reduction=self.reduction,
        )  # fmt: skip


def class_means_from_features(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``[C, D]`` mean of ``features [N, D]`` per class of ``labels [N]``, accumulated in
    float64 and returned in the features' compute dtype. A class with no sample raises."""
    c = _check_num_classes(num_classes)
    sums, counts = _accumulate(None, None, features, labels, c)
    return _finish_means(sums, counts, features.dtype)


@torch.no_grad()
def teacher_class_means(
    model_or_feature_fn: nn.Module | Callable[[Tensor], Tensor],
    loader: Iterable,
    num_classes: int,
) -> Tensor:
    """The teacher's class means ``[C, D]`` over ``loader``, a DataLoader of ``(x, y)``.

    ``model_or_feature_fn(x)`` must return the teacher's penultimate features ``[B, D]``. Pass
    a module or a bound method such as ``teacher.features``. The module that owns it is put in
    eval mode for the pass and then restored to its previous mode. Inputs are moved to the
    module's device. The pass runs without gradient, and the sums are accumulated in float64."""
    c = _check_num_classes(num_classes)
    fn = model_or_feature_fn
    owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
    module = owner if isinstance(owner, nn.Module) else None
    device = next((p.device for p in module.parameters()), None) if module is not None else None
    was_training = module.training if module is not None else False
    sums = counts = None
    dtype = torch.float32
    try:
        if module is not None:
            module.eval()
        for batch in loader:
            x, y = batch[0], batch[1]
            if device is not None and isinstance(x, Tensor):
                x = x.to(device)
            feats = fn(x)
            dtype = feats.dtype if isinstance(feats, Tensor) else dtype
            sums, counts = _accumulate(sums, counts, feats, y, c)
    finally:
        if module is not None:
            module.train(was_training)
    if sums is None:
        raise ValueError("loader yielded no batches: no class mean can be computed")
    return _finish_means(sums, counts, dtype)


def nd_projector(in_features: int, out_features: int, *, dropout: float = 0.5) -> nn.Sequential:
    """The reference code's ``EmbTrans``: ``BatchNorm1d -> Dropout(0.5) -> Linear``. It maps the
    student's features to the teacher's width when the two differ. The linear bias starts at
    zero."""
    p = check_number("dropout", dropout, low=0.0, high=1.0, high_open=True)
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    linear = nn.Linear(in_features, out_features)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(in_features), nn.Dropout(p), linear)


def _check_class_means(class_means: Tensor, dim: int | None = None) -> None:
    if not isinstance(class_means, Tensor):
        raise ValueError(f"class_means must be a torch.Tensor, got {type(class_means).__name__}")
    if not class_means.is_floating_point():
        raise ValueError(f"class_means must be a floating tensor, got dtype {class_means.dtype}")
    if class_means.ndim != 2 or class_means.shape[0] == 0 or class_means.shape[1] == 0:
        raise ValueError(f"class_means must have shape [C, D], got {tuple(class_means.shape)}")
    if dim is not None and class_means.shape[1] != dim:
        raise ValueError(
            f"class_means must have the feature width D={dim} of student_features, "
            f"got shape {tuple(class_means.shape)}"
        )
    check_finite("class_means", class_means)
    if checks_enabled():
        zero = (torch.linalg.vector_norm(class_means, dim=1) == 0).nonzero().flatten()
        if zero.numel():
            raise ValueError(f"class_means rows {zero.tolist()[:10]} are zero: no direction")


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _accumulate(
    sums: Tensor | None, counts: Tensor | None, features: Tensor, labels: Tensor, c: int
) -> tuple[Tensor, Tensor]:
    """Add one batch to the float64 per-class sums and the counts."""
    check_scores(features, "features", min_classes=1)
    labels = torch.as_tensor(labels, device=features.device)
    n, d = features.shape
    check_class_target(labels, features[:, :1].expand(n, c), allow_soft=False, name="labels")
    if sums is None or counts is None:
        sums = torch.zeros(c, d, dtype=torch.float64, device=features.device)
        counts = torch.zeros(c, dtype=torch.int64, device=features.device)
    elif sums.shape[1] != d:
        raise ValueError(f"features changed width from {sums.shape[1]} to {d} between batches")
    sums.index_add_(0, labels, features.detach().to(torch.float64))
    counts += torch.bincount(labels, minlength=c)
    return sums, counts


def _finish_means(sums: Tensor, counts: Tensor, dtype: torch.dtype) -> Tensor:
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"labels have no sample of classes {empty[:10]} (of {len(empty)} empty): "
            "their class means are undefined"
        )
    return (sums / counts.unsqueeze(1)).to(compute_dtype(dtype))


register(
    "nd",
    kind="loss",
    family="distillation",
    papers=(21,),
    summary="ND loss: student features toward the teacher's class-mean direction, "
    "with norms pushed up to the teacher's.",
    defaults={"lam": 2.0},
    function=nd_loss,
    module=NDLoss,
)
