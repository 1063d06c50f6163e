"""Pooling-bias correction of a ranking loss: CET (Cai et al., CIKM 2022; paper 38).

Relevance labels come from a pool: annotators judge only documents that some basic
retrievers selected, so a document is labelled positive only when it was selected *and* is
relevant, ``P(o=1|q,d) = P(s=1|q,d) P(r=1|q,d)``. The negatives sampled from a strong
retriever's unlabelled top results are therefore rich in false negatives (relevant documents
that were never selected). The Coupled Estimation Technique learns a relevance model ``R``
and a selection model ``S`` together, each trained with bias weights from the other's
current estimate. For ``R`` (this loss) the weight of a negative ``j`` of query ``i`` is

    w_ij = 1 / (1 - sigmoid(S_ij / tau)) = 1 + exp(S_ij / tau)

with ``S_ij`` the selection model's logit for the pair. Read as a correction (the code gives
the formula, the reading is ours): an unlabelled document the pool probably judged is a
trustworthy negative and weighs more; one the pool probably never saw (a possible false
negative) keeps weight near 1, so relative to the trusted ones it is down-weighted. The
loss is the pairwise softmax cross-entropy of each (positive ``p``, negative ``j``) pair,
weighted::

    l_i = 1/(|P(i)| |N(i)|) sum_{p in P(i)} sum_{j in N(i)} w_ij * softplus((s_ij - s_ip) / T)

with ``s = <q_i, k_j>`` (cosine when ``normalize=True``); each term is the two-way softmax
cross-entropy ``-log(e^{s_ip/T} / (e^{s_ip/T} + e^{s_ij/T}))``. The coupled step trains
``S`` with the same loss on its own scores, with the weights computed from ``R``'s logits
(``s / T``, detached): a negative that ``R`` finds relevant must have been missed by the pool,
so it is strong evidence for ``S``. Pass the other model's logits as ``selection_logits``
in both directions; the weights never carry gradient.

Defaults (the authors' code): ``tau = selection_temperature = 2.0``, raw dot-product scores
(``normalize=False``, ``temperature=1.0``: the ranker's score enters the cross-entropy
unscaled). Exact properties: without ``selection_logits`` (all weights 1, no pooling bias)
this is the plain pairwise softmax ranking loss, and with one negative per query it is
InfoNCE over (positive, negative) (:func:`losskit.embedding.info_nce.info_nce_loss`). The
weights grow without bound with ``S_ij / tau`` (``exp`` overflows float32 past ~88): pass
logits on the scale the selection model was trained on.

Inputs: ``query[N, D]``, ``keys[M, D]``, ``positives[N]`` (default ``arange(N)``) or
``positive_mask[N, M]``, ``selection_logits[N, M]`` (entries at positives and excluded keys
are ignored) and ``candidate_mask[N, M]``; the negatives of query ``i`` are its candidate
keys that are not positives. A query without a positive gives 0 and drops out of ``"mean"``;
one without a negative gives 0 and counts. With fixed numbers of negatives, ``"mean"`` is the
code's mean over pairs.

Source: the method section could not be read here, only the abstract; the weight, its
temperature and the pairwise form are those of the authors' released code
(caiyinqiong/Coupled_Estimation_Technique, ``train.py`` and ``modeling.py``, where ``R`` and
``S`` are BERT cross-encoders trained on (positive, negative) pairs). The query-key form, the
multi-positive average and the candidate mask are this package's contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_finite, check_number
from losskit._core.precision import upcast
from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_temperature,
    prepare_pairs,
    reduce_anchors,
)

_DEFAULTS = {"temperature": 1.0, "selection_temperature": 2.0, "normalize": False}


def _check_logits(logits: Tensor, n: int, m: int) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError("selection_logits must be a floating tensor")
    if tuple(logits.shape) != (n, m):
        raise ValueError(f"selection_logits must have shape {(n, m)}, got {tuple(logits.shape)}")
    check_finite("selection_logits", logits)


@torch.no_grad()
def pooling_bias_weights(selection_logits: Tensor, *, selection_temperature: float = 2.0) -> Tensor:
    """CET bias weights ``1 / (1 - sigmoid(z / tau)) = 1 + exp(z / tau)`` of the other
    model's logits ``z`` (any shape), in float32 or wider, without gradient."""
    tau = check_number("selection_temperature", selection_temperature, low=0.0, low_open=True)
    if not isinstance(selection_logits, Tensor) or not selection_logits.is_floating_point():
        raise ValueError("selection_logits must be a floating tensor")
    check_finite("selection_logits", selection_logits)
    return torch.exp(F.softplus(upcast(selection_logits) / tau))


def pooling_bias_loss(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None = None,
    positive_mask: Tensor | None = None,
    *,
    selection_logits: Tensor | None = None,
    temperature: float = 1.0,
    selection_temperature: float = 2.0,
    normalize: bool = False,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """CET-weighted pairwise softmax ranking loss of ``query[N, D]`` against ``keys[M, D]``;
    ``selection_logits[N, M]`` are the selection model's logits (``None``: weights 1)."""
    t = check_temperature(temperature)
    tau = check_number("selection_temperature", selection_temperature, low=0.0, low_open=True)
    b = prepare_pairs(
        query,
        keys,
        positives,
        positive_mask,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    logits, pos = b.sim / t, b.pos
    neg = ~pos if b.valid is None else ~pos & b.valid
    if selection_logits is None:
        w = torch.ones_like(logits)
    else:
        _check_logits(selection_logits, *logits.shape)
        w = pooling_bias_weights(selection_logits, selection_temperature=tau).to(logits.dtype)
    w = torch.where(neg, w, torch.zeros_like(w))
    n_pos = pos.sum(dim=1)
    if positive_mask is None:  # at most one positive per query: [N, M] pairs
        s_pos = torch.where(pos, logits, torch.zeros_like(logits)).sum(dim=1, keepdim=True)
        total = (w * F.softplus(logits - s_pos)).sum(dim=1)
    else:  # every (positive, negative) pair: [N, M, M]
        terms = F.softplus(logits[:, None, :] - logits[:, :, None]) * w[:, None, :]
        total = torch.where(pos[:, :, None], terms, torch.zeros_like(terms)).sum(dim=(1, 2))
    pairs = n_pos * neg.sum(dim=1)
    per_anchor = torch.where(pairs > 0, total, torch.zeros_like(total)) / pairs.clamp_min(1)
    return reduce_anchors(per_anchor, n_pos > 0, reduction).to(b.dtype)


class PoolingBiasLoss(EmbeddingLossModule):
    """Module form of :func:`pooling_bias_loss`."""

    def __init__(
        self,
        temperature: float = 1.0,
        *,
        selection_temperature: float = 2.0,
        normalize: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(temperature, normalize, reduction)
        self.selection_temperature = check_number(
            "selection_temperature", selection_temperature, low=0.0, low_open=True
        )

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        positives: Tensor | None = None,
        positive_mask: Tensor | None = None,
        selection_logits: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return pooling_bias_loss(
            query,
            keys,
            positives,
            positive_mask,
            selection_logits=selection_logits,
            temperature=self.temperature,
            selection_temperature=self.selection_temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, selection_temperature={self.selection_temperature}"


register(
    "pooling_bias",
    kind="loss",
    family="embedding",
    papers=(38,),
    summary="CET pooling-bias correction: pairwise softmax ranking loss with negatives "
    "weighted 1/(1 - P(selected)) by a selection model.",
    defaults=_DEFAULTS,
    function=pooling_bias_loss,
    module=PoolingBiasLoss,
)
