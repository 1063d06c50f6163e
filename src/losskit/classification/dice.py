"""Soft Dice loss and the self-adjusting Dice loss (paper 17, "Dice Loss for Data-imbalanced
NLP Tasks").

With a predicted probability ``p`` and a label ``y`` in ``[0, 1]``, the self-adjusting score
is ``p~ = (1 - p)^alpha * p`` (``alpha = 0``: plain soft Dice) and, with ``k = 2`` for the
squared denominator and ``k = 1`` otherwise,

    per example:  d(p, y) = 1 - (2 p~ y + gamma) / (p~^k + y^k + gamma)
    per batch:    D       = 1 - (2 sum_i p~_i y_i + gamma) / (sum_i p~_i^k + sum_i y_i^k + gamma)

``gamma`` (``smooth``) must be positive. Every value lies in ``[0, 1]``; the numerators are
formed as ``(p~ - y)^2`` (``k = 2``) or ``p~ (1 - y) + y (1 - p~)`` (``k = 1``), so they are
never negative and ``p~ = y`` gives exactly 0 in the squared form.

Inputs (token tagging: flatten ``[B, T, C]`` to ``[N, C]`` and use ``ignore_index``):

- ``logits[N]`` or ``[N, 1]``: binary, ``p = sigmoid(logits)``, one Dice term for the
  positive class; ``target[N]`` integer ``{0, 1}`` or floating probabilities in ``[0, 1]``.
- ``logits[N, C]``, ``C >= 2``: ``p = softmax(logits)``; one Dice term per class, averaged over
  the ``C`` classes (``[N, 2]`` therefore averages the positive and negative class terms);
  ``target`` as everywhere in ``losskit.classification``.

``batch_dice=False`` (default): ``d`` per example; ``reduction`` and class ``weight`` /
``ignore_index`` follow ``_core/reduction.py`` (``weight[y_i]`` scales sample ``i``; with
probability targets ``weight[c]`` scales the class-``c`` term and ``"mean"`` divides by N).
``batch_dice=True``: one Dice ``D_c`` per class over the non-ignored samples (the binary path
of the reference); ``"mean"`` averages ``D_c`` over classes weighted by ``weight[c]``,
``"sum"`` adds ``weight[c] D_c``, and ``"none"`` is rejected (there is no per-sample value).
Adding easy negatives (``p = 0``, ``y = 0``) leaves ``D`` unchanged.

Differences from the reference ``ShannonAI/dice_loss_for_NLP`` (``loss/dice_loss.py``): its
multiclass path without the squared denominator mixes a per-example numerator with a batch
denominator, and with it is per-example but summed over classes; here the per-example and batch
forms are each consistent and classes are averaged. Its OHEM option (keep the hardest
negatives) is not implemented. ``1 - p`` is taken in log space, so ``alpha > 0`` keeps finite
gradients when ``p`` rounds to 1.

Cost: ``p~`` for ``alpha > 0`` and the per-example multiclass Dice with class indices (the
common case) are small autograd Functions with hand-written backward passes that work in place
and keep only ``p~`` for the backward pass (autograd through the same formulas keeps seven to
nine ``[N, C]`` tensors). The other paths (binary, soft targets, ``batch_dice``) stay in plain
autograd on top of ``p~``.

Defaults: :func:`dice_loss` ``smooth = 1``, plain denominator, ``alpha = 0``;
:func:`self_adjusting_dice_loss` follows the paper's scripts: ``alpha = 0.01``,
``gamma = 1``, squared denominator.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from losskit._core.checks import check_number, check_reduction, is_soft
from losskit._core.registry import register
from losskit.classification._common import Batch, ClassLossModule, finish, prepare


class _SelfAdjustedSoftmax(torch.autograd.Function):
    """``p~ = p (1 - p)^alpha`` with ``p = softmax(x)`` per row, ``alpha > 0``.

    ``1 - p`` is taken in log space for the row's top class ``t``: ``1 - p_t = exp(r - L)``
    with ``r`` the logsumexp of the other classes and ``L`` that of all (the other classes
    have ``p <= 1/2``, so ``log1p(-p)`` is accurate for them). The backward uses
    ``d p~_c / d x_k = p~_c (1 - alpha p_c / (1 - p_c)) ([c = k] - p_k)`` and recomputes
    ``e_k = exp(x_k - r)`` (``p_k = (1 - p_t) e_k`` off the top), writing the top class's
    term through ``e`` so that it stays finite when ``p_t`` rounds to 1. One ``[N, C]``
    buffer forward, two backward (autograd through the log-space form forms about fifteen).
    First derivatives only."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        two = torch.topk(x, 2, dim=1)
        top, m1, m2 = two.indices[:, :1], two.values[:, :1], two.values[:, 1:]
        pt = torch.sub(x, m2).exp_().scatter_(1, top, 0.0)  # exp(x_k - m2) off the top
        rest = m2 + torch.log(pt.sum(dim=1, keepdim=True))  # the sum is >= 1
        lse = torch.logaddexp(m1, rest)
        log_q = rest - lse  # log(1 - p_top)
        # off the top: p~ = exp(log p + alpha log1p(-p)), log p = x - lse
        pt.mul_(-torch.exp(m2 - lse)).log1p_()
        torch.add(x, pt, alpha=alpha, out=pt).sub_(lse).exp_()
        pt.scatter_(1, top, torch.exp(m1 - lse + alpha * log_q))
        ctx.alpha = alpha
        ctx.save_for_backward(x, pt, top, rest, lse, log_q)
        return pt

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, pt, top, rest, lse, log_q = ctx.saved_tensors
        a = ctx.alpha
        q, p_top = torch.exp(log_q), torch.exp(x.gather(1, top) - lse)
        e = torch.sub(x, rest).exp_().scatter_(1, top, 0.0)  # 0 at the top
        # beta = grad p~ (1 - a p / (1 - p)) off the top, 0 at the top;
        # p / (1 - p) = 1 / (1 / p - 1) is exact for small p and 0 at p = 0
        out = torch.mul(e, q).reciprocal_().sub_(1.0).reciprocal_().mul_(-a).add_(1.0)
        out.mul_(pt).mul_(grad).scatter_(1, top, 0.0)
        s = out.sum(dim=1, keepdim=True)
        g_top = grad.gather(1, top) * pt.gather(1, top)
        # off the top: beta_k - p_k (s + g_top) + g_top a p_top e_k, with p_k = q e_k
        out.addcmul_(e, g_top * (a * p_top - q) - q * s)
        return out.scatter_(1, top, g_top * (q - a * p_top) - p_top * s), None


