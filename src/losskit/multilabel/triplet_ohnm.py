"""Triplet margin loss with online hard negative mining over in-batch labels (NGAME, paper 56).

``scores[N, M]`` are similarities (cosine in the paper) of each query to the labels of the
batch, ``target[N, M]`` marks its positives. Per row ``i``, the ``k_i = min(k, |neg_i|)``
hardest known negatives ``H_i`` (highest scores) are paired with every known positive ``p``::

    l_i = 1 / (|pos_i| k_i) * sum_{p in pos_i} sum_{j in H_i} a_pj * max(0, s_ij - s_ip + margin)

with ``a_pj = 1`` by default. With ``aggressive=True`` (the code's ``loss_agressive``),
``a_p = softmax_j(s_ij / tau * 1[pair (p, j) violates the margin])`` over ``H_i``: violating
negatives are weighted by their similarity, and non-violating ones get logit 0 (the code does
not exclude them; they take softmax mass but their hinge is 0 anyway). The weights are not
detached, as in the code, and the ``1 / k_i`` stays (the code averages the weighted terms).

Defaults are the released LF-AmazonTitles-131K Siamese configuration: ``margin=0.3``,
``k=10``, ``aggressive=True``, ``tau=0.1`` (the function's ``aggressive`` defaults to the
plain form). With one positive per row and at least ``k`` negatives this is exactly the code's
``TripletMarginLossOHNM`` (its positive is the diagonal of the in-batch score matrix), and
``reduction="mean"`` equals its mean over the ``N x k`` terms. The loss is 0 exactly when
every positive beats each of its row's ``k`` hardest negatives by at least ``margin``.

Where this generalises the code: several positives per row (each one an anchor); rows with
fewer than ``k`` known negatives use those they have (the code would then pick positives,
masked to -10, as negatives); the mask removes entries from both sides. A row without a known
positive or negative forms no triplet and gives 0 (counted in ``"mean"`` if it has a known
entry, as for the other losses of ``losskit.multilabel``). Memory: ``N x M x min(k, M)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.multilabel._common import MultiLabelLossModule, finish_samples, prepare_multilabel


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    check_number("k", k, low=1)
    return k


def triplet_ohnm_loss(
    scores: Tensor,
    target: Tensor,
    *,
    margin: float = 0.3,
    k: int = 10,
    aggressive: bool = False,
    tau: float = 0.1,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Triplet margin loss over each row's ``k`` hardest in-batch negatives (see module)."""
    margin = check_number("margin", margin, low=0.0)
    k = _check_k(k)
    tau = check_number("tau", tau, low=0.0, low_open=True)
    b = prepare_multilabel(scores, target, mask, reduction=reduction, name="scores")
    pos, neg = b.positives(), b.negatives()
    hard = torch.where(neg, b.x, -torch.inf).topk(min(k, b.x.shape[1]), dim=1).indices
    valid = neg.gather(1, hard)  # [N, K]: a real negative (rows with few negatives pad)
    s_neg = b.x.gather(1, hard)
    hinge = F.relu(s_neg[:, None, :] - b.x[:, :, None] + margin)  # [N, M, K]
    pairs = pos[:, :, None] & valid[:, None, :]
    hinge = torch.where(pairs, hinge, torch.zeros_like(hinge))
    if aggressive:
        logits = s_neg[:, None, :] / tau * (hinge > 0)
        none = torch.where(valid.any(dim=1), -torch.inf, 0.0)[:, None, None]
        weights = torch.softmax(torch.where(valid[:, None, :], logits, none), dim=2)
        hinge = hinge * weights
    count = pos.sum(dim=1) * valid.sum(dim=1)
    per_sample = hinge.sum(dim=(1, 2)) / count.clamp_min(1).to(hinge.dtype)
    return finish_samples(per_sample, b, reduction)


class TripletOHNMLoss(MultiLabelLossModule):
    """Module form of :func:`triplet_ohnm_loss`."""

    def __init__(
        self,
        *,
        margin: float = 0.3,
        k: int = 10,
        aggressive: bool = False,
        tau: float = 0.1,
        reduction: str = "mean",
    ) -> None:
        super().__init__(None, reduction)
        self.margin = check_number("margin", margin, low=0.0)
        self.k = _check_k(k)
        self.aggressive = bool(aggressive)
        self.tau = check_number("tau", tau, low=0.0, low_open=True)

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return triplet_ohnm_loss(
            scores,
            target,
            margin=self.margin,
            k=self.k,
            aggressive=self.aggressive,
            tau=self.tau,
            mask=mask,
            reduction=self.reduction,
        )


register(
    "triplet_ohnm",
    kind="loss",
    family="multilabel",
    papers=(56,),
    summary="Triplet margin loss over the k hardest in-batch negatives (NGAME), optionally "
    "softmax-weighted towards the hardest violators.",
    defaults={"margin": 0.3, "k": 10, "aggressive": True, "tau": 0.1},
    function=triplet_ohnm_loss,
    module=TripletOHNMLoss,
)
