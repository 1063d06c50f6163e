"""Hard-negative enhanced contrastive loss with false-negative filtering (paper 42, UniME).

UniME's second stage ("hard negative enhanced instruction tuning") trains with InfoNCE over
each query's positive and a few hard in-batch negatives. With similarities ``s_ij`` (cosine
when ``normalize=True``) and query ``i``'s positive ``p``:

1. false negatives: the candidates with ``s_ij > s_ip + alpha`` are removed
   (:func:`~losskit.mining.negative_filters.false_negative_filter`, ``threshold=alpha``);
2. hard negatives: of the rest, the ``k`` of highest ``s_ij`` form ``H(i)``
   (:func:`~losskit.mining.negative_filters.hardest_negatives`);
3. ``l_i = -log( exp(s_ip/T) / (exp(s_ip/T) + sum_{j in H(i)} exp(s_ij/T)) )``.

The selection is made without gradient; the gradient flows through the similarities of the
positive and of the selected negatives only. Defaults ``alpha = 0.1``, ``k = 8``,
``T = 0.02``, from the released ``loss.py`` (``threshold_value``, ``topk``,
``temperature``); the paper's text was not available to confirm them.
With ``threshold=inf`` and ``k`` at least the number of negatives (``k=None``: all) this is
exactly :func:`~losskit.embedding.info_nce.info_nce_loss`. With a ``positive_mask`` holding
several positives, the loss is the multi-positive average of InfoNCE (as there), the other
positives stay in the denominator, and the filter threshold is taken from the most similar
positive. A ``candidate_mask`` removes candidates before the filters run.

Differences from the released code (``SimpleContrastiveLossBatchRank``), where the paper is
followed here:

- the code takes ``x @ y.T`` of the inputs as given; "cosine" needs normalised inputs. Here
  ``normalize=True`` (default) normalises, ``normalize=False`` reproduces the raw dot product;
- when fewer than ``k`` negatives survive the filter, the code's ``topk`` still returns
  ``k`` indices, so filtered keys and the positive itself re-enter the denominator; here the
  surviving negatives are used, however few;
- the code's distributed variant gathers the queries as well as the keys and multiplies the
  loss by the world size; here anchors stay local and gathered candidates are passed as
  ``keys``.

Stage 1 of UniME (textual discriminative distillation with KL on in-batch similarity
distributions) is a distillation objective, not this loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_temperature,
    multi_positive_nll,
    prepare_pairs,
)
from losskit.mining.negative_filters import _false_negative_keep, _hardest_keep, check_k


def _check(threshold: float | None, k: int | None) -> tuple[float, int | None]:
    t = math.inf if threshold is None else check_number("threshold", threshold)
    return t, None if k is None else check_k(k)


def unime_loss(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None = None,
    positive_mask: Tensor | None = None,
    *,
    temperature: float = 0.02,
    threshold: float | None = 0.1,
    k: int | None = 8,
    normalize: bool = True,
    candidate_mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """UniME loss of ``query[N, D]`` against ``keys[M, D]``; ``positives[N]`` indexes each
    query's positive key (default ``arange(N)``), or ``positive_mask[N, M]`` marks them.
    ``threshold=None`` (or ``inf``) turns the false-negative filter off, ``k=None`` keeps
    every remaining negative."""
    temp = check_temperature(temperature)
    thr, kk = _check(threshold, k)
    b = prepare_pairs(
        query,
        keys,
        positives,
        positive_mask,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    with torch.no_grad():
        sim = b.sim.detach()
        keep = torch.ones_like(b.pos) if b.valid is None else b.valid
        if thr != math.inf:
            keep = _false_negative_keep(sim, b.pos, keep, thr)
        if kk is not None:
            keep = _hardest_keep(sim, b.pos, keep, kk)
    b.valid = keep
    return multi_positive_nll(b, temp, reduction)


class UniMELoss(EmbeddingLossModule):
    """Module form of :func:`unime_loss`."""

    def __init__(
        self,
        temperature: float = 0.02,
        threshold: float | None = 0.1,
        k: int | None = 8,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(temperature, normalize, reduction)
        thr, self.k = _check(threshold, k)
        self.threshold = None if thr == math.inf else thr

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        positives: Tensor | None = None,
        positive_mask: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return unime_loss(
            query,
            keys,
            positives,
            positive_mask,
            temperature=self.temperature,
            threshold=self.threshold,
            k=self.k,
            normalize=self.normalize,
            candidate_mask=candidate_mask,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}, k={self.k}"


register(
    "unime",
    kind="loss",
    family="embedding",
    papers=(42,),
    summary="UniME: InfoNCE over the k hardest negatives left after removing false negatives "
    "(s_neg > s_pos + alpha).",
    defaults={"temperature": 0.02, "threshold": 0.1, "k": 8, "normalize": True},
    function=unime_loss,
    module=UniMELoss,
)
