"""Pair miners for the label-based embedding losses: they return ``candidate_mask[N, M]``.

Every miner takes the label-based contract of ``losskit.embedding``: ``embeddings[N, D]``
with integer ``labels[N]`` against ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the
batch, each anchor's own entry excluded), and an optional incoming ``candidate_mask`` (so
miners compose: the output of one can be the input of the next). It returns a bool
``[N, M]`` mask, computed under ``torch.no_grad()``, for the losses' ``candidate_mask=``:
True keeps the candidate (as a positive when it shares the anchor's label, as a negative
otherwise), False removes it for that anchor. Positives ``P(a)`` and negatives ``N(a)`` are
the candidates with the anchor's label and with another one.

Similarities ``s`` are those of the losses (cosine when ``normalize=True``, dot products
otherwise, in float32 or wider). The distance-based miners take ``distance``:
``"cosine"`` ``d = 1 - s`` (the distance form of ``triplet_margin_loss``),
``"euclidean"`` ``d = ||a - b||`` and ``"squared_euclidean"`` ``d = ||a - b||^2``, of the
L2-normalised vectors when ``normalize=True`` (then ``||a - b||^2 = 2 - 2 s``).

- :func:`batch_hard_miner` (Hermans et al. 2017): per anchor the hardest positive
  (``argmax_{P(a)} d``) and the hardest negative (``argmin_{N(a)} d``); ties go to the
  lowest index. Default ``distance="euclidean"`` (the paper's).
- :func:`semi_hard_miner` (Schroff et al. 2015, FaceNet): triplets ``(a, p, n)`` with
  ``d(a,p) < d(a,n) < d(a,p) + margin``; the mask keeps every candidate that belongs to at
  least one such triplet of its anchor (``triplets=True`` returns the ``[N, M, M]`` triplet
  mask itself). No fallback when an anchor has no semi-hard negative. Defaults
  ``margin=0.2``, ``distance="squared_euclidean"`` (FaceNet's).
- :func:`multi_similarity_miner` (Wang et al. 2019): negative ``n`` kept when
  ``s_an + epsilon > min_{P(a)} s_ap``, positive ``p`` kept when
  ``s_ap - epsilon < max_{N(a)} s_an``; the rule inside ``multi_similarity_loss``.
  Default ``epsilon=0.1``.
- :func:`threshold_miner`: pairs of the chosen kind (``pairs="all"``, ``"positive"``,
  ``"negative"``) kept when ``low <= s <= high``; pairs of the other kind are all kept.
  E.g. ``pairs="negative", high=h`` drops likely false negatives (too similar to the anchor).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_number
from losskit._core.precision import upcast_all
from losskit.embedding._common import prepare_labels

DISTANCES = ("cosine", "euclidean", "squared_euclidean")
PAIRS = ("all", "positive", "negative")


def _pairs(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    normalize: bool,
    candidate_mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Similarities ``[N, M]``, positives and negatives (bool ``[N, M]``)."""
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction="none",
        candidate_mask=candidate_mask,
    )
    neg = ~b.pos if b.valid is None else ~b.pos & b.valid
    return b.sim, b.pos, neg


def _distances(
    sim: Tensor, embeddings: Tensor, ref: Tensor | None, distance: str, normalize: bool
) -> Tensor:
    if distance == "cosine":
        return 1 - sim
    if normalize:
        sq = 2 - 2 * sim
    else:
        a, r = upcast_all(embeddings, embeddings if ref is None else ref)
        sq = a.pow(2).sum(1)[:, None] + r.pow(2).sum(1)[None, :] - 2 * sim
    sq = sq.clamp_min(0)
    return sq if distance == "squared_euclidean" else sq.sqrt()


@torch.no_grad()
def batch_hard_miner(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    distance: str = "euclidean",
    normalize: bool = True,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Mask of each anchor's hardest positive and hardest negative (at most two per row)."""
    check_choice("distance", distance, DISTANCES)
    sim, pos, neg = _pairs(
        embeddings, labels, ref_embeddings, ref_labels, normalize, candidate_mask
    )
    d = _distances(sim, embeddings, ref_embeddings, distance, normalize)
    rows = torch.arange(d.shape[0], device=d.device)
    out = torch.zeros_like(pos)
    hard_pos = d.masked_fill(~pos, float("-inf")).argmax(dim=1)
    hard_neg = d.masked_fill(~neg, float("inf")).argmin(dim=1)
    out[rows, hard_pos] = pos.any(dim=1)
    out[rows, hard_neg] |= neg.any(dim=1)
    return out


@torch.no_grad()
def semi_hard_miner(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    margin: float = 0.2,
    distance: str = "squared_euclidean",
    normalize: bool = True,
    triplets: bool = False,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """FaceNet's semi-hard triplets ``d(a,p) < d(a,n) < d(a,p) + margin``: the ``[N, M]``
    mask of their members, or with ``triplets=True`` the ``[N, M, M]`` mask ``[a, p, n]``."""
    m = check_number("margin", margin, low=0.0, low_open=True)
    check_choice("distance", distance, DISTANCES)
    sim, pos, neg = _pairs(
        embeddings, labels, ref_embeddings, ref_labels, normalize, candidate_mask
    )
    d = _distances(sim, embeddings, ref_embeddings, distance, normalize)
    d_ap, d_an = d[:, :, None], d[:, None, :]
    keep = pos[:, :, None] & neg[:, None, :] & (d_an > d_ap) & (d_an < d_ap + m)
    if triplets:
        return keep
    return keep.any(dim=2) | keep.any(dim=1)


@torch.no_grad()
def multi_similarity_miner(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    epsilon: float = 0.1,
    normalize: bool = True,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Wang et al.'s pair mining: negatives harder than the hardest positive minus
    ``epsilon``, positives harder than the hardest negative plus ``epsilon``."""
    eps = check_number("epsilon", epsilon, low=0.0)
    s, pos, neg = _pairs(embeddings, labels, ref_embeddings, ref_labels, normalize, candidate_mask)
    hardest_pos = s.masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)
    hardest_neg = s.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)
    return (neg & (s + eps > hardest_pos)) | (pos & (s - eps < hardest_neg))


@torch.no_grad()
def threshold_miner(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    low: float = -math.inf,
    high: float = math.inf,
    pairs: str = "all",
    normalize: bool = True,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Keep the ``pairs`` (all, positive or negative ones) with ``low <= s <= high``; the
    other kind of pairs is kept whole."""
    lo = check_number("low", low)
    hi = check_number("high", high)
    if lo > hi:
        raise ValueError(f"low must not exceed high, got low={low!r} > high={high!r}")
    check_choice("pairs", pairs, PAIRS)
    s, pos, neg = _pairs(embeddings, labels, ref_embeddings, ref_labels, normalize, candidate_mask)
    inside = (s >= lo) & (s <= hi)
    keep_pos = pos & inside if pairs in ("all", "positive") else pos
    keep_neg = neg & inside if pairs in ("all", "negative") else neg
    return keep_pos | keep_neg
