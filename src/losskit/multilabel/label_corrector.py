"""COMIC's reflective label corrector (paper 19, "Correction").

Partial labels leave true positives recorded as negatives. The corrector shifts the logits of the
recorded positives down by ``margin`` (1.0), ``x' = x - margin * y``, takes ``p = sigmoid(x')``
and recalls a recorded negative ``(i, c)`` as positive when both

    p_ic > threshold (0.7)    and    p_ic > mean_k p_kc   (the batch-mean prediction of label c)

hold (the class-aware threshold). A positive is never turned into a negative. The corrected
targets ``t`` then enter the focal form of :mod:`losskit.multilabel.comic_loss` on ``x'``, with
``gamma_pos = 0``, ``gamma_neg = 3``, ``clip = 0.05``, class weights with ``power = 1/6``, and the
loss is scaled by ``N / P`` (``P``: positives of ``t`` in the batch). COMIC adds it with weight
0.2 from epoch ``compute_epoch = 1`` on. Reference: ``wannature/COMIC``
``loss/ReflectiveLabelCorrectorLoss.py`` and ``models/BalancedlNetwork.py``.

Differences from the code (documented choices):

- The code scales by ``batch_size / P`` with ``batch_size`` fixed at 32 and sums over entries;
  here the entries are reduced the ``losskit.multilabel`` way (mean over a sample's known
  entries, then over samples) and scaled by ``N / P`` with the batch's own ``N``, so ``"mean"``
  is the code's value divided by ``N * L`` when ``N = 32`` (the same factor as the modifier loss,
  which keeps COMIC's balance between the two terms). ``P = 0`` counts as 1 (the code divides by 0).
- With a mask only known entries are corrected or scored, and the batch mean of a label is taken
  over its known entries (unknown entries contribute nothing, as everywhere in this package).
- The module (:class:`ReflectiveCorrectorLoss`) keeps the code's state: within an epoch the
  recalled labels are added to the class counts that give the class weights (reset at every new
  epoch). The code counts epochs from 1 with ``compute_epoch = 1``, so it corrects from the first
  epoch; here :meth:`set_epoch` counts from 0 and ``start_epoch = 1`` leaves the first epoch as a
  warm-up (pass ``start_epoch=0`` for the code's behaviour).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit.multilabel._common import (
    Counts,
    MLBatch,
    MultiLabelLossModule,
    as_class_counts,
    check_class_counts,
    finish_samples,
    prepare_multilabel,
    reduce_entries,
)
from losskit.multilabel.comic_loss import (
    check_focal,
    comic_class_weights,
    modifier_entries,
)


def _check_corrector(threshold: float, margin: float) -> tuple[float, float]:
    return (
        check_number("threshold", threshold, low=0.0, high=1.0),
        check_number("margin", margin, low=-math.inf, high=math.inf, low_open=True, high_open=True),
    )


def _recalls(b: MLBatch, threshold: float, margin: float) -> Tensor:
    """Bool ``[N, L]``: the known negatives recalled as positives (no gradient)."""
    with torch.no_grad():
        p = torch.sigmoid(b.x - margin * b.y)
        if b.known is None:
            batch_mean = p.mean(dim=0)
        else:
            batch_mean = (p * b.known).sum(dim=0) / b.known.sum(dim=0).clamp_min(1.0)
        return b.negatives() & (p > threshold) & (p > batch_mean)


def reflective_label_correction(
    logits: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    threshold: float = 0.7,
    margin: float = 1.0,
) -> Tensor:
    """The corrected targets (same dtype as ``target``): known negatives whose shifted prediction
    exceeds both ``threshold`` and its label's batch mean become 1; nothing else changes."""
    th, m = _check_corrector(threshold, margin)
    b = prepare_multilabel(logits, target, mask)
    return target.masked_fill(_recalls(b, th, m), 1)


