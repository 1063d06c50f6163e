"""Metrix, mixup for deep metric learning (Venkataramanan et al., ICLR 2022; paper 11).

Mixing of inputs, intermediate features or embeddings with interpolated pair targets is
:func:`~losskit.embedding.metrix_mix.metrix_mix`; the mixed-target contrastive,
multi-similarity and Proxy-Anchor losses are in ``losskit.embedding.mixed_targets``.

**Objective** (:func:`metrix_loss`): ``L_clean + weight * L_mixed``, ``weight = 0.4`` (the
code uses 0.3 for embedding anchor-negative mixing), each term reduced on its own
(``weight = 0`` is the clean loss). Clean terms: the contrastive loss with hard targets over
the batch (self excluded), :func:`multi_similarity_loss` (with its mining),
:func:`proxy_anchor_loss`. The reference code averages pair losses over the non-zero ones
(pytorch-metric-learning reducers) and, for multi-similarity, adds the mixed terms inside
the clean logarithm; here are the paper's per-anchor sums. The paper's utilization measure
is :func:`losskit.diagnostics.utilization`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number, check_reduction
from losskit._core.precision import compute_dtype
from losskit._core.registry import register
from losskit.embedding._common import check_candidate_mask, check_embeddings, check_labels
from losskit.embedding.metrix_mix import PAIRINGS, metrix_mix, positive_int
from losskit.embedding.mixed_targets import (
    LOSS_OPTIONS,
    check_contrastive,
    check_ms,
    mixed_contrastive_loss,
    mixed_multi_similarity_loss,
    mixed_proxy_anchor_loss,
)
from losskit.embedding.multi_similarity import multi_similarity_loss
from losskit.embedding.proxy_anchor import proxy_anchor_loss


def _loss_options(loss: str, options: dict[str, float]) -> dict[str, float]:
    """The validated hyperparameters of ``loss``, defaults filled in."""
    check_choice("loss", loss, tuple(LOSS_OPTIONS))
    bad = set(options) - set(LOSS_OPTIONS[loss])
    if bad:
        raise ValueError(
            f"{sorted(bad)} not options of loss={loss!r}; use {tuple(LOSS_OPTIONS[loss])}"
        )
    o = {**LOSS_OPTIONS[loss], **options}
    if loss == "contrastive":
        return check_contrastive(o["pos_margin"], o["neg_margin"])
    if loss == "multi_similarity":
        eps = check_number("epsilon", o["epsilon"], low=0.0)
        return {**check_ms(o["alpha"], o["beta"], o["base"]), "epsilon": eps}
    return {
        "alpha": check_number("alpha", o["alpha"], low=0.0, low_open=True),
        "margin": check_number("margin", o["margin"]),
    }


def metrix_loss(
    embeddings: Tensor,
    labels: Tensor,
    mixed_embeddings: Tensor,
    mixed_targets: Tensor,
    *,
    loss: str = "contrastive",
    weight: float = 0.4,
    proxies: Tensor | None = None,
    mixed_mask: Tensor | None = None,
    candidate_mask: Tensor | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    **options: float,
) -> Tensor:
    """``clean(embeddings, labels) + weight * mixed(mixed_embeddings, mixed_targets)``,
    ``loss`` one of ``"contrastive"``, ``"multi_similarity"``, ``"proxy_anchor"`` (with
    ``proxies``; ``mixed_targets`` is then ``[C, M]``). ``mixed_mask``/``candidate_mask``
    restrict the mixed/clean candidates; ``options`` are the loss's hyperparameters."""
    opts = _loss_options(loss, options)
    w = check_number("weight", weight, low=0.0)
    check_reduction(reduction)
    common = {"reduction": reduction}
    if loss == "proxy_anchor":
        if proxies is None:
            raise ValueError("proxies must be given for loss='proxy_anchor'")
        clean = proxy_anchor_loss(
            embeddings, labels, proxies, candidate_mask=candidate_mask, **opts, **common
        )
        mix = mixed_proxy_anchor_loss(
            mixed_embeddings, mixed_targets, proxies, candidate_mask=mixed_mask, **opts, **common
        )
        return clean + w * mix
    common["normalize"] = normalize
    if loss == "multi_similarity":
        clean = multi_similarity_loss(
            embeddings, labels, candidate_mask=candidate_mask, **opts, **common
        )
        mixed_fn = mixed_multi_similarity_loss
        opts = {k: v for k, v in opts.items() if k != "epsilon"}
    else:
        check_embeddings(embeddings, "embeddings")
        n = embeddings.shape[0]
        check_labels(labels, n, "labels")
        valid = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
        if check_candidate_mask(candidate_mask, n, n) is not None:
            valid &= candidate_mask
        hard = (labels[:, None] == labels[None, :]).to(compute_dtype(embeddings.dtype))
        clean = mixed_contrastive_loss(
            embeddings, embeddings, hard, candidate_mask=valid, **opts, **common
        )
        mixed_fn = mixed_contrastive_loss
    mix = mixed_fn(
        embeddings, mixed_embeddings, mixed_targets, candidate_mask=mixed_mask, **opts, **common
    )
    return clean + w * mix