class _HardDiceRows(torch.autograd.Function):
    """Per-example Dice ``(1/C) sum_c d(p~_c, [c = y])`` for class indices ``y`` from the
    scores ``p~[N, C]``, with ``k = 2`` (squared denominator) or ``1``:
    ``d(t, 0) = t^k / (t^k + gamma)``, ``d(t, 1) = (1 - t)^k / (t^k + 1 + gamma)``. Evaluated
    in place in one ``[N, C]`` buffer each way (autograd forms about ten). First derivatives
    only."""

    @staticmethod
    def forward(ctx, pt: Tensor, y: Tensor, gamma: float, square: bool) -> Tensor:
        t = pt.gather(1, y[:, None])
        d = torch.reciprocal(pt)
        if square:
            d.square_()
        d.mul_(gamma).add_(1.0).reciprocal_()  # t^k / (t^k + gamma), exact 0 at t = 0
        den = (t * t if square else t) + (1.0 + gamma)
        d.scatter_(1, y[:, None], ((1.0 - t) ** 2 if square else 1.0 - t) / den)
        ctx.gamma, ctx.square = gamma, square
        ctx.save_for_backward(pt, y)
        return d.sum(dim=1) / pt.shape[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        pt, y = ctx.saved_tensors
        gamma, coef = ctx.gamma, grad[:, None] / pt.shape[1]
        t = pt.gather(1, y[:, None])
        if ctx.square:  # d'(t, 0) = 2 gamma t / (t^2 + gamma)^2
            g = torch.mul(pt, pt).add_(gamma).square_().reciprocal_().mul_(pt)
            g.mul_(2.0 * gamma * coef)
            g_y = 2.0 * (t - 1.0) * (1.0 + gamma + t) / (t * t + 1.0 + gamma) ** 2
        else:  # d'(t, 0) = gamma / (t + gamma)^2
            g = torch.add(pt, gamma).square_().reciprocal_().mul_(gamma * coef)
            g_y = -(2.0 + gamma) / (t + 1.0 + gamma) ** 2
        return g.scatter_(1, y[:, None], g_y * coef), None, None, None


def _adjusted_softmax(x: Tensor, alpha: float) -> Tensor:
    """``p~ = (1 - p)^alpha p`` of ``p = softmax(x)``."""
    return torch.softmax(x, dim=1) if alpha == 0 else _SelfAdjustedSoftmax.apply(x, alpha)


def _inputs(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
) -> tuple[Batch, bool]:
    """Validate and bring binary inputs to the two-class form ``[0, logit]``."""
    if not isinstance(logits, Tensor) or logits.ndim not in (1, 2):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must have shape [N], [N, 1] or [N, C], got {shape}")
    binary = logits.ndim == 1 or logits.shape[1] == 1
    if not binary:
        return prepare(
            logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction
        ), False
    x = logits.reshape(-1)
    if isinstance(target, Tensor) and is_soft(target):
        if tuple(target.shape) != tuple(x.shape):
            raise ValueError(
                f"target with probabilities must have shape {tuple(x.shape)} for binary "
                f"logits, got {tuple(target.shape)}"
            )
        if weight is not None:
            raise ValueError("weight needs integer targets when logits are binary ([N])")
        target = torch.stack([1 - target, target], dim=1)
    elif isinstance(target, Tensor) and tuple(target.shape) != tuple(x.shape):
        raise ValueError(
            f"target must have shape ({x.shape[0]},) to match binary logits of shape "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    two = torch.stack([torch.zeros_like(x), x], dim=1)
    return prepare(two, target, weight=weight, ignore_index=ignore_index, reduction=reduction), True


def _dice(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float,
    square_denominator: bool,
    alpha: float,
    batch_dice: bool,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    gamma_name: str = "smooth",
) -> Tensor:
    gamma = check_number(gamma_name, gamma, low=0.0, low_open=True, high_open=True)
    alpha = check_number("alpha", alpha, low=0.0, high_open=True)
    check_reduction(reduction)
    if batch_dice and reduction == "none":
        raise ValueError('reduction="none" has no per-sample value when batch_dice=True')
    b, binary = _inputs(logits, target, weight, ignore_index, reduction)
    if binary and batch_dice and weight is not None:
        raise ValueError("weight has no effect on the single-class binary batch Dice")
    pt = _adjusted_softmax(b.x, alpha)
    if not (binary or batch_dice or b.soft):
        return finish(_HardDiceRows.apply(pt, b.y, gamma, square_denominator), b, reduction)
    y = b.y if b.soft else torch.zeros_like(pt).scatter_(1, b.y[:, None], 1.0)
    if binary:
        pt, y = pt[:, 1:], y[:, 1:]
    if square_denominator:
        gap, den = (pt - y) ** 2, pt**2 + y**2
    else:
        gap, den = pt * (1 - y) + y * (1 - pt), pt + y
    if not batch_dice:
        d = gap / (den + gamma)
        if b.soft and b.weight is not None:
            d = d * b.weight
        return finish(d.mean(dim=1), b, reduction)
    if b.keep is not None:
        keep = b.keep[:, None].to(pt.dtype)
        gap, den = gap * keep, den * keep
    per_class = gap.sum(dim=0) / (den.sum(dim=0) + gamma)
    cw = torch.ones_like(per_class) if b.weight is None or binary else b.weight
    out = (cw * per_class).sum()
    return (out if reduction == "sum" else out / cw.sum()).to(b.dtype)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1.0,
    square_denominator: bool = False,
    alpha: float = 0.0,
    batch_dice: bool = False,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Soft Dice loss (paper 17's DL; ``alpha > 0`` gives its self-adjusting form). See the
    module docstring for the formula, the input table and the per-example vs batch forms."""
    return _dice(
        logits, target, gamma=smooth, square_denominator=square_denominator, alpha=alpha,
        batch_dice=batch_dice, weight=weight, ignore_index=ignore_index, reduction=reduction,
    )  # fmt: skip


def self_adjusting_dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.01,
    gamma: float = 1.0,
    square_denominator: bool = True,
    batch_dice: bool = False,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Self-adjusting Dice of paper 17: ``p~ = (1 - p)^alpha p`` down-weights easy examples;
    ``gamma`` is the smoothing term. Equals :func:`dice_loss` with ``smooth=gamma``."""
    return _dice(
        logits, target, gamma=gamma, square_denominator=square_denominator, alpha=alpha,
        batch_dice=batch_dice, weight=weight, ignore_index=ignore_index, reduction=reduction,
        gamma_name="gamma",
    )  # fmt: skip


class DiceLoss(ClassLossModule):
    """Module form of :func:`dice_loss`; ``weight`` is a buffer."""

    def __init__(
        self,
        *,
        smooth: float = 1.0,
        square_denominator: bool = False,
        alpha: float = 0.0,
        batch_dice: bool = False,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.smooth = check_number("smooth", smooth, low=0.0, low_open=True, high_open=True)
        self.alpha = check_number("alpha", alpha, low=0.0, high_open=True)
        self.square_denominator = bool(square_denominator)
        self.batch_dice = bool(batch_dice)
        if self.batch_dice and reduction == "none":
            raise ValueError('reduction="none" has no per-sample value when batch_dice=True')

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return _dice(
            logits, target, gamma=self.smooth, square_denominator=self.square_denominator,
            alpha=self.alpha, batch_dice=self.batch_dice, weight=self.weight,
            ignore_index=self.ignore_index, reduction=self.reduction,
        )  # fmt: skip


class SelfAdjustingDiceLoss(DiceLoss):
    """Module form of :func:`self_adjusting_dice_loss` (paper defaults)."""

    def __init__(
        self,
        *,
        alpha: float = 0.01,
        gamma: float = 1.0,
        square_denominator: bool = True,
        batch_dice: bool = False,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        check_number("gamma", gamma, low=0.0, low_open=True, high_open=True)
        super().__init__(
            smooth=gamma, square_denominator=square_denominator, alpha=alpha,
            batch_dice=batch_dice, weight=weight, ignore_index=ignore_index, reduction=reduction,
        )  # fmt: skip


register(
    "dice",
    kind="loss",
    family="classification",
    papers=(17,),
    summary="Soft Dice loss, per example or over the batch (F1-oriented, imbalance-robust).",
    defaults={"smooth": 1.0, "square_denominator": False, "alpha": 0.0},
    function=dice_loss,
    module=DiceLoss,
)
register(
    "self_adjusting_dice",
    kind="loss",
    family="classification",
    papers=(17,),
    summary="Self-adjusting Dice: (1-p)^alpha p de-emphasises easy negatives.",
    defaults={"alpha": 0.01, "gamma": 1.0, "square_denominator": True},
    function=self_adjusting_dice_loss,
    module=SelfAdjustingDiceLoss,
)
