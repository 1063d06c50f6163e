"""Unified negative pair generation, UNPG (Jung et al. 2022; paper 18), on top of the
ArcFace / CosFace heads of ``losskit.embedding.margin_heads``.

A margin-softmax head gives each sample its classification pairs (CLPG): the margin logit
``s * f(cos theta_y)`` of its class and ``s * cos theta_j`` for the other class centres.
UNPG adds the in-batch metric-learning negative pairs (MLPG): the cosine similarities
``S_n = {<z_i, z_j>/(|z_i||z_j|) : i < j, y_i != y_j}`` of every pair of samples with
different labels. Noisy negatives are filtered with a box-and-whisker rule,

``S'_n = {s in S_n : Q1 - w * IQR <= s <= Q3 + w * IQR}``,  ``IQR = Q3 - Q1``,

(:func:`box_whisker_filter`), and the surviving set, the same for every sample, is appended to
every row of the logits with the head's scale ``s``:

``l_i = -log( e^{s f(cos theta_{y_i})} / ( e^{s f(cos theta_{y_i})} + sum_{j != y_i}
e^{s cos theta_j} + sum_{s_n in S'_n} e^{s * s_n} ) )``.

With no negative pair (one label in the batch, one sample, or every pair masked out) this is
exactly the cross-entropy of the head's logits: plain ArcFace / CosFace. The filter runs
without gradient; the gradient flows into the logits and into the kept pair similarities.

Defaults (the authors' ``head.zoo.yaml``): ``scale=64``, ArcFace ``margin=0.5``,
``whisker=1.5`` (their MS1MV2 models; K-FACE used ``1.0``). The quartiles are the usual
linearly interpolated ones (``quartiles="interpolate"``); the released code picks
``sorted[int(0.25 * L)]`` and ``sorted[int(0.75 * L)]`` of the ``L`` similarities, offered as
``quartiles="index"``. The released ArcFace head uses ``cos(theta + m)`` without the
``theta + m > pi`` fallback of ``ArcFaceHead``; the two agree wherever ``theta + m <= pi``.

Candidates: by default the pairs are the batch's upper triangle. With ``ref_embeddings`` /
``ref_labels`` (e.g. gathered across ranks) ``S_n`` is every (anchor, candidate) pair with
different labels, each ordered pair once. ``candidate_mask[N, M]`` (from a miner) removes
pairs. ``reduction``: ``"none"`` gives ``l_i`` per sample, ``"mean"`` their mean over the
``N`` samples, ``"sum"`` their sum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import (
    check_choice,
    check_class_target,
    check_number,
    check_reduction,
    check_scores,
)
from losskit._core.precision import upcast_all
from losskit._core.registry import register
from losskit.embedding._common import prepare_labels
from losskit.embedding.margin_heads import ArcFaceHead, CosFaceHead

QUARTILES = ("interpolate", "index")
HEADS = {"arcface": ArcFaceHead, "cosface": CosFaceHead}


def _check(scale: float, whisker: float, quartiles: str) -> tuple[float, float]:
    check_choice("quartiles", quartiles, QUARTILES)
    return (
        check_number("scale", scale, low=0.0, low_open=True),
        check_number("whisker", whisker, low=0.0),
    )


def _quartile(v: Tensor, q: float, quartiles: str) -> Tensor:
    n = v.shape[0]
    if quartiles == "index":
        return v[int(q * n)]
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return torch.lerp(v[lo], v[hi], pos - lo).clamp(v[lo], v[hi])


@torch.no_grad()
def box_whisker_filter(
    similarities: Tensor, whisker: float = 1.5, *, quartiles: str = "interpolate"
) -> Tensor:
    """Bool mask of the entries of the 1-D ``similarities`` inside the whiskers
    ``[Q1 - whisker * IQR, Q3 + whisker * IQR]``: UNPG's noisy-negative filter (paper 18).

    ``quartiles="interpolate"``: linearly interpolated quartiles (as ``torch.quantile``);
    ``"index"``: ``sorted[int(q * L)]``, the released code's choice. ``whisker=inf`` keeps
    everything. The kept interval contains the median (so, for an odd count, the median
    entry is always kept)."""
    whisker = check_number("whisker", whisker, low=0.0)
    check_choice("quartiles", quartiles, QUARTILES)
    if not isinstance(similarities, Tensor) or similarities.ndim != 1:
        raise ValueError("similarities must be a 1-D tensor")
    if similarities.numel() == 0 or math.isinf(whisker):
        return torch.ones_like(similarities, dtype=torch.bool)
    v = similarities.sort().values
    q1, q3 = _quartile(v, 0.25, quartiles), _quartile(v, 0.75, quartiles)
    iqr = q3 - q1
    return (similarities >= q1 - whisker * iqr) & (similarities <= q3 + whisker * iqr)


def unpg_negatives(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    candidate_mask: Tensor | None = None,
    whisker: float = 1.5,
    quartiles: str = "interpolate",
) -> Tensor:
    """The filtered negative-pair cosine similarities ``S'_n`` (1-D, differentiable)."""
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=True,
        reduction="mean",
        candidate_mask=candidate_mask,
    )
    neg = ~b.pos if b.valid is None else ~b.pos & b.valid
    if ref_embeddings is None:
        neg = neg.triu(diagonal=1)
    sn = b.sim[neg]
    return sn[box_whisker_filter(sn.detach(), whisker, quartiles=quartiles)]


