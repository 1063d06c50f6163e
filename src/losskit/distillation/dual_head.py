"""Dual-head knowledge distillation, DHKD (paper 23), and its logit-level loss BinaryKL.

Inputs: the ``[N, C]`` logits of the student's main head, the ``[N, C]`` logits of its
auxiliary head, the teacher's ``[N, C]`` logits (not probabilities: a logit-level loss needs
the logits that softmax discards), and class indices ``target [N]`` (``ignore_index`` entries
skipped). All of these come from :mod:`losskit.distillation._common`.

BinaryKL treats each class as its own binary problem, through the sigmoid of the logits
at temperature ``T``::

    BKL_i  = T^2 sum_c KL( Bern(sigmoid(t_ic / T)) || Bern(sigmoid(s_ic / T)) )
    BKLN_i = T^2 sum_c KL( Bern(1/2) || Bern(sigmoid((s_ic - t_ic) / T)) )
           = T^2 sum_c log cosh((s_ic - t_ic) / (2 T))              (BinaryKL-Norm)

The gradients are ``d BKL / d s_c = T (sigmoid(s_c / T) - sigmoid(t_c / T))`` and
``d BKLN / d s_c = T (sigmoid((s_c - t_c) / T) - 1/2)``. The second is bounded by ``T / 2``,
which is the stabilisation that BinaryKL-Norm brings. Each loss is 0 exactly when ``s = t``.
Neither is invariant to a shift of the logits: softmax KD gives
``KD(z + a, z) = 0``, but ``BKL(z + a, z) > 0`` for ``a != 0``. That shift is the information
a logit-level loss adds.

DHKD. The paper observes that putting a logit-level loss and the probability-level loss
(cross-entropy) on one linear classifier makes their gradients conflict in that classifier
and collapses it, while the two gradients do not conflict in the backbone. So the student
(:class:`DualHeadStudent`) gets two heads on shared features::

    L_i = ce_weight * CE(main_i, y_i) + kd_weight * KD_{T_kd}(main_i, t_i)
          + aux_weight * BKLN_T(aux_i, t_i)

The main head carries the probability-level losses, and the auxiliary head carries
BinaryKL-Norm. Neither head's loss reaches the other head's parameters; the backbone receives
both gradients. No gradient is stopped between the heads, because separate heads are enough.
Inference uses the main head.

Defaults are the official code's (``penghui-yang/DHKD``: ``train_student.py``,
``helper/loops.py``). BinaryKL temperature ``T = 2``, ``ce_weight = 1`` (``-r``),
``aux_weight = 1`` (``-a``; 0.1 on ImageNet), ``kd_weight = 0``. The released code trains the
main head with CE only. KD on the main head (``kd_weight > 0``, ``T_kd = 4``) is an option
because the abstract counts KD among the probability-level losses. The code's CIFAR recipe uses
a non-linear auxiliary head (``aux_head="nonlinear"``: Linear(200), Dropout(0.1),
BatchNorm, ReLU, Linear) and gradient alignment (:func:`gradient_aligned_backward`). Its
ImageNet recipe uses a linear auxiliary head and no alignment.

Where this follows the paper rather than the code: the code clamps the sigmoids to
``[1e-8, 1 - 1e-8]``, so the loss goes flat, with zero gradient, once ``|x / T| > 18.4``.
Here the exact stable forms are used (softplus, and ``log1p(expm1(-|x|) / 2)`` for
``log cosh``) with no clamp. Where the clamp is inactive the values are the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number, check_reduction, check_scores
from losskit._core.precision import upcast_all
from losskit._core.registry import register
from losskit.distillation._common import (
    check_temperature,
    finish_distill,
    kl_rows,
    prepare_distill,
)


def _binary_kl_rows(s: Tensor, t: Tensor, temp: float, normalized: bool) -> Tensor:
    """Per-sample ``T^2 sum_c KL`` of BinaryKL (or BinaryKL-Norm) in a stable form."""
    if normalized:
        x = ((s - t) / temp).abs()
        # log cosh(x/2) = x/2 + log((1 + e^-x) / 2), accurate near 0 and for large x
        per_class = 0.5 * x + torch.log1p(0.5 * torch.expm1(-x))
    else:
        u, v = s / temp, t / temp
        # log sigmoid(z) = -softplus(-z), log(1 - sigmoid(z)) = -softplus(z)
        per_class = torch.sigmoid(v) * (F.softplus(-u) - F.softplus(-v)) + torch.sigmoid(-v) * (
            F.softplus(u) - F.softplus(v)
        )
    return per_class.sum(dim=1) * temp**2


def binary_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None = None,
    *,
    temperature: float = 2.0,
    normalized: bool = False,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """BinaryKL, or BinaryKL-Norm with ``normalized=True``, between the student's and the
    teacher's logits. ``target`` is optional and only marks ignored samples."""
    temp = check_temperature(temperature)
    b = prepare_distill(
        student_logits, teacher_logits, target, ignore_index=ignore_index, reduction=reduction
    )
    return finish_distill(_binary_kl_rows(b.s, b.t, temp, bool(normalized)), b, reduction)


