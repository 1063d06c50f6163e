"""InfoNCE / NT-Xent over query-key pairs (a baseline; no paper number in the catalog).

With similarities ``s_ij = <q_i, k_j>`` (cosine when ``normalize=True``) and one positive
``p(i)`` per query, ``l_i = -log( exp(s_ip/T) / sum_j exp(s_ij/T) )``: exactly
``F.cross_entropy(s / T, positives)``, with every key of the batch as a candidate (the other
keys are the negatives). With a ``positive_mask`` holding several positives per query, the
loss is the multi-positive average ``l_i = -1/|P(i)| sum_{p in P(i)} log softmax_j(s_ij/T)_p``
(the "L_out" form of SupCon, Khosla et al. 2020; other positives stay in the denominator); a
query without a positive gives 0 and drops out of the mean.

``query = z1, keys = z2`` is one direction of SimCLR's NT-Xent; the symmetric 2N-view
NT-Xent, whose denominator also holds the other views of the same side, is
``supcon_loss(cat(z1, z2), cat(arange(N), arange(N)))``. Default ``temperature=0.07``
(MoCo/CLIP); lower temperatures concentrate the gradient on the hardest negatives.
"""

from __future__ import annotations

from torch import Tensor

from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_temperature,
    multi_positive_nll,
    prepare_pairs,
)


def info_nce_loss(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None = None,
    positive_mask: Tensor | None = None,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """InfoNCE of ``query[N, D]`` against ``keys[M, D]``; ``positives[N]`` indexes each
    query's positive key (default ``arange(N)``), or ``positive_mask[N, M]`` marks them.
    ``candidate_mask[N, M]`` (bool) removes keys from a query's candidates."""
    t = check_temperature(temperature)
    b = prepare_pairs(
        query,
        keys,
        positives,
        positive_mask,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    return multi_positive_nll(b, t, reduction)


class InfoNCELoss(EmbeddingLossModule):
    """Module form of :func:`info_nce_loss`."""

    def __init__(
        self, temperature: float = 0.07, *, normalize: bool = True, reduction: str = "mean"
    ) -> None:
        super().__init__(temperature, normalize, reduction)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        positives: Tensor | None = None,
        positive_mask: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return info_nce_loss(
            query,
            keys,
            positives,
            positive_mask,
            temperature=self.temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )


register(
    "info_nce",
    kind="loss",
    family="embedding",
    summary="InfoNCE / NT-Xent: cross-entropy of each query's positive key against all keys.",
    defaults={"temperature": 0.07, "normalize": True},
    function=info_nce_loss,
    module=InfoNCELoss,
)