class MetrixLoss(nn.Module):
    """Module form of :func:`metrix_loss`. Without ``mixed_embeddings`` it mixes the
    embeddings itself (Metrix/embed): :func:`metrix_mix` with ``pairing`` (``"random"``: one
    of the two drawn per call, as the reference code does) and ``lam ~ Beta(mix_alpha,
    mix_alpha)``, each anchor against its own mixed set (every proxy against every mixed
    example for Proxy-Anchor, which needs ``num_classes``/``in_features`` and holds
    ``proxies``; there each distinct pair is mixed once). Mixing every positive-negative
    pair costs ``sum_a |P(a)| |N(a)|`` mixed rows and an ``[N, M]`` similarity matrix:
    ``top_k`` bounds it."""

    def __init__(
        self,
        loss: str = "contrastive",
        weight: float = 0.4,
        *,
        pairing: str = "random",
        mix_alpha: float = 2.0,
        top_k: int | None = None,
        num_classes: int | None = None,
        in_features: int | None = None,
        normalize: bool = True,
        reduction: str = "mean",
        **options: float,
    ) -> None:
        super().__init__()
        self.loss, self.options = loss, _loss_options(loss, options)
        self.weight = check_number("weight", weight, low=0.0)
        check_choice("pairing", pairing, (*PAIRINGS, "random"))
        self.pairing = pairing
        self.top_k = None if top_k is None else positive_int("top_k", top_k)
        self.mix_alpha = check_number("mix_alpha", mix_alpha, low=0.0, low_open=True)
        self.normalize, self.reduction = bool(normalize), check_reduction(reduction)
        self.proxies = None
        if loss == "proxy_anchor":
            c = positive_int("num_classes", num_classes)
            self.proxies = nn.Parameter(torch.empty(c, positive_int("in_features", in_features)))
            nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        mixed_embeddings: Tensor | None = None,
        mixed_targets: Tensor | None = None,
        mixed_mask: Tensor | None = None,
    ) -> Tensor:
        if mixed_embeddings is None:
            pairing = self.pairing
            if pairing == "random":
                pairing = PAIRINGS[int(torch.randint(2, ()))]
            b = metrix_mix(
                embeddings,
                labels,
                pairing=pairing,
                alpha=self.mix_alpha,
                embeddings=None if self.top_k is None else embeddings.detach(),
                top_k=self.top_k,
            )
            mixed_embeddings = b.mixed
            if self.proxies is None:
                mixed_targets, mixed_mask = b.targets(labels), b.anchor_mask(len(labels))
            else:
                b, classes = b.unique(), torch.arange(len(self.proxies), device=labels.device)
                mixed_embeddings, mixed_targets = b.mixed, b.targets(labels, classes)
        elif mixed_targets is None:
            raise ValueError("mixed_targets must be given with mixed_embeddings")
        return metrix_loss(
            embeddings,
            labels,
            mixed_embeddings,
            mixed_targets,
            loss=self.loss,
            weight=self.weight,
            proxies=self.proxies,
            mixed_mask=mixed_mask,
            normalize=self.normalize,
            reduction=self.reduction,
            **self.options,
        )

    def extra_repr(self) -> str:
        return (
            f"loss={self.loss!r}, weight={self.weight}, pairing={self.pairing!r}, "
            f"mix_alpha={self.mix_alpha}, top_k={self.top_k}, options={self.options}"
        )


register(
    "metrix",
    kind="loss",
    family="embedding",
    papers=(11,),
    summary="Metrix: clean metric loss + 0.4 x its mixed-target form over Beta(2,2) mixed pairs.",
    defaults={"loss": "contrastive", "weight": 0.4, "pairing": "random", "mix_alpha": 2.0},
    function=metrix_loss,
    module=MetrixLoss,
)
