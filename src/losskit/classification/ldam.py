"""Label-distribution-aware margin loss (LDAM) and deferred re-weighting (DRW) (paper 14).

Paper 14 (TransICD) trains with LDAM; this is the multiclass softmax form of the original
LDAM-DRW reference (``kaidic/LDAM-DRW``). Class ``j`` with ``n_j`` training samples gets the
margin ``m_j = C / n_j^{1/4}``, with ``C`` chosen so that ``max_j m_j = max_margin``
(``m_j = max_margin (min_k n_k / n_j)^{1/4}``); only the target logit is shifted::

    LDAM(z, y) = CE(s * (z - m_y e_y), y)

with scale ``s`` and optional class ``weight`` exactly as in
:func:`losskit.classification.cross_entropy` (hard targets only: the margin belongs to the
labelled class). Defaults from the reference: ``max_margin = 0.5``, ``s = 30``, applied there
to cosine logits in ``[-1, 1]`` (a normalised last layer). ``max_margin = 0`` is
cross-entropy on ``s * z``. Every count must be positive: a class with no samples has no
finite margin (TransICD's multi-label variant replaces 0 by 1; do that before calling if
wanted). The multi-label BCE form of TransICD lives with the multi-label losses.

DRW (:func:`drw_weights`) keeps the weights at one until ``start_epoch`` (160 of 200 in the
reference) and then uses the class-balanced weights ``(1 - beta) / (1 - beta^{n_j})``
normalised to sum to the number of classes, ``beta = 0.9999``; pass them as ``weight``::

    loss_fn.weight = drw_weights(counts, epoch).to(loss_fn.margins.device)  # a buffer
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.classification._common import ClassLossModule, finish, prepare

Counts = Tensor | Sequence[float]


def _counts(class_counts: Counts) -> Tensor:
    """Class counts as a float64 tensor ``[C]``: finite and positive."""
    try:
        n = torch.as_tensor(class_counts).to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"class_counts must be a sequence of numbers, got {class_counts!r}"
        ) from None
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got shape {n.shape}")
    if not bool(torch.isfinite(n).all()) or bool((n <= 0).any()):
        raise ValueError(f"class_counts must be finite and positive, got {n.tolist()[:8]}")
    return n


def ldam_margins(class_counts: Counts, *, max_margin: float = 0.5) -> Tensor:
    """Per-class margins ``max_margin * (min_k n_k / n_j)^{1/4}`` (float64 ``[C]``)."""
    mm = check_number("max_margin", max_margin, low=0.0, high=math.inf, high_open=True)
    n = _counts(class_counts)
    return mm * (n.min() / n) ** 0.25


def _ldam(
    logits: Tensor,
    target: Tensor,
    margins: Tensor,
    scale: float,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Tensor:
    b = prepare(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        allow_soft=False,
    )
    if margins.shape[0] != b.x.shape[1]:
        raise ValueError(
            f"class_counts must have one entry per class ({b.x.shape[1]}), got {margins.shape[0]}"
        )
    m = margins.to(device=b.x.device, dtype=b.x.dtype)
    # the margin touches one entry per row: shift it in place in the scaled copy
    z = b.x * scale
    z.scatter_add_(1, b.y[:, None], (-scale * m[b.y])[:, None])
    return finish(F.cross_entropy(z, b.y, reduction="none"), b, reduction)


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    *,
    class_counts: Counts,
    max_margin: float = 0.5,
    scale: float = 30.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """LDAM loss ``CE(scale * (z - m_y e_y), y)``, ``m_j ∝ n_j^{-1/4}`` with max ``max_margin``.

    ``class_counts[C]`` are the training counts; integer ``target[N]`` only. For DRW pass
    ``weight=drw_weights(class_counts, epoch)``.
    """
    s = check_number("scale", scale, low=0.0, low_open=True, high=math.inf, high_open=True)
    margins = ldam_margins(class_counts, max_margin=max_margin)
    return _ldam(logits, target, margins, s, weight, ignore_index, reduction)


def drw_weights(
    class_counts: Counts,
    epoch: int,
    *,
    start_epoch: int = 160,
    beta: float = 0.9999,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Deferred re-weighting: ones before ``start_epoch``, from then on the class-balanced
    weights ``(1 - beta) / (1 - beta^{n_j})`` scaled to sum to ``C``.

    The reference switches with ``[0, beta][epoch // 160]`` (so it only runs to epoch 319);
    here the weights stay on from ``start_epoch`` on. Returns ``dtype`` (default dtype if None).
    """
    for name, value in (("epoch", epoch), ("start_epoch", start_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    b = check_number("beta", beta, low=0.0, high=1.0, high_open=True)
    n = _counts(class_counts)
    dtype = dtype or torch.get_default_dtype()
    if epoch < start_epoch or b == 0.0:
        return torch.ones(n.shape, dtype=dtype, device=n.device)
    # 1 - beta^n = -expm1(n log beta), accurate for beta close to one
    w = (1.0 - b) / -torch.expm1(n * math.log(b))
    return (w * (n.numel() / w.sum())).to(dtype)


class LDAMLoss(ClassLossModule):
    """Module form of :func:`ldam_loss`: ``margins``, ``class_counts`` and ``weight`` are
    buffers. LDAM-DRW: pass ``drw_start`` (the epoch at which re-weighting starts; the
    reference uses 160 of 200) and call :meth:`set_epoch` at the start of every epoch, which
    sets ``weight`` to :func:`drw_weights` (ones before ``drw_start``)."""

    def __init__(
        self,
        class_counts: Counts,
        *,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Tensor | None = None,
        drw_start: int | None = None,
        drw_beta: float = 0.9999,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        if drw_start is not None and weight is not None:
            raise ValueError("weight must be None when drw_start is set (DRW owns the weights)")
        if drw_start is not None:
            drw_weights(class_counts, 0, start_epoch=drw_start, beta=drw_beta)  # validates
        self.drw_start = drw_start
        self.drw_beta = drw_beta
        self.max_margin = check_number(
            "max_margin", max_margin, low=0.0, high=math.inf, high_open=True
        )
        self.scale = check_number(
            "scale", scale, low=0.0, low_open=True, high=math.inf, high_open=True
        )
        margins = ldam_margins(class_counts, max_margin=self.max_margin)
        self.register_buffer("margins", margins.to(torch.get_default_dtype()))
        self.register_buffer("class_counts", _counts(class_counts).clone())

    def set_epoch(self, epoch: int) -> None:
        """Switch the DRW weights for ``epoch`` (no-op without ``drw_start``)."""
        if self.drw_start is None:
            return
        w = drw_weights(
            self.class_counts,
            epoch,
            start_epoch=self.drw_start,
            beta=self.drw_beta,
            dtype=self.margins.dtype,
        )
        self.weight = w.to(self.margins.device)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return _ldam(
            logits,
            target,
            self.margins,
            self.scale,
            self.weight,
            self.ignore_index,
            self.reduction,
        )


register(
    "ldam",
    kind="loss",
    family="classification",
    papers=(14,),
    summary="LDAM: cross-entropy with a per-class target margin proportional to n_j^(-1/4).",
    defaults={"max_margin": 0.5, "scale": 30.0},
    function=ldam_loss,
    module=LDAMLoss,
)

register(
    "drw",
    kind="procedure",
    family="classification",
    papers=(14,),
    summary="Deferred re-weighting: class-balanced weights switched on late in training.",
    defaults={"start_epoch": 160, "beta": 0.9999},
    function=drw_weights,
)
