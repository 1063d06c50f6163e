"""Threshold-consistent margin loss, TCM (Zhang et al., ICLR 2024; paper 50).

A regulariser added to a base metric loss. Over the batch's cosine similarities ``s``, only
the hard pairs count: positives with ``s <= m+`` and negatives with ``s >= m-``:

``L = lambda+ * sum_{pos: s <= m+} (m+ - s) / #{pos: s <= m+}
    + lambda- * sum_{neg: s >= m-} (s - m-) / #{neg: s >= m-}``

Each term is the mean over its violators and is 0 when there are none. Defaults
``lambda+ = lambda- = 1``, ``m+ = 0.9``, ``m- = 0.5`` (the paper's and
pytorch-metric-learning's ``ThresholdConsistentMarginLoss``).

How the batch-level normalisation maps onto the package's per-anchor reduction. Let ``A`` be
the number of anchors with at least one positive, and ``C+``/``C-`` the number of violating
positive/negative pairs of those anchors. Anchor ``i`` gets

``l_i = lambda+ * A * sum_{p in P(i): s_ip <= m+} (m+ - s_ip) / C+
      + lambda- * A * sum_{n in N(i): s_in >= m-} (s_in - m-) / C-``

so that ``"mean"`` (over the ``A`` anchors with a positive) is exactly the batch value
``L`` above; ``"none"`` gives ``l_i`` (a per-anchor share, ``A`` times its part of ``L``),
and ``"sum"`` gives ``A * L``. The counts are integers and carry no gradient. Following the
package contract, an anchor without a positive gives 0 and its pairs are left out of ``C-``.
With the default candidates (the batch, self excluded) every pair is seen from both ends, as
in pytorch-metric-learning, which leaves the means unchanged.

Across ranks (anchors local, candidates from ``losskit.distributed.gather_with_grad``), ``A``,
``C+`` and ``C-`` are batch-level counts: ``sync_counts=True`` sums them over the ranks, so
``"none"``/``"sum"`` give exactly the single-process per-anchor shares / their local sum, and
``"mean"`` returns ``W * sum_{local i} l_i / A``, whose average over the ``W`` ranks is the
single-process batch value (the ``W``-fold gradient convention of InfoNCE and SupCon). Without
an initialised process group ``sync_counts`` changes nothing.

Differences from pytorch-metric-learning: there, anchors without positives still contribute
their negatives, and the similarities are taken between rows of ``embeddings`` even when
``ref_emb`` is given; here ``ref_embeddings`` are the candidates. ``normalize=False`` uses raw
dot products (the reference is cosine only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_number, check_reduction
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register
from losskit.distributed import sum_across_ranks, world_size
from losskit.embedding._common import LabelLossModule, PairBatch, prepare_labels

_DEFAULTS = {"lambda_plus": 1.0, "lambda_minus": 1.0, "margin_plus": 0.9, "margin_minus": 0.5}


def _check(
    lambda_plus: float, lambda_minus: float, margin_plus: float, margin_minus: float
) -> tuple[float, float, float, float]:
    return (
        check_number("lambda_plus", lambda_plus, low=0.0),
        check_number("lambda_minus", lambda_minus, low=0.0),
        check_number("margin_plus", margin_plus),
        check_number("margin_minus", margin_minus),
    )


def _parts(
    b: PairBatch,
    lambda_plus: float,
    lambda_minus: float,
    margin_plus: float,
    margin_minus: float,
    sync: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-anchor positive and negative parts (batch-normalised, times ``A``) and ``A``;
    ``sync`` sums the counts over ranks."""
    s, pos = b.sim, b.pos
    has_pos = pos.any(dim=1, keepdim=True)
    neg = ~pos if b.valid is None else ~pos & b.valid
    hard_pos = pos & (s <= margin_plus)
    hard_neg = neg & has_pos & (s >= margin_minus)
    zero = s.new_zeros(())
    counts = torch.stack([has_pos.sum(), hard_pos.sum(), hard_neg.sum()]).to(s.dtype)
    if sync:
        counts = sum_across_ranks(counts)
    a, c_pos, c_neg = counts[0], counts[1].clamp_min(1), counts[2].clamp_min(1)
    pos_part = (margin_plus - s).where(hard_pos, zero).sum(dim=1) * (lambda_plus * a / c_pos)
    neg_part = (s - margin_minus).where(hard_neg, zero).sum(dim=1) * (lambda_minus * a / c_neg)
    return pos_part, neg_part, a


def tcm_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    margin_plus: float = 0.9,
    margin_minus: float = 0.5,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
    sync_counts: bool = False,
) -> Tensor:
    """TCM regulariser of ``embeddings[N, D]`` with integer ``labels[N]`` against
    ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self excluded);
    ``candidate_mask[N, M]`` (bool, e.g. from a miner) removes candidates per anchor.
    ``"mean"`` is the paper's batch value; see the module docstring for ``"none"``/``"sum"``."""
    hp = _check(lambda_plus, lambda_minus, margin_plus, margin_minus)
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    pos_part, neg_part, a = _parts(b, *hp, sync=bool(sync_counts))
    per_anchor = pos_part + neg_part
    if reduction == "mean":
        scale = world_size() if sync_counts else 1
        out = reduce_loss(per_anchor, "sum") * scale / a.clamp_min(1)
    else:
        out = reduce_loss(per_anchor, reduction)
    return out.to(b.dtype)


class TCMLoss(LabelLossModule):
    """Module form of :func:`tcm_loss`."""

    function = tcm_loss
    options = (
        "lambda_plus",
        "lambda_minus",
        "margin_plus",
        "margin_minus",
        "normalize",
        "reduction",
        "sync_counts",
    )

    def __init__(
        self,
        lambda_plus: float = 1.0,
        lambda_minus: float = 1.0,
        margin_plus: float = 0.9,
        margin_minus: float = 0.5,
        *,
        normalize: bool = True,
        reduction: str = "mean",
        sync_counts: bool = False,
    ) -> None:
        super().__init__()
        self.sync_counts = bool(sync_counts)
        self.lambda_plus, self.lambda_minus, self.margin_plus, self.margin_minus = _check(
            lambda_plus, lambda_minus, margin_plus, margin_minus
        )
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)


register(
    "tcm",
    kind="loss",
    family="embedding",
    papers=(50,),
    summary="Threshold-consistent margin: hinge on hard positive/negative cosine similarities.",
    defaults={**_DEFAULTS, "normalize": True},
    function=tcm_loss,
    module=TCMLoss,
)
