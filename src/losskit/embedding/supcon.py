"""Supervised contrastive loss (Khosla et al. 2020), the "L_out" form (a baseline; no paper
number in the catalog).

For anchor ``i`` with candidates ``A(i)`` (the reference set; by default the batch without
``i``) and positives ``P(i) = {p in A(i): y_p = y_i}``:

``l_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip/T) / sum_{a in A(i)} exp(s_ia/T) )``

with cosine similarities ``s`` when ``normalize=True``. An anchor without a positive gives 0
and drops out of the mean. With exactly one positive per anchor this is InfoNCE on the same
pairs (``info_nce_loss``); on ``cat(z1, z2)`` with labels ``cat(arange(N), arange(N))`` it is
SimCLR's NT-Xent. Default ``temperature=0.1`` (the paper's).
"""

from __future__ import annotations

from torch import Tensor

from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_temperature,
    multi_positive_nll,
    prepare_labels,
)


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """SupCon (L_out) of ``embeddings[N, D]`` with integer ``labels[N]`` against
    ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self excluded);
    ``candidate_mask[N, M]`` (bool, e.g. from a miner) removes candidates per anchor."""
    t = check_temperature(temperature)
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    return multi_positive_nll(b, t, reduction)


class SupConLoss(EmbeddingLossModule):
    """Module form of :func:`supcon_loss`."""

    def __init__(
        self, temperature: float = 0.1, *, normalize: bool = True, reduction: str = "mean"
    ) -> None:
        super().__init__(temperature, normalize, reduction)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return supcon_loss(
            embeddings,
            labels,
            ref_embeddings=ref_embeddings,
            ref_labels=ref_labels,
            temperature=self.temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )


register(
    "supcon",
    kind="loss",
    family="embedding",
    summary="Supervised contrastive loss (L_out): average -log softmax over same-label candidates.",
    defaults={"temperature": 0.1, "normalize": True},
    function=supcon_loss,
    module=SupConLoss,
)
