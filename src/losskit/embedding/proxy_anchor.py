"""Proxy-Anchor loss (Kim et al., CVPR 2020; a baseline, no paper number in the catalog).

Each class ``c`` has a learnable proxy ``p_c`` (``proxies[C, D]``). With cosine similarities
``s_ic = cos(z_i, p_c)`` between the batch and the proxies, ``X_c+`` the examples of class
``c``, ``X_c-`` the others, and ``P+`` the proxies with at least one example in the batch:

``L = 1/|P+| sum_{c in P+} log(1 + sum_{i in X_c+} e^{-alpha (s_ic - margin)})
    + 1/C    sum_{c}       log(1 + sum_{i in X_c-} e^{ alpha (s_ic + margin)})``

computed as ``logsumexp`` with an appended zero. Defaults ``alpha=32``, ``margin=0.1`` (the
paper's, and pytorch-metric-learning's ``ProxyAnchorLoss``, whose ``DivisorReducer`` uses the
same two denominators).

Here the anchors are the proxies, so ``reduction="none"`` gives one value per **proxy**
(``[C]``): ``l_c = pos_c + neg_c``; ``"sum"`` is ``sum_c l_c``; ``"mean"`` is the paper's
``L`` above, with the positive terms averaged over ``P+`` and the negative terms over all
``C`` proxies (so it is not the plain mean of ``"none"``). A proxy without an example in the
batch still pushes its negatives away. ``candidate_mask[N, C]`` (bool) removes
example-proxy pairs. Computed in at least float32; the result has the dtype of
``embeddings``. Metrix (paper 11) generalises it to interpolated targets:
``losskit.embedding.metrix.mixed_proxy_anchor_loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losskit._core.checks import check_number, check_reduction, checks_enabled
from losskit._core.registry import register
from losskit.embedding._common import check_embeddings, prepare_labels


def log1p_sum_exp(z: Tensor, weight: Tensor, dim: int) -> Tensor:
    """``log(1 + sum_k weight_k e^{z_k})`` along ``dim`` for ``weight >= 0``, as a logsumexp
    over ``[0, z + log weight]``; zero weights (and their ``z``) get exactly zero gradient."""
    logits = z + torch.log(weight.to(z.dtype))
    shape = list(logits.shape)
    shape[dim] = 1
    zero = logits.new_zeros(shape)
    return torch.logsumexp(torch.cat([zero, logits], dim=dim), dim=dim)


def proxy_anchor_terms(
    sim: Tensor, target: Tensor, valid: Tensor | None, alpha: float, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-proxy positive and negative terms from ``sim[C, M]`` and targets ``target[C, M]``
    in ``[0, 1]`` (1: the example is of the proxy's class), and which proxies have a
    positive. ``valid[C, M]`` (bool or ``None``) removes pairs."""
    target = target.to(sim.dtype)
    if valid is not None:
        target = target * valid
        neg_weight = (1.0 - target) * valid
    else:
        neg_weight = 1.0 - target
    pos = log1p_sum_exp(-alpha * (sim - margin), target, dim=1)
    neg = log1p_sum_exp(alpha * (sim + margin), neg_weight, dim=1)
    return pos, neg, (target > 0).any(dim=1)


def reduce_proxy_terms(pos: Tensor, neg: Tensor, has_pos: Tensor, reduction: str) -> Tensor:
    """``"none"``: ``pos + neg`` per proxy; ``"sum"``: their sum; ``"mean"``: positive terms
    over the proxies with a positive, negative terms over all proxies."""
    if reduction == "none":
        return pos + neg
    if reduction == "sum":
        return (pos + neg).sum()
    return pos.sum() / has_pos.sum().clamp_min(1).to(pos.dtype) + neg.mean()


def _check(alpha: float, margin: float) -> tuple[float, float]:
    return (
        check_number("alpha", alpha, low=0.0, low_open=True),
        check_number("margin", margin),
    )


def check_proxies(proxies: Tensor, embeddings: Tensor, name: str = "embeddings") -> None:
    """``proxies[C, D]`` floating, finite, with the feature size of ``embeddings``."""
    check_embeddings(proxies, "proxies")
    shaped = isinstance(embeddings, Tensor) and embeddings.ndim == 2
    if shaped and embeddings.shape[1] != proxies.shape[1]:
        raise ValueError(
            f"proxies must have {embeddings.shape[1]} features like {name}, "
            f"got shape {tuple(proxies.shape)}"
        )


def proxy_anchor_loss(
    embeddings: Tensor,
    labels: Tensor,
    proxies: Tensor,
    *,
    alpha: float = 32.0,
    margin: float = 0.1,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Proxy-Anchor loss of ``embeddings[N, D]`` with class ids ``labels[N]`` in ``[0, C)``
    against ``proxies[C, D]``; ``"none"`` gives one value per proxy. ``candidate_mask[N, C]``
    (bool) removes example-proxy pairs."""
    a, m = _check(alpha, margin)
    check_reduction(reduction)
    check_proxies(proxies, embeddings)
    c = proxies.shape[0]
    classes = torch.arange(c, device=proxies.device)
    b = prepare_labels(
        embeddings,
        labels,
        proxies,
        classes,
        normalize=True,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    if checks_enabled() and (bool((labels < 0).any()) or bool((labels >= c).any())):
        raise ValueError(f"labels must be class ids in [0, {c}) (one per proxy)")
    valid = None if b.valid is None else b.valid.T
    pos, neg, has_pos = proxy_anchor_terms(b.sim.T, b.pos.T, valid, a, m)
    return reduce_proxy_terms(pos, neg, has_pos, reduction).to(b.dtype)


class ProxyAnchorLoss(nn.Module):
    """Module form of :func:`proxy_anchor_loss`, holding ``proxies[num_classes, in_features]``
    (a parameter, Kaiming-normal initialised with ``mode="fan_out"`` as in the reference
    code)."""

    def __init__(
        self,
        num_classes: int,
        in_features: int,
        *,
        alpha: float = 32.0,
        margin: float = 0.1,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("in_features", in_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.alpha, self.margin = _check(alpha, margin)
        self.reduction = check_reduction(reduction)
        self.proxies = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(
        self, embeddings: Tensor, labels: Tensor, candidate_mask: Tensor | None = None
    ) -> Tensor:
        return proxy_anchor_loss(
            embeddings,
            labels,
            self.proxies,
            alpha=self.alpha,
            margin=self.margin,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )

    def extra_repr(self) -> str:
        c, d = self.proxies.shape
        return (
            f"num_classes={c}, in_features={d}, alpha={self.alpha}, margin={self.margin}, "
            f"reduction={self.reduction!r}"
        )


register(
    "proxy_anchor",
    kind="loss",
    family="embedding",
    summary="Proxy-Anchor loss: each class proxy pulls its examples and pushes the others.",
    defaults={"alpha": 32.0, "margin": 0.1},
    function=proxy_anchor_loss,
    module=ProxyAnchorLoss,
)
