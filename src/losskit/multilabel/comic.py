"""COMIC (paper 19): Correction -> Modification -> Balance for long-tailed, partially labelled
multi-label data. This file holds the loss used on a single classifier head::

    COMIC(x, y) = MFM(x, y) + corrector_weight * RLC(x, y)      (RLC from corrector_start_epoch)

- ``MFM``: the multi-focal modifier loss (:mod:`losskit.multilabel.comic_loss`) with the
  co-occurrence prior when ``label_cooccurrence`` is given (the arena fills it).
- ``RLC``: the reflective label corrector (:mod:`losskit.multilabel.label_corrector`).
- The balanced classifier with head, tail and balanced branches is in
  :mod:`losskit.multilabel.balanced_head`; it uses :meth:`COMICLoss.modifier` and
  :meth:`COMICLoss.corrector` per branch.

Defaults are those of ``wannature/COMIC`` ``config/coco/resnet50_plt.yaml`` (the paper's
PLT-COCO run): the prior focal modifier with ``gamma_pos = 0``, ``gamma_neg = 3``, ``clip = 0.05``,
class-weight power 1/3, co-occurrence boost 1.2; the corrector with threshold 0.7, margin 1.0,
``gamma_neg = 3`` (``corrector_gamma_neg``), power 1/6 (``corrector_weight_power``), the same
``clip`` as the modifier (0.05 in both in the code) and weight 0.2. Without
``label_cooccurrence`` the modifier is the multi-grained form with these exponents. With
``gamma_pos = gamma_neg = clip = weight_power = 0`` and ``corrector_weight = 0`` COMIC is exactly
binary cross-entropy.

Scale: the code sums the modifier over the batch and scales the corrector by ``32 / P``; here
both are reduced the ``losskit.multilabel`` way, so ``"mean"`` is the code's total divided by
``N * L`` (with ``N = 32``, no mask). The corrector starts at epoch 1 counting from 0 (the code
counts from 1 and corrects from its first epoch; pass ``corrector_start_epoch=0`` for that).
"""

from __future__ import annotations

import math

from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.multilabel._common import Counts, prepare_multilabel
from losskit.multilabel.comic_loss import (
    MultiFocalModifierLoss,
    check_cooccurrence,
    reduce_modifier,
)
from losskit.multilabel.label_corrector import ReflectiveCorrectorLoss


class COMICLoss(MultiFocalModifierLoss):
    """The COMIC objective for one head; call :meth:`set_epoch` before every epoch (from 0).

    Buffers: ``class_weights`` (set up as in :class:`MultiFocalModifierLoss`) and (with a
    prior) ``cooccurrence``; the corrector is the submodule ``corrector``
    (:class:`ReflectiveCorrectorLoss`, with its own state)."""

    def __init__(
        self,
        class_counts: Counts,
        label_cooccurrence: Tensor | None = None,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 3.0,
        clip: float = 0.05,
        weight_power: float = 1 / 3,
        cooccurrence_boost: float = 1.2,
        corrector_weight: float = 0.2,
        corrector_start_epoch: int = 1,
        threshold: float = 0.7,
        margin: float = 1.0,
        corrector_gamma_neg: float = 3.0,
        corrector_weight_power: float = 1 / 6,
        detach_focal: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            class_counts,
            gamma_pos=gamma_pos,
            gamma_neg=gamma_neg,
            clip=clip,
            weight_power=weight_power,
            detach_focal=detach_focal,
            reduction=reduction,
        )
        self.boost = check_number("cooccurrence_boost", cooccurrence_boost, low=0.0, low_open=True)
        self.corrector_weight = check_number(
            "corrector_weight", corrector_weight, low=0.0, high=math.inf, high_open=True
        )
        w = self.class_weights
        check_cooccurrence(label_cooccurrence, w.shape[0])
        cooc = None if label_cooccurrence is None else label_cooccurrence.to(w.dtype)
        self.register_buffer("cooccurrence", cooc)
        self.corrector = ReflectiveCorrectorLoss(
            class_counts,
            threshold=threshold,
            margin=margin,
            start_epoch=corrector_start_epoch,
            gamma_pos=0.0,
            gamma_neg=corrector_gamma_neg,
            clip=clip,
            weight_power=corrector_weight_power,
            detach_focal=detach_focal,
        )

    @property
    def corrector_active(self) -> bool:
        return self.corrector_weight > 0 and self.corrector.active

    def set_epoch(self, epoch: int) -> None:
        self.corrector.set_epoch(epoch)

    def modifier(
        self, logits: Tensor, target: Tensor, mask: Tensor | None = None, reduction: str = "none"
    ) -> Tensor:
        """The multi-focal modifier term alone (per sample by default)."""
        b = prepare_multilabel(logits, target, mask, reduction=reduction)
        return reduce_modifier(
            b,
            self.class_weights,
            self.gammas,
            self.cooccurrence,
            self.boost,
            self.detach_focal,
            reduction,
        )

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = self.modifier(logits, target, mask, self.reduction)
        if self.corrector_active:
            loss = loss + self.corrector_weight * self.corrector.loss(
                logits, target, mask, self.reduction
            )
        return loss


register(
    "comic",
    kind="loss",
    family="multilabel",
    papers=(19,),
    summary="COMIC: prior focal modifier loss plus the reflective label corrector from epoch 1.",
    defaults={
        "gamma_pos": 0.0,
        "gamma_neg": 3.0,
        "clip": 0.05,
        "weight_power": 1 / 3,
        "cooccurrence_boost": 1.2,
        "corrector_weight": 0.2,
        "corrector_start_epoch": 1,
        "threshold": 0.7,
        "margin": 1.0,
    },
    function=None,
    module=COMICLoss,
)
