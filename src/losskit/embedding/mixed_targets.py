"""Mixed-target metric losses of Metrix (Venkataramanan et al., ICLR 2022; paper 11).

A loss ``tau(sum_x y rho+(s_ax), sum_x (1 - y) rho-(s_ax))`` becomes, over mixed examples
``k`` (``losskit.embedding.metrix_mix``) with targets ``t_k``,
``tau(sum_k t_k rho+(s_ak), sum_k (1 - t_k) rho-(s_ak))``:

- contrastive, in the distance form of the paper's experiments (``d`` Euclidean between
  L2-normalised embeddings; the paper's similarity form with ``s = -d``):
  ``l_a = sum_k t_k [d_ak - pos_margin]_+ + (1 - t_k) [neg_margin - d_ak]_+`` (0 and 0.5);
- multi-similarity (no pair mining): ``l_a = 1/alpha log(1 + sum_k t_k e^{-alpha (s_ak -
  base)}) + 1/beta log(1 + sum_k (1 - t_k) e^{beta (s_ak - base)})`` (2, 50, 0.5);
- Proxy-Anchor: the anchors are the class proxies, ``t_ck`` the target for class ``c``.

Targets in ``{0, 1}`` give the plain losses, so ``lam = 1`` (``0``) is the plain loss on
the un-mixed first (second) examples. Inputs: anchors ``embeddings[N, D]`` (or
``proxies[C, D]``), ``mixed[M, D]`` (``M = 0`` allowed), ``mixed_targets[N, M]`` in
``[0, 1]`` (no gradient), ``candidate_mask[N, M]`` restricting each anchor to its own mixed
set (:meth:`MetrixBatch.anchor_mask`). ``"none"``: one value per anchor; ``"mean"``: over
the anchors with at least one mixed candidate (0, zero gradient, when none has; the
contrastive form thus counts anchors that have negatives only); Proxy-Anchor reduces per
proxy as ``losskit.embedding.proxy_anchor`` does. The losses are the paper's per-anchor
sums; the reference code averages pair losses over the non-zero ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.precision import compute_dtype, upcast_all
from losskit._core.registry import register
from losskit.embedding._common import (
    check_candidate_mask,
    check_embeddings,
    reduce_anchors,
    similarities,
)
from losskit.embedding.proxy_anchor import (
    ProxyAnchorLoss,
    check_proxies,
    log1p_sum_exp,
    proxy_anchor_terms,
    reduce_proxy_terms,
)

LOSS_OPTIONS = {
    "contrastive": {"pos_margin": 0.0, "neg_margin": 0.5},
    "multi_similarity": {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
    "proxy_anchor": {"alpha": 32.0, "margin": 0.1},
}


def _mixed_inputs(
    anchors: Tensor, mixed: Tensor, targets: Tensor, mask: Tensor | None, name: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate; return positive and negative pair weights and the anchors with a candidate."""
    check_embeddings(anchors, name)
    a, d = anchors.shape
    if not isinstance(mixed, Tensor) or not mixed.is_floating_point() or mixed.ndim != 2:
        raise ValueError("mixed must be a floating tensor of shape [M, D]")
    if mixed.shape[1] != d:
        raise ValueError(f"mixed must have {d} features like {name}, got {tuple(mixed.shape)}")
    check_finite("mixed", mixed)
    m = mixed.shape[0]
    if not isinstance(targets, Tensor) or not targets.is_floating_point():
        raise ValueError("mixed_targets must be a floating tensor of targets in [0, 1]")
    if tuple(targets.shape) != (a, m):
        raise ValueError(f"mixed_targets must have shape {(a, m)}, got {tuple(targets.shape)}")
    if checks_enabled() and not bool(((targets >= 0) & (targets <= 1)).all()):
        raise ValueError("mixed_targets must lie in [0, 1] (and be finite)")
    valid = check_candidate_mask(mask, a, m)
    t = targets.detach().to(compute_dtype(torch.promote_types(anchors.dtype, mixed.dtype)))
    if valid is None:
        return t, 1.0 - t, torch.full((a,), m > 0, device=t.device)
    return t * valid, (1.0 - t) * valid, valid.any(dim=1)


def check_contrastive(pos_margin: float, neg_margin: float) -> dict[str, float]:
    return {
        "pos_margin": check_number("pos_margin", pos_margin, low=0.0),
        "neg_margin": check_number("neg_margin", neg_margin, low=0.0),
    }


def check_ms(alpha: float, beta: float, base: float) -> dict[str, float]:
    return {
        "alpha": check_number("alpha", alpha, low=0.0, low_open=True),
        "beta": check_number("beta", beta, low=0.0, low_open=True),
        "base": check_number("base", base),
    }


