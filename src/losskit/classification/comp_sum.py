"""Comp-sum losses (paper 37: Mao, Mohri, Zhong, "Cross-Entropy Loss Functions: Theoretical
Analysis and Applications", ICML 2023) and their named members.

A comp-sum loss composes a function ``Phi_tau`` with the sum of exponentiated score gaps::

    l_tau(h, y) = Phi_tau( sum_{y' != y} exp(h_{y'} - h_y) ),
    Phi_tau(u)  = ((1 + u)^(1 - tau) - 1) / (1 - tau)    (tau != 1),   log(1 + u)   (tau = 1).

Since ``1 + sum_{y' != y} exp(h_{y'} - h_y) = 1 / p_y`` with ``p = softmax(h)``, this is
``l_tau = (1 - p_y^(tau - 1)) / (tau - 1) = integral_0^s exp((1 - tau) t) dt`` with
``s = -log p_y`` the cross-entropy. Members:

==========  ==========================================  ====================================
``tau``     loss                                        name
==========  ==========================================  ====================================
0           ``(1 - p_y) / p_y = exp(s) - 1``            sum-exponential loss
1           ``-log p_y``                                cross-entropy (logistic loss)
1 + q       ``(1 - p_y^q) / q``                         generalized cross-entropy (GCE)
2           ``1 - p_y``                                 mean absolute error (MAE)
==========  ==========================================  ====================================

``l_tau`` decreases in ``tau`` for a fixed ``p_y`` and is bounded by ``1 / (tau - 1)`` for
``tau > 1``; for ``tau < 1`` it grows like ``exp((1 - tau) s)``. It is computed from the
log-softmax as ``expm1((1 - tau) s) / (1 - tau)``, which is exact at ``tau = 1`` (the CE
branch) and continuous and accurate around it. Soft targets ``q[N, C]`` give the expectation
``sum_c q_c l_tau(h, c)`` (weighted by ``weight_c`` when given). The paper defines the family
for ``tau >= 0``; larger ``tau`` is allowed (it stays a bounded, decreasing function of
``p_y``). The adversarial counterpart is in
:mod:`losskit.classification.adversarial_comp_sum`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.classification._common import (
    Batch,
    ClassLossModule,
    finish,
    per_class_expectation,
    prepare,
    target_nll,
)


def _phi_of_ce(s: Tensor, tau: float) -> Tensor:
    """``l_tau`` as a function of the cross-entropy ``s = -log p >= 0``."""
    if tau == 1.0:
        return s
    a = 1.0 - tau
    return torch.expm1(a * s) / a


def comp_sum_per_class(b: Batch, tau: float) -> Tensor:
    """Per-sample ``l_tau`` (hard targets) or its expectation under ``b.y`` (soft targets),
    before class weights and reduction. Shared with the adversarial variant."""
    if not b.soft:
        # a function of p_y alone: no [N, C] intermediate beyond cross-entropy's
        return _phi_of_ce(target_nll(b), tau)
    s = -torch.log_softmax(b.x, dim=1)
    # classes with no target mass must not reach exp(): 0 * inf would be NaN
    s = torch.where(b.y > 0, s, torch.zeros_like(s))
    return per_class_expectation(_phi_of_ce(s, tau), b)


def _check_tau(tau: float) -> float:
    return check_number("tau", tau, low=0.0, high=math.inf, high_open=True)


def comp_sum_loss(
    logits: Tensor,
    target: Tensor,
    *,
    tau: float = 1.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Comp-sum loss ``l_tau = (1 - p_y^(tau-1)) / (tau-1)`` (paper 37), ``tau >= 0``.

    ``tau = 1`` is cross-entropy (and matches :func:`~losskit.classification.cross_entropy`),
    ``tau = 2`` the MAE ``1 - p_y``, ``tau = 1 + q`` GCE, ``tau = 0`` the sum-exponential
    loss. ``weight``, ``ignore_index`` and ``reduction`` follow the classification contract.
    """
    t = _check_tau(tau)
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    return finish(comp_sum_per_class(b, t), b, reduction)


def generalized_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    q: float = 0.7,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Generalized cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018), ``q in (0, 1]``.

    A member of the comp-sum family of paper 37: identical to ``comp_sum_loss(tau=1 + q)``.
    ``q -> 0`` tends to cross-entropy, ``q = 1`` is :func:`mean_absolute_error_loss`. Default
    ``q = 0.7`` as in Zhang & Sabuncu.
    """
    qq = check_number("q", q, low=0.0, high=1.0, low_open=True)
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    return finish(comp_sum_per_class(b, 1.0 + qq), b, reduction)


def mean_absolute_error_loss(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Mean absolute error ``1 - p_y``: the comp-sum member ``tau = 2`` of paper 37.

    Some libraries (and Ghosh et al. 2017) write MAE as the L1 distance
    ``||e_y - p||_1 = 2 (1 - p_y)``; losskit keeps the paper-37 scale ``1 - p_y`` (multiply by
    two for the other convention). Soft targets give ``1 - sum_c q_c p_c``.
    """
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    return finish(comp_sum_per_class(b, 2.0), b, reduction)


class CompSumLoss(ClassLossModule):
    """Module form of :func:`comp_sum_loss`; ``tau`` is validated here."""

    def __init__(
        self,
        *,
        tau: float = 1.0,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.tau = _check_tau(tau)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return comp_sum_loss(
            logits,
            target,
            tau=self.tau,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class GeneralizedCrossEntropyLoss(ClassLossModule):
    """Module form of :func:`generalized_cross_entropy`; ``q`` is validated here."""

    def __init__(
        self,
        *,
        q: float = 0.7,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.q = check_number("q", q, low=0.0, high=1.0, low_open=True)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return generalized_cross_entropy(
            logits,
            target,
            q=self.q,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class MeanAbsoluteErrorLoss(ClassLossModule):
    """Module form of :func:`mean_absolute_error_loss`."""

    def __init__(
        self, *, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(weight, ignore_index, reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return mean_absolute_error_loss(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


register(
    "comp_sum",
    kind="loss",
    family="classification",
    papers=(37,),
    summary="Comp-sum loss (1 - p_y^(tau-1))/(tau-1): tau=0 sum-exp, 1 CE, 1+q GCE, 2 MAE.",
    defaults={"tau": 1.0},
    function=comp_sum_loss,
    module=CompSumLoss,
)
register(
    "generalized_cross_entropy",
    kind="loss",
    family="classification",
    papers=(37,),
    summary="Generalized cross-entropy (1 - p_y^q)/q; member of the comp-sum family (tau=1+q).",
    defaults={"q": 0.7},
    function=generalized_cross_entropy,
    module=GeneralizedCrossEntropyLoss,
)
register(
    "mean_absolute_error",
    kind="loss",
    family="classification",
    papers=(37,),
    summary="Mean absolute error 1 - p_y; member of the comp-sum family (tau=2).",
    defaults={},
    function=mean_absolute_error_loss,
    module=MeanAbsoluteErrorLoss,
)