def _corrector_loss(
    b: MLBatch,
    recalled: Tensor,
    class_weight: Tensor,
    margin: float,
    gammas: tuple[float, float, float],
    detach_focal: bool,
    reduction: str,
) -> Tensor:
    check_class_counts(class_weight, b.x.shape[1])
    t = torch.where(recalled, torch.ones_like(b.y), b.y)
    entry = modifier_entries(b.x - margin * b.y, t, class_weight, gammas, detach_focal=detach_focal)
    known_pos = (t > 0.5) if b.known is None else (t > 0.5) & (b.known > 0)
    samples = (b.num_known > 0).sum()
    scale = samples.to(b.x.dtype) / known_pos.sum().clamp_min(1).to(b.x.dtype)
    return reduce_entries(entry * scale, b, reduction)


def reflective_corrector_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Counts,
    mask: Tensor | None = None,
    threshold: float = 0.7,
    margin: float = 1.0,
    gamma_pos: float = 0.0,
    gamma_neg: float = 3.0,
    clip: float = 0.05,
    weight_power: float = 1 / 6,
    detach_focal: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """The corrector's loss term (without COMIC's weight 0.2): the focal modifier form on the
    margin-shifted logits against the corrected targets, scaled by ``N / P``."""
    th, m = _check_corrector(threshold, margin)
    gammas = check_focal(gamma_pos, gamma_neg, clip)
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    w = comic_class_weights(class_counts, weight_power)
    return _corrector_loss(b, _recalls(b, th, m), w, m, gammas, detach_focal, reduction)


class ReflectiveCorrectorLoss(MultiLabelLossModule):
    """Stateful module form of :func:`reflective_corrector_loss`, active from ``start_epoch``.

    Call :meth:`set_epoch` before every epoch (from 0). In training mode the labels recalled in
    the current epoch are added to ``class_counts`` for the class weights, as in the code.
    Inactive, it returns zeros (with a graph, so it can stand alone in a backward pass)."""

    def __init__(
        self,
        class_counts: Counts,
        *,
        threshold: float = 0.7,
        margin: float = 1.0,
        start_epoch: int = 1,
        gamma_pos: float = 0.0,
        gamma_neg: float = 3.0,
        clip: float = 0.05,
        weight_power: float = 1 / 6,
        detach_focal: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(None, reduction)
        self.threshold, self.margin = _check_corrector(threshold, margin)
        self.gammas = check_focal(gamma_pos, gamma_neg, clip)
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be a non-negative integer, got {start_epoch!r}")
        self.start_epoch = start_epoch
        self.weight_power = check_number(
            "weight_power", weight_power, low=0.0, high=math.inf, high_open=True
        )
        self.detach_focal = bool(detach_focal)
        counts = as_class_counts(class_counts)
        self.register_buffer("class_counts", counts.to(torch.get_default_dtype()))
        self.register_buffer("recalled_counts", torch.zeros_like(self.class_counts))
        self.epoch = 0

    @property
    def active(self) -> bool:
        return self.epoch >= self.start_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``: a new epoch resets the recalled-label counts."""
        if epoch != self.epoch:
            self.recalled_counts.zero_()
        self.epoch = int(epoch)

    def loss(
        self, logits: Tensor, target: Tensor, mask: Tensor | None = None, reduction: str = "none"
    ) -> Tensor:
        """The corrector term with an explicit ``reduction`` (per sample by default)."""
        b = prepare_multilabel(logits, target, mask, reduction=reduction)
        if not self.active:
            return finish_samples(b.x.sum(dim=1) * 0.0, b, reduction)
        recalled = _recalls(b, self.threshold, self.margin)
        if self.training:
            self.recalled_counts += recalled.sum(dim=0).to(self.recalled_counts.dtype)
        w = comic_class_weights(self.class_counts + self.recalled_counts, self.weight_power)
        return _corrector_loss(
            b, recalled, w, self.margin, self.gammas, self.detach_focal, reduction
        )

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.loss(logits, target, mask, self.reduction)
