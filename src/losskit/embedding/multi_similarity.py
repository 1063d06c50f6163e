"""Multi-similarity loss with its pair mining (Wang et al. 2019; a baseline, no paper number
in the catalog).

For anchor ``i`` with positives ``P(i)`` and negatives ``N(i)`` (candidates with another
label; by default the batch without ``i``), pairs are first mined against the hardest pair of
the other kind:

- negative ``n`` is kept when ``s_in + epsilon > min_{p in P(i)} s_ip``,
- positive ``p`` is kept when ``s_ip - epsilon < max_{n in N(i)} s_in``,

and over the kept pairs ``P'(i)``, ``N'(i)``:

``l_i = 1/alpha log(1 + sum_{P'(i)} e^{-alpha (s_ip - base)})
      + 1/beta  log(1 + sum_{N'(i)} e^{beta (s_in - base)})``

computed as ``logsumexp`` with an appended zero. ``s`` are cosine similarities when
``normalize=True``. An empty kept set contributes 0; an anchor without a positive gives 0 and
the ``"mean"`` is over the anchors with at least one positive (the package contract). The
mining masks carry no gradient. Defaults ``alpha=2, beta=50, base=0.5 (lambda),
epsilon=0.1`` (pytorch-metric-learning's). With ``beta -> inf`` the negative part tends to
``max(0, max_n s_in - base)`` over kept negatives, a hinge at ``base``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_number, check_reduction
from losskit._core.registry import register
from losskit.embedding._common import LabelLossModule, PairBatch, prepare_labels, reduce_anchors


def _check(alpha: float, beta: float, base: float, epsilon: float) -> tuple[float, ...]:
    return (
        check_number("alpha", alpha, low=0.0, low_open=True),
        check_number("beta", beta, low=0.0, low_open=True),
        check_number("base", base),
        check_number("epsilon", epsilon, low=0.0),
    )


def _soft_sum(z: Tensor, keep: Tensor) -> Tensor:
    """``log(1 + sum_{keep} e^z)`` per row, as logsumexp over ``[0, z]``."""
    z = z.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(torch.cat([torch.zeros_like(z[:, :1]), z], dim=1), dim=1)


def _parts(
    b: PairBatch, alpha: float, beta: float, base: float, epsilon: float
) -> tuple[Tensor, Tensor]:
    """Per-anchor positive and negative parts over the mined pairs."""
    s, pos = b.sim, b.pos
    neg = ~pos if b.valid is None else ~pos & b.valid
    with torch.no_grad():
        hardest_pos = s.masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)
        hardest_neg = s.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)
        keep_neg = neg & (s + epsilon > hardest_pos)
        keep_pos = pos & (s - epsilon < hardest_neg)
    pos_part = _soft_sum(-alpha * (s - base), keep_pos) / alpha
    neg_part = _soft_sum(beta * (s - base), keep_neg) / beta
    return pos_part, neg_part


def multi_similarity_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Multi-similarity loss of ``embeddings[N, D]`` with integer ``labels[N]`` against
    ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self excluded);
    ``candidate_mask[N, M]`` (bool, e.g. from a miner) removes candidates per anchor."""
    hp = _check(alpha, beta, base, epsilon)
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    pos_part, neg_part = _parts(b, *hp)
    per_anchor = pos_part + neg_part
    has_pos = b.pos.any(dim=1)
    return reduce_anchors(per_anchor, has_pos, reduction).to(b.dtype)


class MultiSimilarityLoss(LabelLossModule):
    """Module form of :func:`multi_similarity_loss`."""

    function = multi_similarity_loss
    options = ("alpha", "beta", "base", "epsilon", "normalize", "reduction")

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float = 0.1,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.base, self.epsilon = _check(alpha, beta, base, epsilon)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)


register(
    "multi_similarity",
    kind="loss",
    family="embedding",
    summary="Multi-similarity loss: soft weighting of mined positive and negative pairs.",
    defaults={"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1, "normalize": True},
    function=multi_similarity_loss,
    module=MultiSimilarityLoss,
)
