"""Decoupled softmax loss (paper 3, DEXML: "Dual-Encoders for Extreme Multi-Label
Classification").

``L_i = -(1/|P_i|) sum_{j in P_i} log[ e^{s_ij} / (e^{s_ij} + sum_{k in N_i} e^{s_ik}) ]
      =  (1/|P_i|) sum_{j in P_i} softplus(lse_i - s_ij),   lse_i = logsumexp_{k in N_i} s_ik``

with ``P_i`` the known positives and ``N_i`` the known negatives of row ``i``: each positive
competes with the negatives only, the other positives are removed from its denominator. Scores
are whatever the model gives; in the paper they are cosine similarities divided by a
temperature ``tau = 0.05`` (the model's job, not the loss's).

Relations: with one positive per row it equals softmax cross-entropy (InfoNCE) and
:func:`~losskit.multilabel.softmax.multi_positive_softmax_loss`; with the positives at ``+T``
and the negatives at ``-T`` it tends to 0 as ``T`` grows, where the multi-positive softmax
tends to ``log |P_i|``. In the term of positive ``j`` the gradient with respect to every other
positive is 0.

Cost: one ``logsumexp`` over the negatives (``lse[N]``), then ``softplus(lse_i - s_ij)`` at
the positives only (found with ``nonzero``, which synchronises with the device on CUDA), in a
custom autograd function whose backward makes one dense pass; nothing of size ``[N, L, L]``
and no copy of a row per positive is formed. It costs about what ``F.cross_entropy`` costs on
the same scores (``benchmarks/multilabel.py``).

Shortlist training (the paper's hard-negative mining, ``dist-de-hnm``) goes through the same
function: pass scores over a shortlist ``[N, K]`` (the positives plus sampled or mined
negatives) and the matching ``target[N, K]``; padded slots get ``mask=False``. The loss is the
full loss with every label outside the shortlist unknown.

``sample_positives=True`` is the released code's default (``loss_sample: True``): each call
keeps one positive per row, drawn uniformly (the code draws in proportion to relevance, which
is uniform for 0/1 targets) with ``generator``, and removes the other positives from the
denominator, a stochastic single-positive version of the objective. Here the default is the
paper's full objective (``False``). Other differences from the released code: excluded entries
are removed exactly (the code writes ``-100`` into the scores, in place), rows without a known
positive follow ``empty`` (see :mod:`losskit.multilabel.softmax`), and the ``logsumexp`` is not
gathered across processes (the code shards labels over GPUs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from losskit._core.checks import check_choice
from losskit._core.registry import register
from losskit.multilabel._common import MultiLabelLossModule, prepare_multilabel
from losskit.multilabel.softmax import EMPTY, finish_rows, positive_entries, row_sums


def sample_positive_entries(
    rows: Tensor, count: Tensor, m: int, generator: torch.Generator | None = None
) -> Tensor:
    """Bool over the positive entries ``rows`` (row indices in row-major order, ``count``
    per row): ``min(m, |P_i|)`` of each row's entries, drawn uniformly without replacement
    (deterministic for a seeded ``generator``)."""
    device = rows.device if generator is None else generator.device
    keys = torch.rand(rows.shape[0], generator=generator, device=device, dtype=torch.float64)
    order = torch.argsort(rows.to(torch.float64) * 2 + keys.to(rows.device))
    start = (torch.cumsum(count, 0) - count).long()
    rank = torch.empty_like(rows)
    rank[order] = torch.arange(rows.shape[0], device=rows.device) - start[rows[order]]
    return rank < m


def _negative_exp(
    x: Tensor, neg: Tensor | None, exclude: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``e = exp(s - m)`` on the negatives (0 elsewhere), its row sums and the row max ``m``
    (0 for a row without negatives); ``neg`` marks them (``None``: all but ``exclude``)."""
    if neg is None:
        e = x.clone().index_put_(exclude, x.new_tensor(float("-inf")))
    else:
        e = torch.where(neg, x, float("-inf"))
    m = e.amax(dim=1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return e.sub_(m).exp_(), e.sum(dim=1), m.squeeze(1)


class _Decoupled(torch.autograd.Function):
    """Per-row ``sum_{j in P} softplus(lse_neg - s_j)`` over the entries ``rows, cols``;
    the backward makes one dense pass, in the forward's buffer."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        rows: Tensor,
        cols: Tensor,
        neg: Tensor | None,
        exclude: tuple[Tensor, Tensor],
    ) -> Tensor:
        e, total, m = _negative_exp(x, neg, exclude)
        lse = m + total.log()  # -inf for a row without negatives
        d = lse[rows] - x[rows, cols]
        ctx.save_for_backward(x, rows, cols, total, torch.sigmoid(d))
        ctx.buffer, ctx.negatives = e, (neg, exclude)
        return row_sums(F.softplus(d), rows, x.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, rows, cols, total, q = ctx.saved_tensors
        e, ctx.buffer = ctx.buffer, None  # used once; a second backward recomputes it
        if e is None:
            e = _negative_exp(x, *ctx.negatives)[0]
        # positive j: d/ds_j = -g q_j with q_j = sigmoid(lse - s_j);
        # negative k: d/ds_k = g sum_j q_j softmax_neg(s)_k
        weight = grad * row_sums(q, rows, x.shape[0])
        weight = weight / torch.where(total > 0, total, torch.ones_like(total))
        out = e.mul_(weight.unsqueeze(1))
        out.index_put_((rows, cols), -grad[rows] * q, accumulate=True)
        return out, None, None, None, None


def decoupled_softmax_loss(
    scores: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    sample_positives: bool = False,
    generator: torch.Generator | None = None,
    empty: str = "error",
    reduction: str = "mean",
) -> Tensor:
    """Decoupled softmax over the known entries (see the module docstring)."""
    b = prepare_multilabel(scores, target, mask, reduction=reduction, name="scores")
    rows, cols, count = positive_entries(b, empty, "decoupled_softmax_loss")
    neg = None if b.known is None else b.negatives()
    exclude = (rows, cols)
    if sample_positives:
        keep = sample_positive_entries(rows, count, 1, generator)
        rows, cols, count = rows[keep], cols[keep], count.clamp_max(1.0)
    per_sample = _Decoupled.apply(b.x, rows, cols, neg, exclude) / count.clamp_min(1.0)
    return finish_rows(per_sample, count, b, reduction)


class PositiveSamplingLoss(MultiLabelLossModule):
    """Base of the module forms of the losses that can sample the positives (decoupled
    softmax, soft top-k): it validates and keeps ``sample_positives``, ``generator`` (seeds
    the sampling) and ``empty``."""

    def __init__(
        self,
        *,
        sample_positives: bool = False,
        generator: torch.Generator | None = None,
        empty: str = "error",
        reduction: str = "mean",
    ) -> None:
        super().__init__(None, reduction)
        check_choice("empty", empty, EMPTY)
        check_choice("sample_positives", sample_positives, (True, False))
        self.sample_positives = sample_positives
        self.generator = generator
        self.empty = empty

    def options(self) -> dict[str, Any]:
        """The keyword arguments shared with the functional form."""
        return {
            "sample_positives": self.sample_positives,
            "generator": self.generator,
            "empty": self.empty,
            "reduction": self.reduction,
        }


class DecoupledSoftmaxLoss(PositiveSamplingLoss):
    """Module form of :func:`decoupled_softmax_loss` (``generator`` seeds the sampling)."""

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return decoupled_softmax_loss(scores, target, mask=mask, **self.options())


register(
    "decoupled_softmax",
    kind="loss",
    family="multilabel",
    papers=(3,),
    summary="Softmax per positive with the other positives removed from its denominator.",
    defaults={"sample_positives": False},
    function=decoupled_softmax_loss,
    module=DecoupledSoftmaxLoss,
)
