"""Soft labels from score distributions and the fidelity ranking loss (DeQA-Score, paper 35).

Inputs:

=================  ==========  ======================================================
argument           shape       meaning
=================  ==========  ======================================================
``logits``         ``[N, K]``  the model's logits over the ``K`` score levels
``mean``, ``std``  ``[N]``     each item's human score: mean ``mu`` (inside the level
                               range) and standard deviation ``sigma >= 0``, on the
                               scale of ``levels`` (the paper maps MOS to ``[1, 5]``
                               by ``4 (mos - min) / (max - min) + 1``, std by
                               ``4 std / (max - min)``)
``levels``         ``[K]``     the strictly increasing level values, default 1..5
``pred_mean``      ``[N]``     a predicted score (e.g. :func:`predicted_score`)
=================  ==========  ======================================================

**Soft label** (:func:`score_soft_labels`). ``N(mu, sigma^2)`` is discretised onto the
levels, ``q_k ∝ pdf(l_k)`` (``density="pdf"``, the paper's choice for KonIQ and KADID) or
``q_k = cdf(right edge) - cdf(left edge)`` of the level's bin (``density="cdf"``, for SPAQ;
edges halfway between levels, so ``l ± 1/2`` for unit steps). Truncation to the level range
moves its mean away from ``mu``; the paper corrects it with an affine map ``p = a q + b`` whose
two unknowns are fixed by ``sum p = 1`` and ``sum p l = mu``. Written with ``Q = q / sum q``,
the uniform distribution ``u`` on the levels and their centre ``m``, that map is
``p = u + t (Q - u)`` with ``t = (mu - m) / (mean(Q) - m)``: it sums to 1 and has mean ``mu``
exactly. When ``sigma < thre_std`` (0.2, the released config for all three datasets) the label
is the two-level one: ``mu`` split between the adjacent levels ``l_k <= mu <= l_{k+1}`` in
proportions that give mean ``mu`` (a one-hot when ``mu`` is a level). Without that fallback
(``thre_std=0``) the correction of a very narrow Gaussian, nearly the one-hot of the nearest
level, spreads mass on every level: ``u + t (onehot - u)``.

*Where we follow the paper rather than the released code.* Far from the centre ``t > 1``
and the correction can make small entries negative. The code (``gen_soft_label.py``) clamps
them to 0, which leaves a label that neither sums to 1 nor has mean ``mu``, and falls back to
the two-level label only when the mean moved by more than ``thre_diff = 0.1``. Here negative
levels are dropped instead and the same correction is solved again on the remaining levels
(``u``, ``m`` and ``Q`` restricted to them), until none is negative; if fewer than two levels
remain, the two-level label is used. Every label therefore sums to 1, is non-negative and has
mean ``mu`` to rounding; where the code needs no clamp the two agree exactly, and where it
clamps the difference is of the clamped size. The code also adds ``1e-9`` to the denominator
of ``t``, which at ``mu = m`` with a symmetric ``Q`` gives the uniform label; here that case
keeps ``Q``.

**Soft-label loss** (:func:`score_distribution_loss`): ``KL(p || softmax(logits))`` per
item; ``reduction="mean"`` is the code's ``kl_div(..., reduction="batchmean")``. The code
applies the softmax to the language model's whole vocabulary at the level token; with
``K`` logits this is the closed-set form its scorer uses (``closeset_rating_loss``).

**Fidelity ranking loss** (:func:`score_ranking_loss`), Thurstone's model on item pairs
``(i, j)``: ``g = Phi((mu_i - mu_j) / sqrt(sigma_i^2 + sigma_j^2 + eps))`` from the human
scores, ``p = Phi((s_i - s_j) / sqrt(2))`` from the predicted scores (the code's fixed
predicted std 1, ``use_fix_std``; pass ``pred_std`` for ``sqrt(sd_i^2 + sd_j^2 + eps)``, and
``pred_std.detach()`` for the code's ``detach_pred_std``),
and ``L = 1 - sqrt(p g + eps) - sqrt((1 - p)(1 - g) + eps)`` with the code's ``eps = 1e-8``
(without it the square roots have infinite slope at 0). ``L`` is symmetric in ``i, j``;
with ``eps = 0``, ``L >= 0`` with equality exactly when ``p = g`` (Cauchy-Schwarz); the
``eps`` terms lower it by at most ``2 sqrt(eps)``. The code
weights the KL, the ranking and a next-token term 1, 1 and 0.05.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losskit._core.checks import (
    check_choice,
    check_finite,
    check_number,
    check_reduction,
    check_scores,
)
from losskit._core.precision import upcast
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register
from losskit.distillation._common import kl_rows

LEVELS = (1.0, 2.0, 3.0, 4.0, 5.0)
DENSITIES = ("pdf", "cdf")
_TINY = 1e-30  # a positive floor for a denominator, representable in float32


def _levels(levels: Sequence[float] | Tensor, device: torch.device) -> Tensor:
    lv = torch.as_tensor(levels, dtype=torch.float64, device=device).detach()
    if lv.ndim != 1 or lv.numel() < 2 or not bool(torch.isfinite(lv).all()):
        raise ValueError(f"levels must be a 1-D sequence of >= 2 finite values, got {levels!r}")
    if not bool((lv[1:] > lv[:-1]).all()):
        raise ValueError(f"levels must be strictly increasing, got {levels!r}")
    return lv


def _check_vector(x: Tensor, name: str, n: int | None) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor of shape [N]")
    if x.ndim != 1 or x.shape[0] == 0 or (n is not None and x.shape[0] != n):
        want = "[N] with N >= 1" if n is None else f"({n},)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    check_finite(name, x)


def _check_human_scores(
    mean: Tensor, std: Tensor, levels: Sequence[float] | Tensor, n: int | None
) -> Tensor:
    """Validate ``mean[N]`` (inside the level range) and ``std[N] >= 0``; the levels as
    float64 on ``mean``'s device."""
    _check_vector(mean, "mean", n)
    lv = _levels(levels, mean.device)
    _check_vector(std, "std", mean.shape[0])
    if bool((std < 0).any()):
        raise ValueError("std must be non-negative")
    if bool(((mean < lv[0]) | (mean > lv[-1])).any()):
        raise ValueError(f"mean must lie within the levels [{lv[0].item()}, {lv[-1].item()}]")
    return lv


