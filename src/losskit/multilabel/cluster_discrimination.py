"""Multi-label cluster discrimination loss (MLCD, paper 7; An et al., ECCV 2024).

Each sample has a set of positive classes ``P`` (its ``l`` nearest cluster centres) and the
other classes are negatives ``N``. Eq. 5 of the paper separates the two:

``L = log(1 + sum_{i in P} exp(-s_i)) + log(1 + sum_{j in N'} exp(s_j))``

where ``N'`` is a random subset of the negatives, ``|N'| = r |N|`` (negative class sampling,
as in Partial FC; the paper's ``r = 0.1``). Both terms are ``logsumexp`` over the scores with
a zero column appended, so they are stable for any score. The positive term depends on the
positive scores only and the negative term on the negative scores only. With one positive
and one negative ``L = softplus(s_n) + softplus(-s_p)``; ``L -> 0`` exactly when every
positive score goes to ``+inf`` and every negative score to ``-inf``; ``L`` is invariant to a
permutation of the classes. The paper's ablation ("MLC", Eq. 4) couples the terms as
``log(1 + sum_{i,j} exp(s_j - s_i))``; Eq. 5 adds the two separate terms to it and factorises.

Scores. The paper's ``s`` is the similarity between the L2-normalised feature and the
L2-normalised class centre, and its appendix (A.1.2) states that, following ArcFace and
Unicom, a margin ``m = 0.3`` is applied to the positive classes. Here ``scores`` are those
cosine similarities and the loss forms ``s_i = scale * cos(theta_i + margin)`` for positives
and ``s_j = scale * cos(theta_j)`` for negatives. ``cos(theta + m)`` is
``c cos m - sqrt(1 - c^2) sin m``; past ``theta + m = pi`` (``c < -cos m``) it follows
ArcFace's usual replacement ``c - m sin m`` so that the positive score keeps increasing with
``c``. With ``margin > 0`` the scores must lie in ``[-1, 1]`` (use
:class:`ClusterDiscriminationHead`); with ``margin = 0`` any real scores are accepted, and
``scale = 1, margin = 0`` is Eq. 5 applied to the given scores.

Unverified / choices (no MLCD training code was found in deepglint/unicom):

- ``scale``: the paper gives none. The default 64 is the scale the same authors hard-code in
  their ArcFace / Partial FC code (``CombinedMarginLoss(64, ...)``); Unicom's retrieval
  fine-tuning script uses 32.
- The angular margin is differentiated exactly here. The authors' ``CombinedMarginLoss``
  applies it in place under ``no_grad``, so its backward treats the margin as the identity.
- Negative sampling: the paper samples ``N'`` per loss step from each sample's negatives.
  Here each row keeps ``round(r |N|)`` (at least one) of its known negatives, drawn uniformly
  and independently per row (Partial FC instead draws one shared subset of class centres
  per step, which is a memory optimisation of the same idea). The draw has no gradient.

Reduction: one value per sample (the sum of the two terms over its known entries); samples
with no known entry give 0 and drop out of ``"mean"``. A row with no known positive has
only the negative term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number, check_reduction, checks_enabled
from losskit._core.registry import register
from losskit.multilabel._common import finish_samples, prepare_multilabel


def cluster_discrimination_loss(
    scores: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    scale: float = 64.0,
    margin: float = 0.3,
    negative_ratio: float = 1.0,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> Tensor:
    """MLCD loss (Eq. 5) on cosine ``scores[N, L]``; ``negative_ratio < 1`` samples negatives
    with ``generator`` (the global generator when ``None``)."""
    s = check_number("scale", scale, low=0.0, low_open=True)
    m = check_number("margin", margin, low=0.0, high=math.pi, high_open=True)
    r = check_number("negative_ratio", negative_ratio, low=0.0, high=1.0, low_open=True)
    b = prepare_multilabel(scores, target, mask, reduction=reduction, name="scores")
    if m > 0 and checks_enabled() and bool((b.x.abs() > 1).any()):
        raise ValueError("scores must be cosine similarities in [-1, 1] when margin > 0")
    pos, neg = b.positives(), b.negatives()
    if r < 1:
        neg = _sample_negatives(neg, r, generator)
    x = torch.where(pos, _angular_margin(b.x, m), b.x) if m > 0 else b.x
    x = s * x
    per_sample = _log1p_sum_exp(torch.where(pos, -x, -math.inf)) + _log1p_sum_exp(
        torch.where(neg, x, -math.inf)
    )
    return finish_samples(per_sample, b, reduction)


def _log1p_sum_exp(z: Tensor) -> Tensor:
    """``log(1 + sum_j exp(z_j))`` per row (``-inf`` entries are left out), as a logsumexp
    with a zero column."""
    return torch.logsumexp(torch.cat([z.new_zeros(z.shape[0], 1), z], dim=1), dim=1)


def _angular_margin(c: Tensor, m: float) -> Tensor:
    """``cos(arccos(c) + m)``, continued by ``c - m sin m`` past ``arccos(c) + m = pi`` (as in
    ArcFace). At ``|c| = 1`` the infinite slope of ``sqrt(1 - c^2)`` is taken as 0."""
    u = 1 - c * c
    inside = u > 0
    sin = torch.where(inside, torch.where(inside, u, torch.ones_like(u)).sqrt(), 0)
    phi = c * math.cos(m) - sin * math.sin(m)
    return torch.where(c > -math.cos(m), phi, c - m * math.sin(m))


def _sample_negatives(neg: Tensor, ratio: float, generator: torch.Generator | None) -> Tensor:
    """Keep ``round(ratio * |neg_i|)`` (at least one) random negatives of each row."""
    device = neg.device if generator is None else generator.device
    keys = torch.rand(neg.shape, generator=generator, device=device).to(neg.device)
    keys = keys.masked_fill(~neg, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    keep = torch.round(neg.sum(dim=1).to(torch.float64) * ratio).clamp_min(1)
    return neg & (rank < keep.to(rank.dtype)[:, None])


class ClusterDiscriminationLoss(nn.Module):
    """Module form of :func:`cluster_discrimination_loss`. ``seed`` fixes the negative
    sampling with a module-owned CPU generator (its state is not saved with the module)."""

    def __init__(
        self,
        *,
        scale: float = 64.0,
        margin: float = 0.3,
        negative_ratio: float = 1.0,
        seed: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.scale = check_number("scale", scale, low=0.0, low_open=True)
        self.margin = check_number("margin", margin, low=0.0, high=math.pi, high_open=True)
        self.negative_ratio = check_number(
            "negative_ratio", negative_ratio, low=0.0, high=1.0, low_open=True
        )
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        self.reduction = check_reduction(reduction)

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return cluster_discrimination_loss(
            scores,
            target,
            mask=mask,
            scale=self.scale,
            margin=self.margin,
            negative_ratio=self.negative_ratio,
            generator=self.generator,
            reduction=self.reduction,
        )


class ClusterDiscriminationHead(nn.Module):
    """Cosine classifier over L2-normalised class centres (the paper's prototypes ``W``).

    ``forward(features[N, D])`` returns the cosine similarities ``[N, num_classes]`` in
    ``[-1, 1]``, the ``scores`` of :func:`cluster_discrimination_loss`, which applies the
    scale and the margin (so the head returns unscaled cosines). Centres start as
    ``N(0, 0.01)`` as in Partial FC."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        if int(in_features) < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.weight = nn.Parameter(0.01 * torch.randn(int(num_classes), int(in_features)))

    def forward(self, features: Tensor) -> Tensor:
        cos = F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))
        return cos.clamp(-1.0, 1.0)


register(
    "cluster_discrimination",
    kind="loss",
    family="multilabel",
    papers=(7,),
    summary="MLCD: separate log(1+sum exp) terms for positive and (sampled) negative classes "
    "on margin-scaled cosine scores.",
    defaults={"scale": 64.0, "margin": 0.3, "negative_ratio": 0.1},
    function=cluster_discrimination_loss,
    module=ClusterDiscriminationLoss,
)
