"""Adaptive multi-head contrastive learning, AMCL (Wang, Koniusz, Gedeon, Zheng, ECCV 2024;
paper 49).

``H`` projection heads give ``H`` embeddings of each sample, ``z^h[N, D]``; head ``h`` scores
anchor ``i`` against candidate ``a`` with its similarity ``s^h_ia`` (cosine) and a pair- and
head-specific temperature ``tau^h_ia``. Modelling a positive as a Gaussian around the anchor
with variance ``tau`` (``exp(-|z_i - z_a|^2 / 2 tau) / tau^(d/2)``, and ``|z_i - z_a|^2 =
2 - 2 s`` for unit vectors) gives the candidate ``a`` the log-score
``s_ia/tau_ia - Omega(tau_ia)`` with the regulariser ``Omega(tau) = (d/2) log tau + 1/tau``
(``d`` the feature dimension; minimised at ``tau = 2/d``). The posterior of the positive,
taken over the heads, gives, with ``g^h_ia = s^h_ia/tau^h_ia - beta Omega(tau^h_ia)``,

``l_i = sum_h -1/|P(i)| sum_{p in P(i)} log softmax_{a in A(i)}(g^h_ia)_p``

with ``beta`` weighting the regulariser. Candidates, positives and the per-anchor reduction
are those of :func:`~losskit.embedding.supcon_loss`; with one head and one constant
temperature the ``Omega`` term is a constant shift and ``l_i`` is exactly SupCon (NT-Xent on
``cat(z1, z2)`` with labels ``cat(arange(N), arange(N))``; InfoNCE with ``ref_embeddings``).
``topk=k`` is the practical approximation of the log-sum-exp by the mean of the ``k`` hardest
negatives (by similarity): ``l_i = sum_h [-mean_p g^h_ip + mean_{k hardest n} g^h_in]`` with
``g = s/tau - beta Omega(tau)``; with ``k = 1`` it is the Gaussian likelihood ratio of the
positive against the hardest negative, ``-s+/tau+ + s-/tau- + beta (Omega(tau+) - Omega(tau-))``.

The temperatures (``temperatures[H, N, M]``) are inputs of :func:`amcl_loss`; :class:`AMCLLoss`
learns them with :class:`PairTemperature`, the paper's bounded map
``tau = eta + iota / (1 + exp(r_ia))`` of the pair score ``r_ia = <phi(z_i), phi(z_a)>`` of a
small MLP ``phi`` shared by the heads, ``eta = 1e-5``, ``eta + iota = 2``. The heads themselves
belong to the model; :class:`MultiHeadProjection` is the paper's (3 heads, 512 -> 512 -> 128).

This form is a reconstruction from the abstract's MLE description and the authors' repository
(``LeiWangR/cl``), not checked against the paper's equations. The first release computes
a positive-pair-only softplus with per-head MLPs on ``[z_i; z_j]`` and does not run as
published; its later ``amcl/losses.py`` uses the top-k form with ``sum_k (log tau + 1/tau)``
(no ``d/2``, summed) as the negatives' regulariser and ``beta = 0.01``. ``beta = 0.1`` here is
the first release's value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.precision import upcast
from losskit._core.registry import register
from losskit.embedding._common import (
    PairBatch,
    check_temperature,
    multi_positive_nll,
    prepare_labels,
    reduce_anchors,
)

_DEFAULTS = {"beta": 0.1, "tau_min": 1e-5, "tau_max": 2.0, "topk": None, "normalize": True}


def temperature_regularizer(tau: Tensor, dim: int) -> Tensor:
    """``Omega(tau) = (dim/2) log tau + 1/tau``, elementwise; minimised at ``tau = 2/dim``."""
    return 0.5 * dim * torch.log(tau) + torch.reciprocal(tau)


def _stack(x: Tensor | list[Tensor] | tuple[Tensor, ...], name: str) -> Tensor:
    if isinstance(x, list | tuple):
        if not x or not all(isinstance(t, Tensor) for t in x):
            raise ValueError(f"{name} must be a non-empty sequence of [N, D] tensors")
        if len({tuple(t.shape) for t in x}) != 1:
            raise ValueError(f"{name}: all heads must have the same shape")
        x = torch.stack(list(x))
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must have shape [H, N, D] with H >= 1 heads, got {shape}")
    return x


def _check_topk(topk: int | None) -> int | None:
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ValueError(f"topk must be a positive int or None, got {topk!r}")
    return topk


def _topk_nll(g: Tensor, b: PairBatch, k: int) -> Tensor:
    """``-mean_p g_ip + mean_{k most similar negatives n} g_in`` per anchor (0 without a
    positive; the negative part is 0 without a negative)."""
    neg = ~b.pos if b.valid is None else b.valid & ~b.pos
    zero = torch.zeros_like(g)
    count = b.pos.sum(dim=1)
    pos_term = -torch.where(b.pos, g, zero).sum(dim=1) / count.clamp_min(1).to(g.dtype)
    idx = b.sim.masked_fill(~neg, float("-inf")).topk(min(k, g.shape[1]), dim=1).indices
    picked = neg.gather(1, idx)
    n_neg = picked.sum(dim=1).clamp_min(1).to(g.dtype)
    neg_term = torch.where(picked, g.gather(1, idx), torch.zeros_like(idx, dtype=g.dtype))
    return torch.where(count > 0, pos_term + neg_term.sum(dim=1) / n_neg, zero[:, 0])


def _check_temperatures(tau: Tensor, shape: tuple[int, int, int]) -> Tensor:
    if not isinstance(tau, Tensor) or not tau.is_floating_point():
        raise ValueError("temperatures must be a floating tensor")
    if tuple(tau.shape) != shape:
        raise ValueError(f"temperatures must have shape {shape}, got {tuple(tau.shape)}")
    check_finite("temperatures", tau)
    if checks_enabled() and bool((tau <= 0).any()):
        raise ValueError("temperatures must be positive")
    return tau


def amcl_loss(
    embeddings: Tensor | list[Tensor],
    labels: Tensor,
    *,
    ref_embeddings: Tensor | list[Tensor] | None = None,
    ref_labels: Tensor | None = None,
    temperatures: Tensor | None = None,
    temperature: float = 0.1,
    beta: float = 0.1,
    dim: int | None = None,
    topk: int | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """AMCL of head outputs ``embeddings[H, N, D]`` (or a list of ``[N, D]``) with integer
    ``labels[N]`` against ``ref_embeddings[H, M, D]``/``ref_labels[M]`` (default: the batch,
    self excluded). ``temperatures[H, N, M]`` (positive) are the pair temperatures; ``None``
    uses the constant ``temperature``. ``dim`` is ``d`` in ``Omega`` (default ``D``)."""
    check_reduction(reduction)
    z = _stack(embeddings, "embeddings")
    ref = None if ref_embeddings is None else _stack(ref_embeddings, "ref_embeddings")
    h, _, d = z.shape
    if ref is not None and ref.shape[0] != h:
        raise ValueError(f"ref_embeddings must have {h} heads like embeddings, got {ref.shape[0]}")
    b_val = check_number("beta", beta, low=0.0)
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim must be a positive int or None, got {dim!r}")
    d_reg = d if dim is None else dim
    k = _check_topk(topk)
    t_const = check_temperature(temperature)
    per_head = []
    for head in range(h):
        b = prepare_labels(
            z[head],
            labels,
            None if ref is None else ref[head],
            ref_labels,
            normalize=normalize,
            reduction=reduction,
            candidate_mask=candidate_mask,
        )
        if head == 0 and temperatures is not None:
            temperatures = _check_temperatures(temperatures, (h, *b.sim.shape))
        tau = b.sim.new_tensor(t_const) if temperatures is None else temperatures[head].to(b.sim)
        g = b.sim / tau - b_val * temperature_regularizer(tau, d_reg)
        if k is None:
            per_head.append(multi_positive_nll(PairBatch(g, b.pos, b.valid, g.dtype), 1.0, "none"))
        else:
            per_head.append(_topk_nll(g, b, k))
    total = torch.stack(per_head).sum(dim=0)
    return reduce_anchors(total, b.pos.any(dim=1), reduction).to(z.dtype)


class PairTemperature(nn.Module):
    """``tau_ia = tau_min + (tau_max - tau_min) * sigmoid(-<phi(z_i), phi(z_a)>)`` for every
    head and pair; ``phi`` (``D -> hidden -> D``, ReLU) is shared by the heads."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        tau_min: float = 1e-5,
        tau_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.tau_min = check_number("tau_min", tau_min, low=0.0, low_open=True)
        self.tau_max = check_number("tau_max", tau_max, low=self.tau_min, low_open=True)
        hidden = in_features if hidden_features is None else hidden_features
        self.phi = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, in_features)
        )

    def forward(self, z: Tensor, ref: Tensor) -> Tensor:
        """``z[H, N, D]``, ``ref[H, M, D]`` -> ``tau[H, N, M]`` in the dtype of ``phi``."""
        w = self.phi[0].weight.dtype
        score = self.phi(z.to(w)) @ self.phi(ref.to(w)).transpose(1, 2)
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)


