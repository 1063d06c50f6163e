"""COMIC's multi-focal modifier loss (paper 19, "Modification").

An asymmetric focal BCE whose class weight and negative focusing grow towards the tail. With
``p = sigmoid(x)``, ``n_c`` the positives of label ``c`` in training::

    w_c   = (1 - log(n_c / n_max))^power            >= 1, = 1 for the most frequent label
    p_neg = min(1 - p + clip, 1)                     (probability shifting of the negatives)
    l     = -w_c [y log p + (1 - y) log p_neg] (1 - p_t)^gamma,   p_t = y p + (1 - y) p_neg
    gamma = gamma_pos y + (gamma_neg + w_c) (1 - y)

Defaults are those of ``wannature/COMIC`` ``loss/Multi-GrainedFocalLoss.py``: ``gamma_pos = 0``,
``gamma_neg = 4``, ``clip = 0.05``, ``power = 1/6``. As there, the focusing factor is computed
without gradient (``detach_focal=True``; ``False`` differentiates through it) and it is applied
only when ``gamma_pos > 0`` or ``gamma_neg > 0`` (so the ``w_c`` part of the negative exponent
goes with it). ``gamma_pos = gamma_neg = clip = power = 0`` is exactly
:func:`~losskit.multilabel.bce.binary_cross_entropy`.

*Prior focal modifier* (``loss/PriorFocalModifierLoss.py``, used by the PLT configs with
``gamma_neg = 3``, ``power = 1/3``): with ``label_cooccurrence`` (``M[i, j]`` = samples where
``i`` and ``j`` are both positive) each column is normalised,
``M~[i, j] = M[i, j] / sum_i M[i, j]``,
and sample ``k`` gets the prior ``a_k`` = the mean of the rows ``M~[i]`` over its positives,
rescaled to sum to one. The positive probability becomes ``p (1 - a_kc)`` and ``p_neg`` is
multiplied by ``cooccurrence_boost`` (1.2) and clipped to 1 where ``a_kc > 0``.

Differences from the code, all documented choices:

- The code sums over all entries; here the reduction is the ``losskit.multilabel`` one (mean over
  a sample's known entries, then over samples), so ``"mean"`` is the code's value divided by
  ``N * L`` (without a mask).
- Logs are taken in stable form (``logsigmoid``; ``log p_neg`` as a ``logaddexp`` clipped at 0)
  instead of ``log(max(q, 1e-8))``. For the prior, only the constant factor ``1 - a_kc`` is
  clamped at ``1e-8`` (``a_kc = 1`` happens for a label that co-occurs with nothing), so the
  positive keeps the gradient of ``log p`` where the code's clamp would cut it.
- A label with no positive in training has count 1 (the formula's weight would be infinite),
  and a sample without a known positive gets the prior 0 (the code divides by zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_finite, check_number, checks_enabled
from losskit._core.registry import register
from losskit.multilabel._common import (
    Counts,
    MLBatch,
    MultiLabelLossModule,
    as_class_counts,
    check_class_counts,
    prepare_multilabel,
    reduce_entries,
)

_PRIOR_FLOOR = 1e-8  # the clamp of the reference on the positive probability


def comic_class_weights(class_counts: Counts, power: float) -> Tensor:
    """``(1 - log(n_c / n_max))^power`` for ``class_counts[L]`` (counts below 1 count as 1).

    Keeps the dtype of a floating tensor (float64 otherwise) and its device."""
    pw = check_number("weight_power", power, low=0.0, high=math.inf, high_open=True)
    n = as_class_counts(class_counts).clamp_min(1.0)
    return (1.0 - torch.log(n / n.max())) ** pw


def check_focal(gamma_pos: float, gamma_neg: float, clip: float) -> tuple[float, float, float]:
    """Validate the focusing exponents (>= 0) and the negative clip (in [0, 1])."""
    return (
        check_number("gamma_pos", gamma_pos, low=0.0, high=math.inf, high_open=True),
        check_number("gamma_neg", gamma_neg, low=0.0, high=math.inf, high_open=True),
        check_number("clip", clip, low=0.0, high=1.0),
    )


def cooccurrence_prior(positives: Tensor, cooccurrence: Tensor) -> Tensor:
    """The prior ``a[N, L]`` of the prior focal modifier from the known positives ``[N, L]``
    and the raw co-occurrence counts ``[L, L]`` (see the module docstring)."""
    m = cooccurrence.to(positives.dtype)
    col = m.sum(dim=0)
    m = torch.where(col > 0, m / col.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(m))
    a = positives @ m
    total = a.sum(dim=1, keepdim=True)
    return torch.where(total > 0, a / total.clamp_min(torch.finfo(a.dtype).tiny), 0.0)


def _focus(u: Tensor, gamma: Tensor) -> Tensor:
    """``u^gamma`` for ``u = 1 - p_t`` in [0, 1], with ``0^0 = 1`` and no NaN gradient at 0."""
    pos = u > 0
    safe = torch.where(pos, u, torch.ones_like(u))
    return torch.where(pos, safe**gamma, (gamma == 0).to(u.dtype))


def modifier_entries(
    x: Tensor,
    y: Tensor,
    class_weight: Tensor,
    gammas: tuple[float, float, float],
    *,
    prior: Tensor | None = None,
    boost: float = 1.2,
    detach_focal: bool = True,
) -> Tensor:
    """Per-entry multi-focal modifier losses ``[N, L]`` for computed-dtype ``x`` and 0/1 ``y``,
    with ``class_weight[L]`` (any device) and ``gammas`` from :func:`check_focal`."""
    gamma_pos, gamma_neg, clip = gammas
    pos = y > 0.5
    log_pos = F.logsigmoid(x)
    if clip > 0:
        log_neg = torch.logaddexp(F.logsigmoid(-x), x.new_tensor(math.log(clip))).clamp_max(0.0)
    else:
        log_neg = F.logsigmoid(-x)
    if prior is not None:
        log_pos = log_pos + torch.log1p(-prior).clamp_min(math.log(_PRIOR_FLOOR))
        boosted = (log_neg + math.log(boost)).clamp_max(0.0)
        log_neg = torch.where(prior > 0, boosted, log_neg)
    w = class_weight.to(device=x.device, dtype=x.dtype)
    log_pt = torch.where(pos, log_pos, log_neg)
    loss = -w * log_pt
    if gamma_pos > 0 or gamma_neg > 0:
        gamma = torch.where(pos, x.new_tensor(gamma_pos), gamma_neg + w)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_focal):
            factor = _focus(-torch.expm1(log_pt), gamma)
        loss = loss * factor
    return loss


def check_cooccurrence(cooc: Tensor | None, num_labels: int) -> None:
    if cooc is None:
        return
    if not isinstance(cooc, Tensor) or cooc.is_complex() or cooc.dtype == torch.bool:
        raise ValueError("label_cooccurrence must be a real tensor of shape [L, L]")
    if tuple(cooc.shape) != (num_labels, num_labels):
        raise ValueError(
            f"label_cooccurrence must have shape ({num_labels}, {num_labels}), "
            f"got {tuple(cooc.shape)}"
        )
    if checks_enabled():
        check_finite("label_cooccurrence", cooc.double())
        if bool((cooc < 0).any()):
            raise ValueError("label_cooccurrence must be non-negative")


def reduce_modifier(
    b: MLBatch,
    class_weight: Tensor,
    gammas: tuple[float, float, float],
    cooc: Tensor | None,
    boost: float,
    detach_focal: bool,
    reduction: str,
) -> Tensor:
    check_class_counts(class_weight, b.x.shape[1])
    check_cooccurrence(cooc, b.x.shape[1])
    prior = None
    if cooc is not None:
        prior = cooccurrence_prior(b.positives().to(b.x.dtype), cooc.to(b.x.device))
    entry = modifier_entries(
        b.x, b.y, class_weight, gammas, prior=prior, boost=boost, detach_focal=detach_focal
    )
    return reduce_entries(entry, b, reduction)


def multi_focal_modifier_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Counts,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    weight_power: float = 1 / 6,
    label_cooccurrence: Tensor | None = None,
    cooccurrence_boost: float = 1.2,
    detach_focal: bool = True,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """COMIC's multi-focal modifier loss; with ``label_cooccurrence`` its prior focal form.

    ``class_counts[L]``: positives per label in training. See the module docstring."""
    gammas = check_focal(gamma_pos, gamma_neg, clip)
    boost = check_number("cooccurrence_boost", cooccurrence_boost, low=0.0, low_open=True)
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    w = comic_class_weights(class_counts, weight_power)
    return reduce_modifier(b, w, gammas, label_cooccurrence, boost, detach_focal, reduction)


class MultiFocalModifierLoss(MultiLabelLossModule):
    """Module form of :func:`multi_focal_modifier_loss` without the co-occurrence prior (use
    :class:`losskit.multilabel.comic.COMICLoss` for it); ``class_weights`` is a buffer."""

    def __init__(
        self,
        class_counts: Counts,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        weight_power: float = 1 / 6,
        detach_focal: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(None, reduction)
        self.gammas = check_focal(gamma_pos, gamma_neg, clip)
        self.detach_focal = bool(detach_focal)
        w = comic_class_weights(class_counts, weight_power)
        self.register_buffer("class_weights", w.to(torch.get_default_dtype()))

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        b = prepare_multilabel(logits, target, mask, reduction=self.reduction)
        return reduce_modifier(
            b, self.class_weights, self.gammas, None, 1.0, self.detach_focal, self.reduction
        )


register(
    "multi_focal_modifier",
    kind="loss",
    family="multilabel",
    papers=(19,),
    summary="COMIC's multi-focal modifier: asymmetric focal BCE with tail-growing class weights.",
    defaults={"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "weight_power": 1 / 6},
    function=multi_focal_modifier_loss,
    module=MultiFocalModifierLoss,
)
