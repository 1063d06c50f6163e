"""Metrix mixing (Venkataramanan et al., ICLR 2022; paper 11): mixed examples and their
interpolated pair targets.

Examples ``x, x'`` (inputs, intermediate features or embeddings) become
``lam x + (1 - lam) x'``, ``lam ~ Beta(2, 2)``, and their pair label for an anchor ``a``
(``y = 1`` same class, 0 otherwise) is interpolated the same way:
``t = lam y(a, x) + (1 - lam) y(a, x')``. Pairings: ``"positive_negative"`` mixes each
positive ``p`` of ``a`` with each negative ``n`` of ``a`` (``t = lam``);
``"anchor_negative"`` mixes ``a`` itself with each of its negatives (``t = lam``).
``top_k`` keeps only the ``top_k`` negatives most similar to each anchor (the reference code
uses 1 for input mixing). The reference code draws one pairing at random per step
(``MetrixLoss(pairing="random")``) and mixes anchor-negative pairs only for anchors with no
positive in the batch; the paper mixes every anchor. The losses that consume the mixed
examples are in ``losskit.embedding.mixed_targets``; the objective in
``losskit.embedding.metrix``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_finite, check_number
from losskit._core.precision import compute_dtype
from losskit.embedding._common import check_embeddings, check_labels, similarities

PAIRINGS = ("positive_negative", "anchor_negative")


@dataclass
class MetrixBatch:
    """``mixed[P, ...] = lam x[first] + (1 - lam) x[second]``, made for ``anchor[P]``."""

    mixed: Tensor
    lam: Tensor
    anchor: Tensor
    first: Tensor
    second: Tensor

    def targets(self, labels: Tensor, anchor_labels: Tensor | None = None) -> Tensor:
        """``t[A, P] = lam [y_first = y_a] + (1 - lam) [y_second = y_a]`` for anchors of
        ``anchor_labels[A]`` (default ``labels``; ``arange(C)`` for proxies)."""
        ya = (labels if anchor_labels is None else anchor_labels)[:, None]
        return self.lam * (ya == labels[self.first]) + (1 - self.lam) * (ya == labels[self.second])

    def unique(self) -> MetrixBatch:
        """The batch without repeated ``(first, second)`` pairs (the positive-negative pairing
        repeats each for every anchor of the class), keeping each pair's first occurrence."""
        pairs = torch.stack([self.first, self.second], dim=1)
        uniq, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        order = torch.arange(len(pairs), device=pairs.device)
        keep = order.new_full((len(uniq),), len(pairs)).scatter_reduce(0, inverse, order, "amin")
        return MetrixBatch(
            *(v[keep] for v in (self.mixed, self.lam, self.anchor, self.first, self.second))
        )

    def anchor_mask(self, n: int) -> Tensor:
        """``[n, P]`` bool, True where the mixed example was made for that anchor."""
        return torch.arange(n, device=self.anchor.device)[:, None] == self.anchor[None, :]


def positive_int(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


@torch.no_grad()
def metrix_pairs(
    labels: Tensor,
    *,
    pairing: str = "positive_negative",
    embeddings: Tensor | None = None,
    top_k: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(anchor, first, second)`` indices of the paper's pairs; with ``top_k``, only the
    negatives most similar (cosine of ``embeddings[N, D]``) to each anchor."""
    check_choice("pairing", pairing, PAIRINGS)
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise ValueError("labels must be a 1-D tensor of integer class ids")
    n, dev = labels.shape[0], labels.device
    check_labels(labels, n, "labels")
    same = labels[:, None] == labels[None, :]
    neg = ~same
    if top_k is not None:
        k = min(positive_int("top_k", top_k), n)
        if embeddings is None:
            raise ValueError("embeddings must be given with top_k (they rank the negatives)")
        check_embeddings(embeddings, "embeddings")
        if embeddings.shape[0] != n:
            raise ValueError(f"embeddings must have {n} rows like labels")
        s = similarities(embeddings, embeddings, True).masked_fill(same, float("-inf"))
        neg &= torch.zeros_like(neg).scatter_(1, s.topk(k, dim=1).indices, True)
    a_n, n_n = neg.nonzero(as_tuple=True)  # sorted by anchor
    if pairing == "anchor_negative":
        return a_n, a_n, n_n
    a_p, p_p = (same & ~torch.eye(n, dtype=torch.bool, device=dev)).nonzero(as_tuple=True)
    count = neg.sum(dim=1)
    rep = count[a_p]  # each (anchor, positive) pair meets every negative of its anchor
    j = torch.repeat_interleave(torch.arange(a_p.shape[0], device=dev), rep)
    within = torch.arange(j.shape[0], device=dev) - (rep.cumsum(0) - rep)[j]
    return a_p[j], p_p[j], n_n[(count.cumsum(0) - count)[a_p[j]] + within]


def metrix_mix(
    x: Tensor,
    labels: Tensor,
    *,
    pairing: str = "positive_negative",
    alpha: float = 2.0,
    lam: float | None = None,
    embeddings: Tensor | None = None,
    top_k: int | None = None,
) -> MetrixBatch:
    """Mix ``x[N, ...]`` (gradients flow) over the pairs of ``labels[N]``; ``lam`` fixed or
    drawn once from ``Beta(alpha, alpha)`` (torch's global generator)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1 or not len(x):
        raise ValueError("x must be a non-empty floating tensor, batch in dimension 0")
    check_labels(labels, x.shape[0], "labels")
    check_finite("x", x)
    a = check_number("alpha", alpha, low=0.0, low_open=True)
    if lam is None:
        lam = float(torch.distributions.Beta(torch.tensor(a), torch.tensor(a)).sample())
    lam = check_number("lam", lam, low=0.0, high=1.0)
    anchor, first, second = metrix_pairs(
        labels.to(x.device), pairing=pairing, embeddings=embeddings, top_k=top_k
    )
    mixed = lam * x[first] + (1.0 - lam) * x[second]
    lam_t = torch.full(first.shape, lam, dtype=compute_dtype(x.dtype), device=x.device)
    return MetrixBatch(mixed, lam_t, anchor, first, second)