def _check_hyper(
    temperature: float, ce_weight: float, aux_weight: float, kd_weight: float, kd_temperature: float
) -> tuple[float, float, float, float, float]:
    """Validate the temperatures (> 0) and the term weights (>= 0)."""
    return (
        check_temperature(temperature),
        check_number("ce_weight", ce_weight, low=0.0),
        check_number("aux_weight", aux_weight, low=0.0),
        check_number("kd_weight", kd_weight, low=0.0),
        check_temperature(kd_temperature, "kd_temperature"),
    )


def dual_head_kd_loss(
    main_logits: Tensor,
    aux_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None = None,
    *,
    temperature: float = 2.0,
    ce_weight: float = 1.0,
    aux_weight: float = 1.0,
    kd_weight: float = 0.0,
    kd_temperature: float = 4.0,
    normalized: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """DHKD: CE (and KD) on the main head plus BinaryKL-Norm (``normalized=False``: BinaryKL)
    at ``temperature`` on the auxiliary head. ``target`` is required when ``ce_weight > 0``."""
    temp, ce_w, aux_w, kd_w, kd_temp = _check_hyper(
        temperature, ce_weight, aux_weight, kd_weight, kd_temperature
    )
    check_scores(main_logits, "main_logits")
    check_scores(aux_logits, "aux_logits")
    if tuple(aux_logits.shape) != tuple(main_logits.shape):
        raise ValueError(
            f"aux_logits must have the shape of main_logits {tuple(main_logits.shape)}, "
            f"got {tuple(aux_logits.shape)}"
        )
    b = prepare_distill(
        main_logits, teacher_logits, target, ignore_index=ignore_index, reduction=reduction,
        require_target=ce_w > 0,
    )  # fmt: skip
    s, t, a = upcast_all(b.s, b.t, aux_logits)
    loss = torch.zeros_like(s[:, 0])  # a zero weight leaves its term out of the graph
    if aux_w > 0:
        loss = loss + aux_w * _binary_kl_rows(a, t, temp, bool(normalized))
    if ce_w > 0:
        loss = loss + ce_w * F.cross_entropy(s, b.y, reduction="none")
    if kd_w > 0:
        kd = kl_rows(torch.log_softmax(t / kd_temp, 1), torch.log_softmax(s / kd_temp, 1))
        loss = loss + kd_w * kd_temp**2 * kd
    return finish_distill(loss, b, reduction)


class DualHeadLogits(NamedTuple):
    """Both heads' logits: ``main`` (used at inference) and ``aux``."""

    main: Tensor
    aux: Tensor


class DualHeadStudent(nn.Module):
    """A backbone with a main linear head and an auxiliary head on the same features.

    ``backbone`` is an ``nn.Module`` that returns features ``[N, D]``, or an int ``D`` when the
    inputs already are features (the backbone is then the identity). ``in_features`` defaults
    to ``backbone.out_features`` (for an ``nn.Sequential``, that of its last layer that has
    one). ``aux_head="nonlinear"`` is the official CIFAR head (Linear(``aux_hidden``),
    Dropout(``aux_dropout``), BatchNorm, ReLU, Linear). ``forward(x)`` returns
    :class:`DualHeadLogits` in training mode and only the main head's logits in eval mode,
    which is what inference uses. Pass ``both=True`` or ``both=False`` to choose explicitly."""

    def __init__(
        self,
        backbone: nn.Module | int,
        num_classes: int,
        *,
        in_features: int | None = None,
        aux_head: str = "linear",
        aux_hidden: int = 200,
        aux_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(backbone, int) and not isinstance(backbone, bool):
            in_features, backbone = backbone, nn.Identity()
        elif isinstance(backbone, nn.Module):
            in_features = in_features or _out_features(backbone)
        else:
            raise ValueError(f"backbone must be an nn.Module or an int, got {backbone!r:.60}")
        for name, v in (("in_features", in_features), ("aux_hidden", aux_hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        check_choice("aux_head", aux_head, ("linear", "nonlinear"))
        p = check_number("aux_dropout", aux_dropout, low=0.0, high=1.0, high_open=True)
        self.backbone = backbone
        self.head = nn.Linear(in_features, num_classes)
        self.aux_head = (
            nn.Linear(in_features, num_classes)
            if aux_head == "linear"
            else nn.Sequential(
                nn.Linear(in_features, aux_hidden),
                nn.Dropout(p),
                nn.BatchNorm1d(aux_hidden),
                nn.ReLU(),
                nn.Linear(aux_hidden, num_classes),
            )  # fmt: skip
        )

    def forward(self, x: Tensor, *, both: bool | None = None) -> DualHeadLogits | Tensor:
        f = self.backbone(x)
        if not (self.training if both is None else both):
            return self.head(f)
        return DualHeadLogits(self.head(f), self.aux_head(f))


def _out_features(backbone: nn.Module) -> int | None:
    """``backbone.out_features``, or that of the last layer of an ``nn.Sequential`` with one."""
    layers = list(backbone) if isinstance(backbone, nn.Sequential) else [backbone]
    widths = [m.out_features for m in layers if isinstance(getattr(m, "out_features", None), int)]
    return widths[-1] if widths else None


class DualHeadKDLoss(nn.Module):
    """Module form of :func:`dual_head_kd_loss`.
    ``forward(main_logits, aux_logits, teacher_logits, target=None)``; with a
    :class:`DualHeadStudent` call ``loss(*student(x), teacher_logits, y)``."""

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        ce_weight: float = 1.0,
        aux_weight: float = 1.0,
        kd_weight: float = 0.0,
        kd_temperature: float = 4.0,
        normalized: bool = True,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        temp, ce_w, aux_w, kd_w, kd_temp = _check_hyper(
            temperature, ce_weight, aux_weight, kd_weight, kd_temperature
        )
        self.options = {
            "temperature": temp,
            "ce_weight": ce_w,
            "aux_weight": aux_w,
            "kd_weight": kd_w,
            "kd_temperature": kd_temp,
            "normalized": bool(normalized),
            "ignore_index": ignore_index,
            "reduction": check_reduction(reduction),
        }

    def forward(
        self,
        main_logits: Tensor,
        aux_logits: Tensor,
        teacher_logits: Tensor,
        target: Tensor | None = None,
    ) -> Tensor:
        return dual_head_kd_loss(main_logits, aux_logits, teacher_logits, target, **self.options)


class BinaryKLLoss(nn.Module):
    """Module form of :func:`binary_kl_loss`. ``forward(student, teacher, target=None)``."""

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        normalized: bool = False,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.options = {
            "temperature": check_temperature(temperature), "normalized": bool(normalized),
            "ignore_index": ignore_index, "reduction": check_reduction(reduction),
        }  # fmt: skip

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor | None = None) -> Tensor:
        return binary_kl_loss(student, teacher, target, **self.options)


def gradient_aligned_backward(
    main_loss: Tensor, aux_loss: Tensor, parameters: Iterable[nn.Parameter]
) -> None:
    """The official code's gradient alignment (``--ga``), a PCGrad step against the main loss.

    ``g_main`` and ``g_aux`` are the gradients over all ``parameters`` taken together. When
    ``<g_aux, g_main> < 0``, ``g_aux`` loses its component along ``g_main``, and the sum
    ``g_main + g_aux`` is added to each parameter's ``.grad``, as ``backward`` would. The main
    loss is :func:`dual_head_kd_loss` with ``aux_weight=0``; the auxiliary loss is the same
    call with ``ce_weight=0, kd_weight=0``."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("parameters holds no tensor that requires grad")
    g_main = torch.autograd.grad(main_loss, params, retain_graph=True, allow_unused=True)
    g_aux = torch.autograd.grad(aux_loss, params, allow_unused=True)
    g_main = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_main, strict=True)]
    g_aux = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_aux, strict=True)]
    dot = sum((a * m).sum() for a, m in zip(g_aux, g_main, strict=True))
    sq = sum((m * m).sum() for m in g_main)
    # without a device sync: the coefficient is 0 when there is no conflict (or g_main = 0)
    coef = torch.where(sq > 0, dot.clamp(max=0) / torch.where(sq > 0, sq, 1.0), 0.0)
    for p, m, a in zip(params, g_main, g_aux, strict=True):
        g = m + a - coef * m
        p.grad = g if p.grad is None else p.grad + g


register(
    "binary_kl",
    kind="loss",
    family="distillation",
    papers=(23,),
    summary="BinaryKL: per-class sigmoid KL between teacher and student logits (logit-level, "
    "not shift-invariant); normalized=True gives BinaryKL-Norm.",
    defaults={"temperature": 2.0, "normalized": False},
    function=binary_kl_loss,
    module=BinaryKLLoss,
)

register(
    "dual_head_kd",
    kind="loss",
    family="distillation",
    papers=(23,),
    summary="DHKD: CE on the student's main head, BinaryKL-Norm to the teacher's logits on an "
    "auxiliary head over shared features.",
    defaults={
        "temperature": 2.0,
        "ce_weight": 1.0,
        "aux_weight": 1.0,
        "kd_weight": 0.0,
        "kd_temperature": 4.0,
        "normalized": True,
    },  # fmt: skip
    function=dual_head_kd_loss,
    module=DualHeadKDLoss,
)
