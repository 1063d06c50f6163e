"""Multi-positive softmax cross-entropy, the baseline of the decoupled softmax (paper 3).

``l_i = -(1/|P_i|) sum_{j in P_i} log softmax(s_i)_j = logsumexp_{j known} s_ij - mean_{j in P_i}
s_ij`` where ``P_i`` are the known positives of row ``i`` and the softmax runs over the known
entries only (unknown entries leave the denominator too). Without a mask this is
``F.cross_entropy(scores, target / target.sum(1, keepdim=True))``; with one positive per row it
is softmax cross-entropy (InfoNCE for dual-encoder scores). As the positives separate from the
negatives it tends to ``log |P_i|``, not 0: each positive competes with the others, the
limitation that :func:`~losskit.multilabel.decoupled_softmax.decoupled_softmax_loss` removes.

The released DEXML code (``losses.py``, criterion ``softmax``) sums ``-log softmax`` over the
positives instead of averaging it; with its default one-positive sampling both agree. Here the
average is kept, so that the loss does not grow with the number of positives.

Rows without a known positive: ``empty="error"`` (default) raises ``ValueError``; ``"skip"``
gives them 0 and drops them from the ``"mean"``. With value checks off
(``losskit.set_checks(False)``) ``"error"`` behaves like ``"skip"``. The helpers
:func:`positive_entries` and :func:`finish_rows` give the other positive-averaged losses of
this package (decoupled softmax, soft top-k) the same behaviour.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_choice, checks_enabled
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register
from losskit.multilabel._common import MLBatch, MultiLabelLossModule, prepare_multilabel

EMPTY = ("error", "skip")


def positive_entries(b: MLBatch, empty: str, loss: str) -> tuple[Tensor, Tensor, Tensor]:
    """The known positives as index tensors ``rows, cols`` (row-major order) and ``|P_i|``
    as floats ``[N]``. With ``empty="error"`` a row without any raises ``ValueError`` (a
    value check). On CUDA ``nonzero`` synchronises with the device."""
    check_choice("empty", empty, EMPTY)
    # without a mask the (validated 0/1) target itself marks the positives: no bool copy
    rows, cols = (b.y if b.known is None else b.positives()).nonzero(as_tuple=True)
    count = torch.bincount(rows, minlength=b.x.shape[0]).to(b.x.dtype)
    if empty == "error" and checks_enabled() and bool((count == 0).any()):
        row = int((count == 0).nonzero()[0, 0])
        raise ValueError(
            f"target: {loss} needs a known positive in every row, row {row} has none "
            "(pass empty='skip' to give such rows 0 and drop them from the mean)"
        )
    return rows, cols, count


def row_sums(values: Tensor, rows: Tensor, n: int) -> Tensor:
    """``out[i] = sum of values[e] over the entries e with rows[e] == i``, shape ``[n]``."""
    return values.new_zeros(n).index_add(0, rows, values)


def finish_rows(per_sample: Tensor, count: Tensor, b: MLBatch, reduction: str) -> Tensor:
    """Reduce per-sample losses: rows without a known positive (``count == 0``) give 0 and
    drop out of the ``"mean"`` (as rows without a known entry do in
    ``_common.finish_samples``)."""
    keep = count > 0
    per_sample = torch.where(keep, per_sample, torch.zeros_like(per_sample))
    return reduce_loss(per_sample, reduction, keep.to(per_sample.dtype)).to(b.dtype)


def masked_logsumexp(x: Tensor, keep: Tensor | None) -> Tensor:
    """Row-wise ``logsumexp`` of ``x[N, L]`` over the entries where ``keep`` (all if
    ``None``); a row with none gives ``-inf`` and zero gradient (torch's gives NaN)."""
    xm = x if keep is None else x.masked_fill(~keep, float("-inf"))
    m = xm.detach().amax(dim=1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    total = (xm - m).exp().sum(dim=1)
    some = total > 0
    safe = torch.where(some, total, torch.ones_like(total))
    return torch.where(some, m.squeeze(1) + safe.log(), torch.full_like(total, float("-inf")))


def multi_positive_softmax_loss(
    scores: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    empty: str = "error",
    reduction: str = "mean",
) -> Tensor:
    """Softmax cross-entropy averaged over each row's known positives (see the module
    docstring)."""
    b = prepare_multilabel(scores, target, mask, reduction=reduction, name="scores")
    rows, cols, count = positive_entries(b, empty, "multi_positive_softmax_loss")
    known = None if b.known is None else b.known > 0
    pos_sum = row_sums(b.x[rows, cols], rows, b.x.shape[0])
    per_sample = masked_logsumexp(b.x, known) - pos_sum / count.clamp_min(1.0)
    return finish_rows(per_sample, count, b, reduction)


class MultiPositiveSoftmaxLoss(MultiLabelLossModule):
    """Module form of :func:`multi_positive_softmax_loss`."""

    def __init__(self, *, empty: str = "error", reduction: str = "mean") -> None:
        super().__init__(None, reduction)
        check_choice("empty", empty, EMPTY)
        self.empty = empty

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return multi_positive_softmax_loss(
            scores, target, mask=mask, empty=self.empty, reduction=self.reduction
        )


register(
    "multilabel_softmax",
    kind="loss",
    family="multilabel",
    summary="Softmax cross-entropy averaged over the positives (multi-positive InfoNCE).",
    function=multi_positive_softmax_loss,
    module=MultiPositiveSoftmaxLoss,
)