def _discretise(mu: Tensor, sd: Tensor, lv: Tensor, density: str) -> Tensor:
    """``N(mu, sd^2)`` on the levels, normalised (rows with ``sd = 0`` are replaced later)."""
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))[:, None]
    if density == "pdf":
        return torch.softmax(-0.5 * ((lv - mu[:, None]) / sd) ** 2, dim=1)
    mid = (lv[1:] + lv[:-1]) / 2
    edges = torch.cat([lv[:1] - (lv[1] - lv[0]) / 2, mid, lv[-1:] + (lv[-1] - lv[-2]) / 2])
    cdf = torch.special.ndtr((edges - mu[:, None]) / sd)
    q = (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0)
    return q / q.sum(dim=1, keepdim=True)


def _two_level(mu: Tensor, lv: Tensor) -> Tensor:
    """The two adjacent levels around ``mu`` with weights that give mean ``mu``."""
    k = torch.searchsorted(lv, mu, right=True).clamp(1, lv.numel() - 1) - 1
    lo, hi = lv[k], lv[k + 1]
    w_hi = (mu - lo) / (hi - lo)
    out = torch.zeros(mu.shape[0], lv.numel(), dtype=lv.dtype, device=lv.device)
    out.scatter_(1, k[:, None], (1 - w_hi)[:, None])
    out.scatter_(1, (k + 1)[:, None], w_hi[:, None])
    return out