def unpg_loss(
    logits: Tensor,
    embeddings: Tensor,
    labels: Tensor,
    *,
    scale: float = 64.0,
    whisker: float = 1.5,
    quartiles: str = "interpolate",
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    candidate_mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """UNPG loss from a margin head's ``logits[N, C]`` (``head(embeddings, labels)``, already
    scaled by the head's ``scale``, which ``scale`` must equal), the ``embeddings[N, D]`` and
    integer ``labels[N]``. See the module docstring."""
    scale, whisker = _check(scale, whisker, quartiles)
    check_reduction(reduction)
    sn = unpg_negatives(
        embeddings,
        labels,
        ref_embeddings=ref_embeddings,
        ref_labels=ref_labels,
        candidate_mask=candidate_mask,
        whisker=whisker,
        quartiles=quartiles,
    )
    check_scores(logits, "logits", min_classes=1)
    if logits.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"logits must have one row per embedding ({embeddings.shape[0]}), "
            f"got shape {tuple(logits.shape)}"
        )
    check_class_target(labels, logits, allow_soft=False, name="labels")
    z, sn = upcast_all(logits, sn)
    if sn.numel() == 0:  # exactly the head's cross-entropy
        per_sample = F.cross_entropy(z, labels, reduction="none")
    else:
        lse = torch.logaddexp(torch.logsumexp(z, dim=1), torch.logsumexp(scale * sn, dim=0))
        per_sample = lse - z.gather(1, labels[:, None]).squeeze(1)
    if reduction == "sum":
        per_sample = per_sample.sum()
    elif reduction == "mean":
        per_sample = per_sample.mean()
    return per_sample.to(logits.dtype)


class UNPGLoss(nn.Module):
    """ArcFace or CosFace head (``head="arcface"|"cosface"``, ``scale``, ``margin``; ``None``
    takes the head's default) with UNPG's filtered in-batch negatives; forward takes
    ``(embeddings, labels[, ref_embeddings, ref_labels, candidate_mask])``. The class centres
    are ``self.head.weight``."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        head: str = "arcface",
        scale: float = 64.0,
        margin: float | None = None,
        whisker: float = 1.5,
        quartiles: str = "interpolate",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_choice("head", head, tuple(HEADS))
        scale, self.whisker = _check(scale, whisker, quartiles)
        kw = {} if margin is None else {"margin": margin}
        self.head = HEADS[head](in_features, num_classes, scale=scale, **kw)
        self.quartiles = quartiles
        self.reduction = check_reduction(reduction)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return unpg_loss(
            self.head(embeddings, labels),
            embeddings,
            labels,
            scale=self.head.scale,
            whisker=self.whisker,
            quartiles=self.quartiles,
            ref_embeddings=ref_embeddings,
            ref_labels=ref_labels,
            candidate_mask=candidate_mask,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"whisker={self.whisker}, quartiles={self.quartiles!r}, reduction={self.reduction!r}"


register(
    "unpg",
    kind="loss",
    family="embedding",
    papers=(18,),
    summary="ArcFace/CosFace logits plus box-and-whisker-filtered in-batch negative pairs.",
    defaults={"head": "arcface", "scale": 64.0, "margin": 0.5, "whisker": 1.5},
    function=unpg_loss,
    module=UNPGLoss,
)
