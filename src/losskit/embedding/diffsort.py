"""Differentiable sorting networks (Petersen et al., ICML 2021 and ICLR 2022), the sorter behind
GroCo (paper 33, :mod:`losskit.embedding.groco`).

A sorting network is a fixed sequence of layers of disjoint comparators ``(a, b)``, ``a < b``;
a comparator puts the smaller of its two wires on ``a`` and the larger on ``b``. The relaxed
comparator replaces the hard swap by a convex mix with weight ``alpha = f(x_b - x_a)``, where
``f`` is a sigmoid-shaped function of steepness ``beta``:

``x_a' = alpha * x_a + (1 - alpha) * x_b``,  ``x_b' = (1 - alpha) * x_a + alpha * x_b``.

Applying the same mixes to the identity gives the relaxed permutation matrix ``P[i, r]``, the
weight with which input ``i`` lands at rank ``r`` (ascending ranks, rank 0 the smallest), and
``sorted = x @ P``. Every layer multiplies ``P`` by a doubly stochastic matrix, so ``P`` is
doubly stochastic; as ``beta -> inf`` it tends to the hard permutation of ``torch.sort``.

Networks: ``"odd_even"`` (odd-even transposition, ``n`` layers, any ``n``) and ``"bitonic"``
(``k(k+1)/2`` layers, ``k = ceil(log2 n)``; for ``n`` not a power of two the missing wires are
virtual ``+inf`` entries at the end, so every comparator that touches one is the identity and
is dropped; the ``diffsort`` package's bitonic network orders its comparators differently, so its
relaxed output differs, while ``"odd_even"`` is the same network). Relaxations ``f(d)`` of
``d = x_b - x_a`` with steepness ``beta``:

- ``"logistic"``: ``sigmoid(beta d)``;
- ``"logistic_phi"``: ``sigmoid(beta d / (|d| + 1e-10)^lambda)`` (the "activation replacement
  trick", ``lambda = art_lambda``);
- ``"cauchy"``: ``atan(beta d) / pi + 1/2`` (monotonic, the one GroCo uses);
- ``"gaussian"``: ``Phi(beta d)``, the normal CDF.

Computed in float32 or wider; results in the input dtype. Vectorised over the rows of ``x``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_finite, check_number
from losskit._core.precision import upcast

NETWORKS = ("odd_even", "bitonic")
RELAXATIONS = ("logistic", "logistic_phi", "cauchy", "gaussian")

Layers = tuple[tuple[tuple[int, int], ...], ...]


def _odd_even(n: int) -> Layers:
    return tuple(tuple((i, i + 1) for i in range(layer % 2, n - 1, 2)) for layer in range(n))


def _bitonic(n: int) -> Layers:
    size = 1 << max(n - 1, 0).bit_length()
    layers = []
    block = 2
    while block <= size:
        # merge step with the mirrored first layer: every comparator puts the min on the
        # lower wire, so virtual +inf wires at the end never move
        layers.append(
            tuple(
                (start + j, start + block - 1 - j)
                for start in range(0, size, block)
                for j in range(block // 2)
            )
        )
        half = block // 4
        while half >= 1:
            layers.append(
                tuple(
                    (start + j, start + j + half)
                    for start in range(0, size, 2 * half)
                    for j in range(half)
                )
            )
            half //= 2
        block *= 2
    return tuple(tuple((a, b) for a, b in layer if b < n) for layer in layers)


@lru_cache(maxsize=256)
def sorting_network(network: str, n: int) -> Layers:
    """The layers of comparators ``(a, b)`` (``a < b``, min to ``a``) sorting ``n`` wires;
    empty layers are dropped."""
    check_choice("network", network, NETWORKS)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    layers = _odd_even(n) if network == "odd_even" else _bitonic(n)
    return tuple(layer for layer in layers if layer)


def _swap_weight(d: Tensor, relaxation: str, steepness: float, art_lambda: float) -> Tensor:
    """``alpha = f(d)``: the weight of keeping the pair's order (``d = x_b - x_a``)."""
    if relaxation == "logistic":
        return torch.sigmoid(steepness * d)
    if relaxation == "logistic_phi":
        return torch.sigmoid(steepness * d / (d.abs() + 1e-10).pow(art_lambda))
    if relaxation == "cauchy":
        return torch.atan(steepness * d) / math.pi + 0.5
    return 0.5 * (1.0 + torch.erf(steepness * d / math.sqrt(2.0)))


def check_sort_options(
    network: str, relaxation: str, steepness: float, art_lambda: float
) -> tuple[float, float]:
    check_choice("network", network, NETWORKS)
    check_choice("relaxation", relaxation, RELAXATIONS)
    beta = check_number("steepness", steepness, low=0.0, low_open=True, high_open=True)
    lam = check_number("art_lambda", art_lambda, low=0.0, high=1.0, high_open=True)
    return beta, lam


def soft_sort(
    x: Tensor,
    *,
    network: str = "odd_even",
    relaxation: str = "cauchy",
    steepness: float = 1.0,
    art_lambda: float = 0.25,
) -> tuple[Tensor, Tensor]:
    """Relaxed ascending sort of each row of ``x[B, n]``: ``(sorted[B, n], P[B, n, n])``
    with ``P[b, i, r]`` the weight of ``x[b, i]`` at rank ``r`` and ``sorted = x @ P``."""
    beta, lam = check_sort_options(network, relaxation, steepness, art_lambda)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating torch.Tensor")
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must have shape [B, n] with n >= 1, got {tuple(x.shape)}")
    check_finite("x", x)
    dtype = x.dtype
    v = upcast(x)
    bsz, n = v.shape
    perm = torch.eye(n, dtype=v.dtype, device=v.device).expand(bsz, n, n)
    for layer in sorting_network(network, n):
        a = torch.tensor([p[0] for p in layer], device=v.device)
        b = torch.tensor([p[1] for p in layer], device=v.device)
        partner = torch.arange(n, device=v.device)
        partner[a], partner[b] = b, a
        alpha = _swap_weight(v[:, b] - v[:, a], relaxation, beta, lam)
        # per wire: the weight of its own value (alpha on compared wires, 1 elsewhere)
        keep = v.new_ones(bsz, n).index_copy(1, torch.cat([a, b]), torch.cat([alpha, alpha], 1))
        v = torch.lerp(v[:, partner], v, keep)
        perm = torch.lerp(perm[:, :, partner], perm, keep[:, None, :])
    return v.to(dtype), perm.to(dtype)
