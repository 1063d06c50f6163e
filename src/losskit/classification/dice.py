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

Defaults: :func:`dice_loss` ``smooth = 1``, plain denominator, ``alpha = 0``;
:func:`self_adjusting_dice_loss` follows the paper's scripts: ``alpha = 0.01``,
``gamma = 1``, squared denominator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losskit._core.checks import check_number, check_reduction, is_soft
from losskit._core.registry import register
from losskit.classification._common import Batch, finish, prepare


def _log_p_and_1mp(x: Tensor) -> tuple[Tensor, Tensor]:
    """``log p`` and ``log(1 - p)`` of ``softmax(x)``, accurate even when ``p`` rounds to 1:
    for the top class ``1 - p`` is the softmax mass of the other classes."""
    logp = torch.log_softmax(x, dim=1)
    top = x.argmax(dim=1, keepdim=True)
    is_top = torch.zeros_like(x, dtype=torch.bool).scatter_(1, top, True)
    rest = torch.logsumexp(x.masked_fill(is_top, float("-inf")), dim=1, keepdim=True)
    log1m_top = rest - torch.logsumexp(x, dim=1, keepdim=True)
    p_low = torch.where(is_top, torch.zeros_like(logp), logp.exp())
    return logp, torch.where(is_top, log1m_top, torch.log1p(-p_low))


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
    logp, log1mp = _log_p_and_1mp(b.x)
    pt = torch.exp(logp if alpha == 0 else logp + alpha * log1mp)
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


class DiceLoss(nn.Module):
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
        super().__init__()
        self.smooth = check_number("smooth", smooth, low=0.0, low_open=True, high_open=True)
        self.alpha = check_number("alpha", alpha, low=0.0, high_open=True)
        self.square_denominator = bool(square_denominator)
        self.batch_dice = bool(batch_dice)
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)
        if self.batch_dice and reduction == "none":
            raise ValueError('reduction="none" has no per-sample value when batch_dice=True')
        self.register_buffer("weight", weight)

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
