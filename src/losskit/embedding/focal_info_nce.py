"""Focal-style InfoNCE and online hard-negative mixing (paper 9, KaLM-Embedding-V2).

With ``p_i = exp(s_ip/T) / sum_j exp(s_ij/T)`` the softmax probability of query ``i``'s
positive key over all keys, the per-query loss is the focal reweighting of InfoNCE
``l_i = -(1 - p_i)^gamma * log p_i`` (the form in the paper map; the weight is not detached,
as in focal loss). ``gamma = 0`` is exactly :func:`info_nce_loss`; the weight lies in
``(0, 1]`` and decreases in ``p_i``, so easy queries are down-weighted. The map marks the
form as inferred and ``gamma`` as unverified: ``gamma=2.0`` is the focal-loss default,
``temperature=0.01`` the reference repository's ``train.sh``. One positive per query
(``positives[N]``, default ``arange(N)``); ``"mean"`` averages over the N queries.

:func:`mix_hard_negatives` makes MoCHi-like synthetic negatives ``normalize(l*h_a +
(1-l)*h_b)`` from two of the ``num_hardest`` most similar negatives of each query (the map
marks these details as unverified).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_temperature,
    prepare_pairs,
)


def check_gamma(gamma: float) -> float:
    return check_number("gamma", gamma, low=0.0)


def focal_info_nce_loss(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None = None,
    *,
    temperature: float = 0.01,
    gamma: float = 2.0,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Focal InfoNCE of ``query[N, D]`` against ``keys[M, D]``; ``positives[N]`` indexes
    each query's positive key (default ``arange(N)``)."""
    t = check_temperature(temperature)
    g = check_gamma(gamma)
    b = prepare_pairs(query, keys, positives, None, normalize=normalize, reduction=reduction)
    log_prob = torch.log_softmax(b.sim / t, dim=1)
    log_p = torch.where(b.pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_query = -log_p
    if g != 0.0:
        # 1 - p = -expm1(log p), accurate for p near 1; the floor keeps pow's gradient finite
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        per_query = one_minus_p.pow(g) * per_query
    if reduction == "none":
        out = per_query
    elif reduction == "sum":
        out = per_query.sum()
    else:
        out = per_query.mean()
    return out.to(b.dtype)


class FocalInfoNCELoss(EmbeddingLossModule):
    """Module form of :func:`focal_info_nce_loss`."""

    def __init__(
        self,
        temperature: float = 0.01,
        gamma: float = 2.0,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(temperature, normalize, reduction)
        self.gamma = check_gamma(gamma)

    def forward(self, query: Tensor, keys: Tensor, positives: Tensor | None = None) -> Tensor:
        return focal_info_nce_loss(
            query,
            keys,
            positives,
            temperature=self.temperature,
            gamma=self.gamma,
            normalize=self.normalize,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


@torch.no_grad()
def mix_hard_negatives(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None = None,
    *,
    num_mixed: int,
    num_hardest: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Synthetic negatives ``[N, num_mixed, D]`` (unit norm, no gradient, dtype of ``keys``).

    For query ``i``, its ``num_hardest`` negatives of highest cosine similarity form the
    pool; each synthetic key is ``normalize(l*h_a + (1-l)*h_b)`` with ``a != b`` drawn from
    the pool and ``l ~ U(0, 1)``, all from ``generator`` (CPU). When both similarities are
    non-negative the mix is at least as similar to the query as the less similar of the
    two, so it stays hard. To use them as shared negatives, append
    ``mixed.flatten(0, 1)`` to ``keys``."""
    b = prepare_pairs(query, keys, positives, None, normalize=True, reduction="mean")
    n, m = b.sim.shape
    if isinstance(num_mixed, bool) or not isinstance(num_mixed, int) or num_mixed < 1:
        raise ValueError(f"num_mixed must be a positive int, got {num_mixed!r}")
    if isinstance(num_hardest, bool) or not isinstance(num_hardest, int) or num_hardest < 2:
        raise ValueError(f"num_hardest must be an int >= 2, got {num_hardest!r}")
    if num_hardest > m - 1:
        raise ValueError(
            f"num_hardest must be at most the M-1={m - 1} negatives, got {num_hardest}"
        )
    sim = b.sim.masked_fill(b.pos, float("-inf"))
    hard = sim.topk(num_hardest, dim=1).indices  # [N, H]
    pick_a = torch.randint(num_hardest, (n, num_mixed), generator=generator)
    shift = torch.randint(1, num_hardest, (n, num_mixed), generator=generator)
    pick_b = (pick_a + shift) % num_hardest  # a != b
    lam = torch.rand(n, num_mixed, 1, generator=generator, dtype=b.sim.dtype)
    dev = keys.device
    ka = F.normalize(keys.to(b.sim.dtype), dim=1)
    ha = ka[hard.gather(1, pick_a.to(dev))]
    hb = ka[hard.gather(1, pick_b.to(dev))]
    lam = lam.to(dev)
    mixed = F.normalize(lam * ha + (1 - lam) * hb, dim=2)
    return mixed.to(keys.dtype)


register(
    "focal_info_nce",
    kind="loss",
    family="embedding",
    papers=(9,),
    summary="Focal InfoNCE (KaLM-Embedding-V2): -(1 - p_pos)^gamma * log p_pos per query.",
    defaults={"temperature": 0.01, "gamma": 2.0, "normalize": True},
    function=focal_info_nce_loss,
    module=FocalInfoNCELoss,
)