def _mean_corrected(q: Tensor, mu: Tensor, lv: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's affine correction, re-solved on the levels left after dropping negative
    entries (see the module docstring). Returns the labels and a mask of rows where it
    succeeded."""
    tol = 1e-12 * float(lv[-1] - lv[0])
    support = torch.ones_like(q, dtype=torch.bool)
    p = q
    for _ in range(lv.numel()):
        cnt = support.sum(dim=1, keepdim=True).to(q.dtype)
        u = support.to(q.dtype) / cnt
        m = (u * lv).sum(dim=1)
        qs = q * support
        mass = qs.sum(dim=1, keepdim=True)
        big_q = torch.where(mass > 0, qs / mass.clamp_min(1e-300), u)
        shift = (big_q * (lv - m[:, None])).sum(dim=1)
        target = mu - m
        flat = shift.abs() <= tol
        t = torch.where(flat, torch.ones_like(shift), target / torch.where(flat, 1.0, shift))
        p = torch.where(support, u + t[:, None] * (big_q - u), torch.zeros_like(q))
        p = torch.where(flat[:, None] & (target.abs() > tol)[:, None], torch.nan, p)
        negative = support & (p < 0)
        if not bool(negative.any()):
            break
        support = support & ~negative
    ok = torch.isfinite(p).all(dim=1) & (p >= 0).all(dim=1)
    return torch.nan_to_num(p), ok


def score_soft_labels(
    mean: Tensor,
    std: Tensor,
    levels: Sequence[float] | Tensor = LEVELS,
    *,
    density: str = "pdf",
    thre_std: float = 0.2,
) -> Tensor:
    """DeQA-Score soft labels ``[N, K]`` over ``levels``: the discretised Gaussian with its
    mean corrected to ``mean`` exactly, or the two-level label when ``std < thre_std``.
    Computed in float64 and returned in ``mean``'s dtype; never differentiated."""
    check_choice("density", density, DENSITIES)
    thr = check_number("thre_std", thre_std, low=0.0)
    lv = _check_human_scores(mean, std, levels, None)
    return _soft_labels(mean, std, lv, density, thr).to(mean.dtype)


def _soft_labels(mean: Tensor, std: Tensor, lv: Tensor, density: str, thr: float) -> Tensor:
    with torch.no_grad():
        mu, sd = mean.detach().to(torch.float64), std.detach().to(torch.float64)
        p, ok = _mean_corrected(_discretise(mu, sd, lv, density), mu, lv)
        ok = ok & (sd >= thr) & (sd > 0)
        return torch.where(ok[:, None], p, _two_level(mu, lv))


def predicted_score(
    logits: Tensor, levels: Sequence[float] | Tensor = LEVELS
) -> tuple[Tensor, Tensor]:
    """The predicted score ``sum_k l_k softmax(logits)_k`` and its standard deviation, in at
    least float32 (the code's ``get_score`` on the closed set of level logits)."""
    check_scores(logits, "logits")
    lv = _levels(levels, logits.device)
    if logits.shape[1] != lv.numel():
        raise ValueError(f"levels must have {logits.shape[1]} values, one per logit column")
    x = upcast(logits)
    p = torch.softmax(x, dim=1)
    lv = lv.to(x.dtype)
    mu = p @ lv
    var = (p * (lv - mu[:, None]) ** 2).sum(dim=1)
    return mu, var.clamp_min(0).sqrt()


def score_distribution_loss(
    logits: Tensor,
    mean: Tensor,
    std: Tensor,
    *,
    levels: Sequence[float] | Tensor = LEVELS,
    density: str = "pdf",
    thre_std: float = 0.2,
    reduction: str = "mean",
) -> Tensor:
    """``KL(score_soft_labels(mean, std) || softmax(logits))`` per item (paper 35)."""
    check_reduction(reduction)
    check_choice("density", density, DENSITIES)
    thr = check_number("thre_std", thre_std, low=0.0)
    check_scores(logits, "logits")
    lv = _check_human_scores(mean, std, levels, logits.shape[0])
    if logits.shape[1] != lv.numel():
        raise ValueError(f"levels must have {logits.shape[1]} values, one per logit column")
    x = upcast(logits)
    target = _soft_labels(mean, std, lv, density, thr)
    per_item = kl_rows(torch.log(target).to(x.dtype), torch.log_softmax(x, dim=1))
    return reduce_loss(per_item, reduction).to(logits.dtype)


def _pair_indices(pairs: Tensor | None, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    if pairs is None:
        if n < 2:
            raise ValueError("pred_mean needs at least 2 items to form pairs")
        i, j = torch.triu_indices(n, n, offset=1, device=device)
        return i, j
    if (
        not isinstance(pairs, Tensor)
        or pairs.is_floating_point()
        or pairs.ndim != 2
        or pairs.shape[1] != 2
        or pairs.shape[0] == 0
    ):
        raise ValueError("pairs must be an integer tensor of shape [P, 2] with P >= 1")
    if bool(((pairs < 0) | (pairs >= n)).any()):
        raise ValueError(f"pairs must hold item indices in [0, {n})")
    return pairs[:, 0].to(device), pairs[:, 1].to(device)


def score_ranking_loss(
    pred_mean: Tensor,
    target_mean: Tensor,
    target_std: Tensor,
    *,
    pred_std: Tensor | None = None,
    pairs: Tensor | None = None,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> Tensor:
    """Thurstone fidelity loss between predicted and human pairwise preferences (paper 35).

    ``pairs`` is an integer ``[P, 2]`` tensor of item pairs (the code pairs item ``k`` of
    batch A with item ``k`` of batch B); then ``"none"`` gives one value per pair. Without
    ``pairs`` every pair of distinct items is used and ``"none"`` gives, per item, the mean
    over its partners; as the loss is symmetric, ``"mean"`` is then the mean over all pairs.
    """
    check_reduction(reduction)
    e = check_number("eps", eps, low=0.0, high=1.0)
    _check_vector(pred_mean, "pred_mean", None)
    n = pred_mean.shape[0]
    _check_vector(target_mean, "target_mean", n)
    _check_vector(target_std, "target_std", n)
    if bool((target_std < 0).any()):
        raise ValueError("target_std must be non-negative")
    if pred_std is not None:
        _check_vector(pred_std, "pred_std", n)
        if bool((pred_std < 0).any()):
            raise ValueError("pred_std must be non-negative")
    i, j = _pair_indices(pairs, n, pred_mean.device)
    s = upcast(pred_mean)
    mu, sd = (t.detach().to(s.dtype) for t in (target_mean, target_std))
    diff, den = mu[i] - mu[j], torch.sqrt(sd[i] ** 2 + sd[j] ** 2 + e)
    # with eps = 0 two exact human scores give a step (0.5 at a tie) instead of 0/0
    step = 0.5 * (1 + torch.sign(diff))
    g = torch.where(den > 0, torch.special.ndtr(diff / den.clamp_min(_TINY)), step)
    if pred_std is None:
        scale = s.new_tensor(2.0).sqrt()
    else:
        ps = upcast(pred_std).to(s.dtype)
        scale = torch.sqrt(ps[i] ** 2 + ps[j] ** 2 + e)
    p = torch.special.ndtr((s[i] - s[j]) / scale)
    per_pair = 1 - torch.sqrt(p * g + e) - torch.sqrt((1 - p) * (1 - g) + e)
    if pairs is None:
        per_item = torch.zeros(n, dtype=s.dtype, device=s.device)
        per_item = per_item.index_add(0, i, per_pair).index_add(0, j, per_pair) / (n - 1)
        return reduce_loss(per_item, reduction).to(pred_mean.dtype)
    return reduce_loss(per_pair, reduction).to(pred_mean.dtype)


class ScoreDistributionLoss(nn.Module):
    """Module form of :func:`score_distribution_loss`; ``levels`` is a buffer.
    ``forward(logits, mean, std)``."""

    def __init__(
        self,
        *,
        levels: Sequence[float] | Tensor = LEVELS,
        density: str = "pdf",
        thre_std: float = 0.2,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_choice("density", density, DENSITIES)
        self.register_buffer("levels", _levels(levels, None))
        self.density = density
        self.thre_std = check_number("thre_std", thre_std, low=0.0)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        return score_distribution_loss(
            logits, mean, std, levels=self.levels, density=self.density,
            thre_std=self.thre_std, reduction=self.reduction,
        )  # fmt: skip


class ScoreRankingLoss(nn.Module):
    """Module form of :func:`score_ranking_loss`;
    ``forward(pred_mean, target_mean, target_std, pred_std=None, pairs=None)``."""

    def __init__(self, *, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__()
        self.eps = check_number("eps", eps, low=0.0, high=1.0)
        self.reduction = check_reduction(reduction)

    def forward(
        self,
        pred_mean: Tensor,
        target_mean: Tensor,
        target_std: Tensor,
        pred_std: Tensor | None = None,
        pairs: Tensor | None = None,
    ) -> Tensor:
        return score_ranking_loss(
            pred_mean, target_mean, target_std, pred_std=pred_std, pairs=pairs, eps=self.eps,
            reduction=self.reduction,
        )  # fmt: skip


register(
    "score_distribution",
    kind="loss",
    family="distillation",
    papers=(35,),
    summary="DeQA-Score: KL to a soft label over score levels built from the human score's "
    "mean and std (discretised Gaussian, mean corrected to be exact).",
    defaults={"levels": LEVELS, "density": "pdf", "thre_std": 0.2},
    function=score_distribution_loss,
    module=ScoreDistributionLoss,
)

register(
    "score_ranking",
    kind="loss",
    family="distillation",
    papers=(35,),
    summary="DeQA-Score fidelity loss: Thurstone pairwise preference of predicted scores "
    "against the human scores' mean and std.",
    defaults={"eps": 1e-8},
    function=score_ranking_loss,
    module=ScoreRankingLoss,
)
