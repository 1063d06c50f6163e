"""Negative filters over a similarity matrix: they return a ``candidate_mask`` for the losses.

Every filter takes ``sim[N, M]`` (anchor-candidate similarities: the student's cosine
similarities, a teacher's or a reranker's scores) and the positives as in the pair contract
of ``losskit.embedding``: ``positives[N]`` (index of each anchor's positive; default
``arange(N)``) or ``positive_mask[N, M]`` (bool). It returns a bool ``[N, M]`` mask, computed
under ``torch.no_grad()``, where False removes the candidate for that anchor; pass it as
``candidate_mask=`` to any embedding loss. An incoming ``candidate_mask`` is respected
(what it removes stays removed, what it keeps is only narrowed), so filters chain::

    keep = false_negative_filter(sim, threshold=0.1)
    keep = hardest_negatives(sim, k=8, candidate_mask=keep)

Filters never remove a positive. Where an anchor has several positives, the reference
similarity ``s+`` that sets a threshold is their maximum (``reference="max"``, the lenient
choice: a candidate is dropped only relative to the best-scoring positive); ``"min"`` and
``"mean"`` are the stricter alternatives. With one positive the three agree. An anchor
without a positive keeps its candidates (its loss is 0 anyway).

- :func:`adaptive_margin_filter` (paper 24, LG-ANNA-Embedding): drop negatives too similar
  to the positive, ``s_n > margin * s+`` (relative, default ``margin=0.95``: the
  "within 95% of the positive score" rule of NV-Retriever's TopK-PercPos) or
  ``s_n > s+ - margin`` (``relative=False``). The report describes the rule only in words
  ("filters out semantically ambiguous negatives based on their similarity to positive
  examples"); the exact form and the 0.95 are not confirmed by the text we could read.
- :func:`false_negative_filter` (paper 42, UniME): drop candidates with ``s_n > s+ + threshold``
  as false negatives (the paper's alpha; default ``threshold=0.1``, the released code's
  ``threshold_value``). It is :func:`adaptive_margin_filter` with ``relative=False`` and
  ``margin=-threshold``.
- :func:`hardest_negatives` (paper 42): keep only the ``k`` remaining negatives of highest
  similarity (default ``k=8``, the released code's ``topk``); all of them when fewer remain.

The comparisons are strict (``>``) and made in float32 or wider.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_number, check_scores
from losskit._core.precision import upcast
from losskit.embedding._common import check_candidate_mask, positive_matrix

REFERENCES = ("max", "min", "mean")


def _prepare(
    sim: Tensor,
    positives: Tensor | None,
    positive_mask: Tensor | None,
    candidate_mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Validated ``(sim, pos, base)``: similarities in float32 or wider, the positives that
    ``base`` (the incoming candidates, all True by default) keeps, and ``base``."""
    check_scores(sim, "sim", min_classes=1)
    sim = upcast(sim.detach())
    n, m = sim.shape
    pos = positive_matrix(positives, positive_mask, n, m, sim.device, "sim (columns)")
    base = check_candidate_mask(candidate_mask, n, m)
    if base is None:
        base = torch.ones(n, m, dtype=torch.bool, device=sim.device)
    return sim, pos & base, base


def _reference(sim: Tensor, pos: Tensor, reference: str) -> tuple[Tensor, Tensor]:
    """Per-anchor reference similarity ``s+`` ``[N, 1]`` and whether the anchor has one."""
    has_pos = pos.any(dim=1, keepdim=True)
    if reference == "max":
        ref = sim.masked_fill(~pos, float("-inf")).amax(dim=1, keepdim=True)
    elif reference == "min":
        ref = sim.masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)
    else:
        count = pos.sum(dim=1, keepdim=True).clamp_min(1)
        ref = torch.where(pos, sim, torch.zeros_like(sim)).sum(dim=1, keepdim=True) / count
    return torch.where(has_pos, ref, torch.zeros_like(ref)), has_pos


@torch.no_grad()
def adaptive_margin_filter(
    sim: Tensor,
    positives: Tensor | None = None,
    positive_mask: Tensor | None = None,
    *,
    margin: float = 0.95,
    relative: bool = True,
    reference: str = "max",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Paper 24's adaptive-margin hard-negative filter: a bool ``[N, M]`` mask that removes
    the negatives with ``s_n > margin * s+`` (``relative=True``, ``margin >= 0``) or
    ``s_n > s+ - margin`` (``relative=False``, any real ``margin``).

    Relative form: ``margin = 0.95`` keeps negatives scoring at most 95% of the positive;
    larger ``margin`` keeps more (monotone), and as ``margin -> inf`` everything is kept
    when ``s+ > 0``. It assumes positive scores (cosine of related texts, reranker
    probabilities): with ``s+ <= 0`` the threshold lies above ``s+``. A negative identical
    to the positive is removed whenever ``s+ > 0`` and ``margin < 1`` (relative) or
    ``margin > 0`` (absolute)."""
    check_number("margin", margin, low=0.0 if relative else float("-inf"))
    check_choice("reference", reference, REFERENCES)
    sim, pos, base = _prepare(sim, positives, positive_mask, candidate_mask)
    ref, has_pos = _reference(sim, pos, reference)
    threshold = ref * margin if relative else ref - margin
    drop = (sim > threshold) & has_pos & ~pos
    return base & ~drop


@torch.no_grad()
def false_negative_filter(
    sim: Tensor,
    positives: Tensor | None = None,
    positive_mask: Tensor | None = None,
    *,
    threshold: float = 0.1,
    reference: str = "max",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Paper 42's false-negative filter: a bool ``[N, M]`` mask that removes the candidates
    with ``s_n > s+ + threshold`` (more similar than the positive by more than
    ``threshold``: likely unlabelled positives). ``threshold = inf`` removes nothing."""
    t = check_number("threshold", threshold)
    check_choice("reference", reference, REFERENCES)
    sim, pos, base = _prepare(sim, positives, positive_mask, candidate_mask)
    return _false_negative_keep(sim, pos, base, t, reference)


def _false_negative_keep(
    sim: Tensor, pos: Tensor, base: Tensor, threshold: float, reference: str = "max"
) -> Tensor:
    """:func:`false_negative_filter` on validated inputs (``pos`` within ``base``)."""
    ref, has_pos = _reference(sim, pos, reference)
    drop = (sim > ref + threshold) & has_pos & ~pos
    return base & ~drop


def check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be a positive int, got {k!r}")
    return k


@torch.no_grad()
def hardest_negatives(
    sim: Tensor,
    positives: Tensor | None = None,
    positive_mask: Tensor | None = None,
    *,
    k: int = 8,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Paper 42's hard-negative selection: a bool ``[N, M]`` mask keeping each anchor's
    positives and its ``k`` negatives of highest ``sim`` among the candidates that
    ``candidate_mask`` keeps (all of them when at most ``k`` remain). Ties at the k-th
    place are broken by ``torch.topk``."""
    check_k(k)
    sim, pos, base = _prepare(sim, positives, positive_mask, candidate_mask)
    return _hardest_keep(sim, pos, base, k)


def _hardest_keep(sim: Tensor, pos: Tensor, base: Tensor, k: int) -> Tensor:
    """:func:`hardest_negatives` on validated inputs (``pos`` within ``base``)."""
    eligible = base & ~pos
    scores = sim.masked_fill(~eligible, float("-inf"))
    idx = scores.topk(min(k, sim.shape[1]), dim=1).indices
    chosen = torch.zeros_like(eligible).scatter_(1, idx, True) & eligible
    return pos | chosen
