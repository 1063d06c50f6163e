"""Triplet margin loss in similarity form (a baseline; no paper number in the catalog).

For anchor ``i`` with positives ``P(i)`` (candidates with its label) and negatives ``N(i)``
(candidates with another label; by default the batch without ``i``):

- ``mining="all"``: ``l_i = 1/(|P(i)||N(i)|) sum_{p, n} max(0, s_in - s_ip + margin)``
- ``mining="hard"`` (batch-hard): ``l_i = max(0, max_n s_in - min_p s_ip + margin)``, the
  hardest positive against the hardest negative; equal to the largest all-pairs term.

``s`` are cosine similarities when ``normalize=True`` (the distance form
``d(a, p) - d(a, n) + margin`` with ``d = 1 - s``), plain dot products otherwise. An anchor
without a positive or without a negative gives 0; the ``"mean"`` is over the anchors with at
least one positive (the package contract). ``mining="all"`` materialises ``[N, M, M]``
terms. Default ``margin=0.2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_number, check_reduction
from losskit._core.registry import register
from losskit.embedding._common import LabelLossModule, prepare_labels, reduce_anchors

MINING = ("all", "hard")


def triplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    margin: float = 0.2,
    mining: str = "all",
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Triplet margin loss of ``embeddings[N, D]`` with integer ``labels[N]`` against
    ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self excluded);
    ``candidate_mask[N, M]`` (bool, e.g. from a miner) removes candidates per anchor."""
    m = check_number("margin", margin, low=0.0)
    check_choice("mining", mining, MINING)
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    s, pos = b.sim, b.pos
    neg = ~pos if b.valid is None else ~pos & b.valid
    has_pos = pos.any(dim=1)
    has = has_pos & neg.any(dim=1)
    if mining == "hard":
        hardest_pos = s.masked_fill(~pos, float("inf")).amin(dim=1)
        hardest_neg = s.masked_fill(~neg, float("-inf")).amax(dim=1)
        gap = torch.where(has, hardest_neg - hardest_pos, torch.zeros_like(hardest_pos))
        per_anchor = torch.where(has, torch.relu(gap + m), torch.zeros_like(gap))
    else:
        pairs = pos[:, :, None] & neg[:, None, :]
        terms = torch.relu(s[:, None, :] - s[:, :, None] + m)
        total = torch.where(pairs, terms, torch.zeros_like(terms)).sum(dim=(1, 2))
        per_anchor = total / pairs.sum(dim=(1, 2)).clamp_min(1).to(total.dtype)
    return reduce_anchors(per_anchor, has_pos, reduction).to(b.dtype)


class TripletMarginLoss(LabelLossModule):
    """Module form of :func:`triplet_margin_loss`."""

    function = triplet_margin_loss
    options = ("margin", "mining", "normalize", "reduction")

    def __init__(
        self,
        margin: float = 0.2,
        *,
        mining: str = "all",
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.margin = check_number("margin", margin, low=0.0)
        check_choice("mining", mining, MINING)
        self.mining = mining
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)


register(
    "triplet_margin",
    kind="loss",
    family="embedding",
    summary="Triplet margin loss max(0, s_an - s_ap + margin), all triplets or batch-hard.",
    defaults={"margin": 0.2, "mining": "all", "normalize": True},
    function=triplet_margin_loss,
    module=TripletMarginLoss,
)
