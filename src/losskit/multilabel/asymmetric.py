"""Asymmetric loss (ASL) for multi-label classification (Ridnik et al., ICCV 2021; a baseline,
no paper number in the catalog).

With ``p = sigmoid(x)`` and the shifted probability ``p_m = max(p - clip, 0)`` of a negative:

``l_ij = -[y (1 - p)^gamma_pos log p + (1 - y) p_m^gamma_neg log(1 - p_m)] * w_j``

Positives and negatives get different focusing exponents, and the probability shift discards
easy negatives outright (``p <= clip`` gives exactly 0, with zero gradient) and lowers the
weight of possibly mislabeled negatives with very high ``p``. Defaults from the paper:
``gamma_pos = 0``, ``gamma_neg = 4``, ``clip = 0.05``.

Stable forms: ``log p = logsigmoid(x)``, ``(1 - p)^gamma_pos = exp(gamma_pos *
logsigmoid(-x))``, and ``log(1 - p_m) = log(sigmoid(-x) + clip)`` computed as
``logaddexp(logsigmoid(-x), log clip)``, which is finite for every logit when ``clip > 0``
(with ``clip = 0`` it is ``logsigmoid(-x)``).

Relation to siblings: ``gamma_pos = gamma_neg = 0`` and ``clip = 0`` give
:func:`losskit.multilabel.bce.binary_cross_entropy`; ``gamma_pos = gamma_neg = gamma`` and
``clip = 0`` give :func:`losskit.multilabel.focal.focal_binary_cross_entropy` without
``alpha``.

Differences from the released code (Alibaba-MIIL/ASL, ``src/loss_functions/losses.py``):

- the code clamps probabilities at ``eps = 1e-8`` before the log, which caps each term at
  about 18.4; here the logs are exact (no clamp), as the paper's formula has none;
- the code returns ``-loss.sum()`` over every entry; here the reduction is the one of
  ``losskit.multilabel._common`` (mean over a sample's known entries, then over samples), so
  without a mask the code's value is ``N * L`` times ``reduction="mean"``;
- the focusing weight: the code has a flag ``disable_torch_grad_focal_loss`` that computes the
  weight without gradient (a detached weight). The official training script passes ``True``;
  in the stored snapshot of ``AsymmetricLoss`` the lines that act on the flag are commented
  out (so the weight is differentiated), and ``AsymmetricLossOptimized`` defaults to
  ``False``. The paper's gradient analysis differentiates through the weight, so here
  ``detach_focal_weight = False`` is the default and ``True`` reproduces the detached variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.multilabel._common import (
    MultiLabelLossModule,
    check_label_vector,
    prepare_multilabel,
    reduce_entries,
)


def _check_asl(gamma_pos: float, gamma_neg: float, clip: float) -> tuple[float, float, float]:
    """Validate the focusing exponents (>= 0) and the probability margin (in [0, 1))."""
    return (
        check_number("gamma_pos", gamma_pos, low=0.0),
        check_number("gamma_neg", gamma_neg, low=0.0),
        check_number("clip", clip, low=0.0, high=1.0, high_open=True),
    )


def asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    detach_focal_weight: bool = False,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """ASL over known entries; ``weight[L]`` scales labels (not part of the paper)."""
    gp, gn, c = _check_asl(gamma_pos, gamma_neg, clip)
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    check_label_vector(weight, b.x.shape[1], "weight")
    log_p = F.logsigmoid(b.x)
    log_q = F.logsigmoid(-b.x)

    w_pos = torch.exp(gp * log_q) if gp != 0 else torch.ones_like(log_q)
    if c == 0:
        log_neg = log_q
        w_neg = torch.exp(gn * log_p) if gn != 0 else torch.ones_like(log_p)
    else:
        active = torch.sigmoid(b.x) > c
        shifted = torch.where(active, torch.sigmoid(b.x) - c, torch.ones_like(b.x))
        log_neg = torch.where(active, torch.logaddexp(log_q, log_q.new_tensor(math.log(c))), 0)
        w_neg = torch.where(active, shifted**gn, torch.zeros_like(shifted))
    if detach_focal_weight:
        w_pos, w_neg = w_pos.detach(), w_neg.detach()
    entry = -(b.y * w_pos * log_p + (1 - b.y) * w_neg * log_neg)
    return reduce_entries(entry, b, reduction, weight)


class AsymmetricLoss(MultiLabelLossModule):
    """Module form of :func:`asymmetric_loss`; ``weight`` is a buffer."""

    def __init__(
        self,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        detach_focal_weight: bool = False,
        weight: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, reduction)
        self.gamma_pos, self.gamma_neg, self.clip = _check_asl(gamma_pos, gamma_neg, clip)
        self.detach_focal_weight = bool(detach_focal_weight)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return asymmetric_loss(
            logits,
            target,
            mask=mask,
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            clip=self.clip,
            detach_focal_weight=self.detach_focal_weight,
            weight=self.weight,
            reduction=self.reduction,
        )


register(
    "asymmetric",
    kind="loss",
    family="multilabel",
    summary="Asymmetric loss (ASL): separate focusing for positives and negatives, "
    "negative probability shifting.",
    defaults={"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "detach_focal_weight": False},
    function=asymmetric_loss,
    module=AsymmetricLoss,
)
