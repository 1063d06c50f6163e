"""GroCo: learning by sorting with group ordering constraints (Shvetsova et al., ICCV 2023;
paper 33).

For each anchor ``i`` take the similarities to its positives ``P(i)`` (all of them) and to its
``k`` hardest negatives (the ``k`` most similar candidates of another label; all negatives when
``topk_negatives=None``). Each group is pre-ordered ascending and the two are concatenated,
``x = [negatives ascending, positives ascending]`` (``q`` negatives, ``p`` positives), and
relaxed-sorted by a differentiable sorting network (:func:`~losskit.embedding.diffsort.soft_sort`),
giving ``P[e, r]``, the weight of element ``e`` at ascending rank ``r``. The group ordering
constraint asks only that every positive rank above every negative, i.e. that positives take
the top ``p`` ranks, whatever the order inside a group. With ``m_e`` the mass element ``e``
puts on its own group's ranks (``sum_{r >= q} P[e, r]`` for a positive, ``sum_{r < q} P[e, r]``
for a negative) the loss of the anchor is the binary cross-entropy to that target:

``l_i = 1/(p + q) * sum_e -log(m_e)``

(torch's BCE, whose log is floored at -100). ``P`` is row-stochastic, so this equals the
reference code's average of the BCE on the top-``p`` mass and the BCE on the bottom-``q``
mass, which are equal. It is small when positives sit far above negatives and the relaxation
is steep; the pre-ordering puts the weakest positive next to the hardest negative, where the
network does most of its mixing (the paper's "implicit emphasis on strong positives and
negatives"). With one positive, one negative and the logistic relaxation,
``l_i = softplus(-steepness * (s_ip - s_in))``, the pairwise logistic ranking loss.

Defaults are the reference code's (``ninatu/learning_by_sorting``, ``losses/groco.py`` and
``configs/*.yaml``): ``topk_negatives=10``, odd-even network, Cauchy relaxation,
``steepness=1``, cosine similarities, no temperature. The code detaches the candidates by
default (only anchors get gradient); here that is ``stop_grad=True``, off by default so that
the loss is a plain function of all similarities. The code's negatives are the other images of
the anchor's own view, which :func:`groco_views_loss` reproduces (``candidate_mask`` does the
same in the label form); its value equals the code's.
Anchors are grouped by ``(p, q)`` and each group is sorted in one vectorised call. Cost per
anchor: ``O(L (p + q)^2)`` for ``L`` network layers (``p + q`` for odd-even, about
``log2(p + q)^2 / 2`` for bitonic, the better choice for large groups).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_reduction
from losskit._core.registry import register
from losskit.embedding._common import (
    LabelLossModule,
    PairBatch,
    check_embeddings,
    prepare_labels,
    reduce_anchors,
    similarities,
)
from losskit.embedding.diffsort import check_sort_options, soft_sort

_SORT = {"network": "odd_even", "relaxation": "cauchy", "steepness": 1.0, "art_lambda": 0.25}


def _check_topk(topk_negatives: int | None) -> int | None:
    if topk_negatives is None:
        return None
    if isinstance(topk_negatives, bool) or not isinstance(topk_negatives, int):
        raise ValueError(f"topk_negatives must be a positive int or None, got {topk_negatives!r}")
    if topk_negatives < 1:
        raise ValueError(f"topk_negatives must be >= 1, got {topk_negatives}")
    return topk_negatives


def _ascending(sim: Tensor, mask: Tensor, k: int) -> Tensor:
    """The ``k`` largest entries of each row of ``sim`` where ``mask``, ascending."""
    return sim.masked_fill(~mask, float("-inf")).topk(k, dim=1).values.flip(1)


def _per_anchor(b: PairBatch, topk: int | None, sort_kw: dict) -> Tensor:
    sim, pos = b.sim, b.pos
    neg = ~pos if b.valid is None else b.valid & ~pos
    n_pos = pos.sum(dim=1)
    n_neg = neg.sum(dim=1) if topk is None else neg.sum(dim=1).clamp(max=topk)
    out = sim[:, :0].sum(dim=1)  # zeros that stay in the graph (zero gradient)
    sizes = torch.stack([n_pos, n_neg], dim=1)
    # anchors without a positive give 0; without a negative every mass is 1 and the loss 0
    for p, q in sizes[(n_pos > 0) & (n_neg > 0)].unique(dim=0).tolist():
        rows = ((n_pos == p) & (n_neg == q)).nonzero().squeeze(1)
        s = sim[rows]
        x = torch.cat([_ascending(s, neg[rows], q), _ascending(s, pos[rows], p)], dim=1)
        _, perm = soft_sort(x, **sort_kw)
        own = torch.cat([perm[:, :q, :q].sum(dim=2), perm[:, q:, q:].sum(dim=2)], dim=1)
        own = own.clamp(0.0, 1.0)
        bce = F.binary_cross_entropy(own, torch.ones_like(own), reduction="none")
        out = out.index_copy(0, rows, bce.mean(dim=1))
    return out


def groco_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    topk_negatives: int | None = 10,
    network: str = "odd_even",
    relaxation: str = "cauchy",
    steepness: float = 1.0,
    art_lambda: float = 0.25,
    stop_grad: bool = False,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """GroCo of ``embeddings[N, D]`` with integer ``labels[N]`` against
    ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self excluded); see the
    module docstring. ``stop_grad`` detaches the candidates (the reference code's default)."""
    topk = _check_topk(topk_negatives)
    beta, lam = check_sort_options(network, relaxation, steepness, art_lambda)
    sort_kw = {"network": network, "relaxation": relaxation, "steepness": beta, "art_lambda": lam}
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    if stop_grad:
        ref = embeddings if ref_embeddings is None else ref_embeddings
        b.sim = similarities(embeddings, ref.detach(), normalize)
    per_anchor = _per_anchor(b, topk, sort_kw)
    return reduce_anchors(per_anchor, b.pos.any(dim=1), reduction).to(b.dtype)


def groco_views_loss(
    views: Tensor,
    *,
    num_positive_views: int | None = None,
    **kwargs,
) -> Tensor:
    """GroCo over ``views[V, N, D]`` (view ``v`` of image ``n``), as the reference code pairs
    them: the positives of an anchor are the other views of its image among the first
    ``num_positive_views`` (default all ``V``; multi-crop puts the full crops first), its
    negatives the other images of its own view. ``"none"`` gives ``V * N`` values, view-major.
    Other keyword arguments go to :func:`groco_loss`."""
    if not isinstance(views, Tensor) or views.ndim != 3:
        shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"views must be a tensor of shape [V, N, D], got {shape}")
    v, n, d = views.shape
    n_pos = v if num_positive_views is None else num_positive_views
    if isinstance(n_pos, bool) or not isinstance(n_pos, int) or not 1 <= n_pos <= v:
        raise ValueError(f"num_positive_views must be an int in [1, {v}], got {n_pos!r}")
    check_embeddings(views.reshape(v * n, d), "views")
    dev = views.device
    image = torch.arange(n, device=dev).repeat(v)
    view = torch.arange(v, device=dev).repeat_interleave(n)
    same_image = image[:, None] == image[None, :]
    keep = (same_image & (view[None, :] < n_pos)) | (~same_image & (view[:, None] == view[None, :]))
    return groco_loss(views.reshape(v * n, d), image, candidate_mask=keep, **kwargs)


class GroCoLoss(LabelLossModule):
    """Module form of :func:`groco_loss`."""

    function = groco_loss
    options = (
        "topk_negatives",
        "network",
        "relaxation",
        "steepness",
        "art_lambda",
        "stop_grad",
        "normalize",
        "reduction",
    )

    def __init__(
        self,
        topk_negatives: int | None = 10,
        *,
        network: str = "odd_even",
        relaxation: str = "cauchy",
        steepness: float = 1.0,
        art_lambda: float = 0.25,
        stop_grad: bool = False,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.topk_negatives = _check_topk(topk_negatives)
        self.steepness, self.art_lambda = check_sort_options(
            network, relaxation, steepness, art_lambda
        )
        self.network, self.relaxation = network, relaxation
        self.stop_grad = bool(stop_grad)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)


register(
    "groco",
    kind="loss",
    family="embedding",
    papers=(33,),
    summary="GroCo: differentiable sorting network; BCE that positives take the top ranks.",
    defaults={"topk_negatives": 10, **_SORT, "stop_grad": False, "normalize": True},
    function=groco_loss,
    module=GroCoLoss,
)
