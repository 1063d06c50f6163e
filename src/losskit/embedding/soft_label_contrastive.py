"""Soft-label contrastive loss from teacher relevance scores (paper 24, LG-ANNA-Embedding).

Instead of a one-hot target over the candidates, each query is supervised by a distribution
``q_i`` built from a teacher's continuous relevance scores ``r_ij`` (in the paper, a
retriever-plus-reranker pipeline). With student similarities ``s_ij`` (cosine when
``normalize=True``) and ``p_ij = softmax_j(s_ij / T)`` over the query's candidates:

``l_i = -sum_j q_ij log p_ij``   (cross-entropy with soft targets)

which differs from ``KL(q_i || p_i)`` by the target entropy ``H(q_i)`` (a constant: same
gradient). The targets, over the candidates that ``candidate_mask`` keeps:

- ``teacher_temperature=None`` (default): ``teacher_scores`` are non-negative relevance
  weights, normalised per row, ``q_ij = r_ij / sum_j r_ij`` (e.g. reranker probabilities);
- ``teacher_temperature=tau``: ``q_ij = softmax_j(r_ij / tau)`` (any real scores, e.g.
  reranker logits); as ``tau -> 0`` the target becomes one-hot on the teacher's top key.

Relations: with one-hot ``teacher_scores`` this is exactly
:func:`~losskit.embedding.info_nce.info_nce_loss` (``positives`` = the hot index); with
equal weights on a set of positives it is InfoNCE's multi-positive average with that
``positive_mask``. A query whose scores are all zero over its candidates (or that has no
candidate) has no target: it gives 0 and drops out of ``"mean"``, like an anchor without a
positive. No gradient flows into ``teacher_scores``.

Paper 24's hard-negative filter is :func:`losskit.mining.negative_filters.adaptive_margin_filter`;
its mask goes in ``candidate_mask``. The report states the soft-label idea but not the loss in
a form we could verify; the cross-entropy above and the defaults (``temperature=0.02``, the
usual value for Mistral-7B embedders such as E5-Mistral; raw weights as targets) are the
natural reading, not confirmed values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_candidate_mask,
    check_embeddings,
    check_temperature,
    reduce_anchors,
    similarities,
)


def check_teacher_temperature(teacher_temperature: float | None) -> float | None:
    if teacher_temperature is None:
        return None
    return check_number("teacher_temperature", teacher_temperature, low=0.0, low_open=True)


def _targets(
    teacher_scores: Tensor,
    n: int,
    m: int,
    tau: float | None,
    valid: Tensor | None,
    dtype: torch.dtype,
) -> Tensor:
    """Target rows ``q[N, M]`` in ``dtype`` (zero rows for queries without a target), no
    gradient."""
    if not isinstance(teacher_scores, Tensor) or not teacher_scores.is_floating_point():
        raise ValueError("teacher_scores must be a floating tensor")
    if tuple(teacher_scores.shape) != (n, m):
        raise ValueError(
            f"teacher_scores must have shape {(n, m)}, got {tuple(teacher_scores.shape)}"
        )
    check_finite("teacher_scores", teacher_scores)
    r = teacher_scores.detach().to(dtype)
    if tau is None:
        if checks_enabled() and bool((r < 0).any()):
            raise ValueError(
                "teacher_scores must be non-negative weights when teacher_temperature is None "
                "(give teacher_temperature to turn real-valued scores into targets)"
            )
        if valid is not None:
            r = r.masked_fill(~valid, 0.0)
        total = r.sum(dim=1, keepdim=True)
        return torch.where(total > 0, r / total.clamp_min(torch.finfo(r.dtype).tiny), 0.0)
    logits = r / tau
    if valid is None:
        return torch.softmax(logits, dim=1)
    logits = logits.masked_fill(~valid, float("-inf"))
    any_valid = valid.any(dim=1, keepdim=True)
    q = torch.softmax(torch.where(any_valid, logits, 0.0), dim=1)
    return torch.where(any_valid, q, 0.0)


def soft_label_contrastive_loss(
    query: Tensor,
    keys: Tensor,
    teacher_scores: Tensor,
    *,
    temperature: float = 0.02,
    teacher_temperature: float | None = None,
    normalize: bool = True,
    candidate_mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Soft-label contrastive loss of ``query[N, D]`` against ``keys[M, D]`` with targets
    from ``teacher_scores[N, M]`` (see the module docstring)."""
    check_reduction(reduction)
    t = check_temperature(temperature)
    tau = check_teacher_temperature(teacher_temperature)
    check_embeddings(query, "query")
    n, d = query.shape
    check_embeddings(keys, "keys", d)
    m = keys.shape[0]
    valid = check_candidate_mask(candidate_mask, n, m)
    sim = similarities(query, keys, normalize)
    q = _targets(teacher_scores, n, m, tau, valid, sim.dtype)
    has_target = q.sum(dim=1) > 0
    logits = sim / t
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    # rows without a target may have no candidate at all: keep their log_softmax finite
    logits = torch.where(has_target[:, None], logits, torch.zeros_like(logits))
    log_prob = torch.log_softmax(logits, dim=1)
    per_query = -(q * torch.where(q > 0, log_prob, torch.zeros_like(log_prob))).sum(dim=1)
    return reduce_anchors(per_query, has_target, reduction).to(query.dtype)


class SoftLabelContrastiveLoss(EmbeddingLossModule):
    """Module form of :func:`soft_label_contrastive_loss`."""

    def __init__(
        self,
        temperature: float = 0.02,
        teacher_temperature: float | None = None,
        *,
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(temperature, normalize, reduction)
        self.teacher_temperature = check_teacher_temperature(teacher_temperature)

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        teacher_scores: Tensor,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return soft_label_contrastive_loss(
            query,
            keys,
            teacher_scores,
            temperature=self.temperature,
            teacher_temperature=self.teacher_temperature,
            normalize=self.normalize,
            candidate_mask=candidate_mask,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, teacher_temperature={self.teacher_temperature}"


register(
    "soft_label_contrastive",
    kind="loss",
    family="embedding",
    papers=(24,),
    summary="Soft-label contrastive (LG-ANNA-Embedding): cross-entropy of the student's "
    "softmax over candidates against teacher relevance scores as soft targets.",
    defaults={"temperature": 0.02, "teacher_temperature": None, "normalize": True},
    function=soft_label_contrastive_loss,
    module=SoftLabelContrastiveLoss,
)