class MultiHeadProjection(nn.Module):
    """``num_heads`` independent MLP heads ``in -> hidden -> out``: ``x[N, in] -> [H, N, out]``."""

    def __init__(
        self,
        in_features: int,
        out_features: int = 128,
        num_heads: int = 3,
        hidden_features: int = 512,
    ) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(in_features, hidden_features),
                nn.ReLU(),
                nn.Linear(hidden_features, out_features),
            )
            for _ in range(num_heads)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([head(x) for head in self.heads])


class AMCLLoss(nn.Module):
    """:func:`amcl_loss` with temperatures learned by a :class:`PairTemperature` (its
    parameters train with the model); ``in_features`` is the head output size ``D``."""

    def __init__(
        self,
        in_features: int,
        *,
        beta: float = 0.1,
        tau_min: float = 1e-5,
        tau_max: float = 2.0,
        hidden_features: int | None = None,
        topk: int | None = None,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.temperature = PairTemperature(in_features, hidden_features, tau_min, tau_max)
        self.in_features = int(in_features)
        self.beta = check_number("beta", beta, low=0.0)
        self.topk = _check_topk(topk)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)

    def forward(
        self,
        embeddings: Tensor | list[Tensor],
        labels: Tensor,
        ref_embeddings: Tensor | list[Tensor] | None = None,
        ref_labels: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        z = _stack(embeddings, "embeddings")
        ref = z if ref_embeddings is None else _stack(ref_embeddings, "ref_embeddings")
        for x, name in ((z, "embeddings"), (ref, "ref_embeddings")):
            if x.shape[-1] != self.in_features:
                raise ValueError(
                    f"{name} must have in_features={self.in_features} features, "
                    f"got shape {tuple(x.shape)}"
                )
        if self.normalize:
            z_t, ref_t = F.normalize(upcast(z), dim=-1), F.normalize(upcast(ref), dim=-1)
        else:
            z_t, ref_t = z, ref
        return amcl_loss(
            z,
            labels,
            ref_embeddings=ref_embeddings,
            ref_labels=ref_labels,
            temperatures=self.temperature(z_t, ref_t),
            beta=self.beta,
            dim=self.in_features,
            topk=self.topk,
            normalize=self.normalize,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, beta={self.beta}, topk={self.topk}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}"
        )


register(
    "amcl",
    kind="loss",
    family="embedding",
    papers=(49,),
    summary="Adaptive multi-head contrastive: per-head SupCon with pair temperatures "
    "and the (d/2) log tau + 1/tau regulariser.",
    defaults=_DEFAULTS,
    function=amcl_loss,
    module=AMCLLoss,
)