def mixed_contrastive_loss(
    embeddings: Tensor,
    mixed: Tensor,
    mixed_targets: Tensor,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 0.5,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Mixed-target contrastive loss of anchors ``embeddings[N, D]`` against ``mixed[M, D]``
    with ``mixed_targets[N, M]`` (Euclidean distances of unit vectors if ``normalize``)."""
    hp = check_contrastive(pos_margin, neg_margin)
    check_reduction(reduction)
    wp, wn, has = _mixed_inputs(embeddings, mixed, mixed_targets, candidate_mask, "embeddings")
    a, b = upcast_all(embeddings, mixed)
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sq = (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0)
    tiny = torch.finfo(sq.dtype).tiny  # sqrt has an infinite slope at 0: keep d = 0 flat
    d = torch.where(sq > tiny, sq.clamp_min(tiny).sqrt(), torch.zeros_like(sq))
    per_anchor = wp * F.relu(d - hp["pos_margin"]) + wn * F.relu(hp["neg_margin"] - d)
    return reduce_anchors(per_anchor.sum(dim=1), has, reduction).to(embeddings.dtype)


def mixed_multi_similarity_loss(
    embeddings: Tensor,
    mixed: Tensor,
    mixed_targets: Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Mixed-target multi-similarity loss (no mining) of anchors ``embeddings[N, D]``
    against ``mixed[M, D]`` with ``mixed_targets[N, M]``."""
    hp = check_ms(alpha, beta, base)
    al, be, ba = hp["alpha"], hp["beta"], hp["base"]
    check_reduction(reduction)
    wp, wn, has = _mixed_inputs(embeddings, mixed, mixed_targets, candidate_mask, "embeddings")
    s = similarities(embeddings, mixed, normalize)
    pos = log1p_sum_exp(-al * (s - ba), wp, dim=1) / al
    neg = log1p_sum_exp(be * (s - ba), wn, dim=1) / be
    return reduce_anchors(pos + neg, has, reduction).to(embeddings.dtype)


def mixed_proxy_anchor_loss(
    mixed: Tensor,
    mixed_targets: Tensor,
    proxies: Tensor,
    *,
    alpha: float = 32.0,
    margin: float = 0.1,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Mixed-target Proxy-Anchor loss of ``mixed[M, D]`` against ``proxies[C, D]`` with
    ``mixed_targets[C, M]`` (:meth:`MetrixBatch.targets` with ``arange(C)``)."""
    a = check_number("alpha", alpha, low=0.0, low_open=True)
    m = check_number("margin", margin)
    check_reduction(reduction)
    check_proxies(proxies, mixed, "mixed")
    wp, _, _ = _mixed_inputs(proxies, mixed, mixed_targets, candidate_mask, "proxies")
    valid = check_candidate_mask(candidate_mask, *wp.shape)
    pos, neg, has_pos = proxy_anchor_terms(similarities(proxies, mixed, True), wp, valid, a, m)
    return reduce_proxy_terms(pos, neg, has_pos, reduction).to(mixed.dtype)


class _MixedLoss(nn.Module):
    """Shared module form of the pair-wise mixed losses (hyperparameters in ``hparams``)."""

    function = staticmethod(mixed_contrastive_loss)

    def __init__(self, hparams: dict[str, float], normalize: bool, reduction: str) -> None:
        super().__init__()
        self.hparams, self.normalize = hparams, bool(normalize)
        self.reduction = check_reduction(reduction)

    def forward(
        self,
        embeddings: Tensor,
        mixed: Tensor,
        mixed_targets: Tensor,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return type(self).function(
            embeddings,
            mixed,
            mixed_targets,
            normalize=self.normalize,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
            **self.hparams,
        )

    def extra_repr(self) -> str:
        return f"{self.hparams}, normalize={self.normalize}, reduction={self.reduction!r}"


class MixedContrastiveLoss(_MixedLoss):
    """Module form of :func:`mixed_contrastive_loss`."""

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 0.5,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(check_contrastive(pos_margin, neg_margin), normalize, reduction)


class MixedMultiSimilarityLoss(_MixedLoss):
    """Module form of :func:`mixed_multi_similarity_loss`."""

    function = staticmethod(mixed_multi_similarity_loss)

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(check_ms(alpha, beta, base), normalize, reduction)


class MixedProxyAnchorLoss(ProxyAnchorLoss):
    """Module form of :func:`mixed_proxy_anchor_loss` with its own ``proxies``
    (``MetrixLoss(loss="proxy_anchor")`` shares them with the clean loss)."""

    def forward(  # type: ignore[override]
        self, mixed: Tensor, mixed_targets: Tensor, candidate_mask: Tensor | None = None
    ) -> Tensor:
        return mixed_proxy_anchor_loss(
            mixed,
            mixed_targets,
            self.proxies,
            alpha=self.alpha,
            margin=self.margin,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )


def _register(name: str, summary: str, defaults: dict, function, module) -> None:
    register(
        name,
        kind="loss",
        family="embedding",
        papers=(11,),
        summary=summary,
        defaults=defaults,
        function=function,
        module=module,
    )


_register(
    "metrix_contrastive",
    "Contrastive loss on mixed examples with interpolated pair targets (Metrix).",
    LOSS_OPTIONS["contrastive"],
    mixed_contrastive_loss,
    MixedContrastiveLoss,
)
_register(
    "metrix_multi_similarity",
    "Multi-similarity loss on mixed examples with interpolated pair targets (Metrix).",
    {"alpha": 2.0, "beta": 50.0, "base": 0.5},
    mixed_multi_similarity_loss,
    MixedMultiSimilarityLoss,
)
_register(
    "metrix_proxy_anchor",
    "Proxy-Anchor loss on mixed examples with interpolated class targets (Metrix).",
    LOSS_OPTIONS["proxy_anchor"],
    mixed_proxy_anchor_loss,
    MixedProxyAnchorLoss,
)
