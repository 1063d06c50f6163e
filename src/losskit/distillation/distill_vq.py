"""Distill-VQ: distil a dense retriever's scores into a quantized index (paper 51).

=====================  ===========  ===================================================
argument               shape        meaning
=====================  ===========  ===================================================
``student_scores``     ``[N, L]``   ``s(q, d) = <q, x_hat_d>``: the query against the
                                    quantized (reconstructed) candidate documents
``teacher_scores``     ``[N, L]``   ``t(q, d) = <q, d>``: the same pairs with the dense
                                    document embeddings (detached: the teacher)
``mask``               ``[N, L]``   optional bool, ``True`` for a real candidate (lists of
                                    different lengths are padded; padding is ``False``)
=====================  ===========  ===================================================

Only the documents are quantized; the query embedding stays dense, as in the paper (queries
are encoded at search time and scored against the quantized index).
:func:`candidate_scores` builds both score matrices from embeddings and a quantizer
(:class:`~losskit.distillation.vector_quantizer.ProductQuantizer`).

Both score matrices are divided by the temperature ``T`` (LibVQ's ``compute_score``), then
``kind`` picks the objective per query (row), over its valid candidates:

- ``"listwise_kl"`` (the paper's choice, ListNet):
  ``KL(softmax(t / T) || softmax(s / T))``. Its gradient is
  ``(softmax(s / T) - softmax(t / T)) / T`` per row and it is 0 exactly when ``s - t`` is
  constant over the row. At ``T = 1`` it equals ``kd_loss(s, t, temperature=1)``; at other
  ``T`` it lacks KD's ``T^2`` factor (LibVQ has none).
- ``"ranknet"``: the teacher's order as pairwise labels, mean over the pairs with
  ``t_i > t_j`` of ``log(1 + exp(-(s_i - s_j) / T))`` (0 for a row without such a pair).
- ``"margin_mse"`` (Hofstätter et al.'s Margin-MSE over every pair of candidates): mean over
  pairs ``i != j`` of ``((s_i - s_j) - (t_i - t_j))^2 / T^2``, which equals twice the unbiased
  variance of ``(s - t) / T`` over the row; with two candidates (positive, negative) it is the
  original Margin-MSE.

Reduction: ``"none"`` one value per query, ``"sum"``, ``"mean"`` over the queries with at
least one valid candidate (a query whose mask is all ``False`` gives 0 and leaves the mean).
Defaults (LibVQ ``learnable_vq.py``): ``kind="listwise_kl"``, ``temperature=1.0``.

Where this follows the paper rather than the released code: LibVQ computes the cross-entropy
``-sum softmax(t) log(softmax(s) + 1e-6)``; here it is the KL in the stable log-softmax form,
which differs by the teacher's entropy (a constant of the student) and by dropping the
``1e-6`` probability floor, and has the same gradient up to that floor. LibVQ does not detach
the teacher scores (they come from fixed embeddings); here they are detached. LibVQ applies
the loss to the IVF-centroid scores and to the IVF + PQ scores: pass a quantizer that composes
them to :func:`candidate_scores`; ``similarity="l2"`` there gives ``-||q - d||^2`` scores. The
paper's own text (its comparison of ListNet with other ranking objectives) could not be
consulted here: ``"ranknet"`` (Burges et al., 2005, on the teacher's order) and
``"margin_mse"`` (Hofstätter et al., 2020) follow their standard definitions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import (
    check_choice,
    check_finite,
    check_reduction,
    check_scores,
    checks_enabled,
)
from losskit._core.precision import upcast_all
from losskit._core.registry import register
from losskit.distillation._common import (
    check_temperature,
    finish_distill,
    kl_rows,
    prepare_distill,
)

KINDS = ("listwise_kl", "ranknet", "margin_mse")
SIMILARITIES = ("ip", "l2")


def _listwise_kl(s: Tensor, t: Tensor, valid: Tensor | None) -> Tensor:
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
        t = t.masked_fill(~valid, float("-inf"))
    return kl_rows(torch.log_softmax(t, dim=1), torch.log_softmax(s, dim=1))


def _pairs(s: Tensor, valid: Tensor | None) -> Tensor:
    """``[N, L, L]`` mask of ordered pairs ``i != j`` of valid candidates."""
    n = s.shape[1]
    pair = ~torch.eye(n, dtype=torch.bool, device=s.device).unsqueeze(0)
    if valid is not None:
        pair = pair & valid.unsqueeze(2) & valid.unsqueeze(1)
    return pair


def _pair_mean(terms: Tensor, pair: Tensor) -> Tensor:
    total = torch.where(pair, terms, torch.zeros_like(terms)).sum(dim=(1, 2))
    return total / pair.sum(dim=(1, 2)).clamp_min(1).to(terms.dtype)


def _ranknet(s: Tensor, t: Tensor, valid: Tensor | None) -> Tensor:
    pref = _pairs(s, valid) & (t.unsqueeze(2) > t.unsqueeze(1))  # [n, i, j]: t_i > t_j
    return _pair_mean(F.softplus(s.unsqueeze(1) - s.unsqueeze(2)), pref)


def _margin_mse(s: Tensor, t: Tensor, valid: Tensor | None) -> Tensor:
    e = s - t
    return _pair_mean((e.unsqueeze(2) - e.unsqueeze(1)).pow(2), _pairs(s, valid))


_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "listwise_kl": _listwise_kl,
    "ranknet": _ranknet,
    "margin_mse": _margin_mse,
}


def _check_mask(mask: Tensor | None, scores: Tensor) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor like the scores {tuple(scores.shape)}")
    if tuple(mask.shape) != tuple(scores.shape):
        raise ValueError(
            f"mask must have the scores' shape {tuple(scores.shape)}, got {tuple(mask.shape)}"
        )
    return mask.to(scores.device)


def distill_vq_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    *,
    temperature: float = 1.0,
    kind: str = "listwise_kl",
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Distill-VQ's distillation of the dense scores into the quantized ones, one value per
    query (row) over its candidates; see the module docstring for each ``kind``."""
    temp = check_temperature(temperature)
    check_choice("kind", kind, KINDS)
    b = prepare_distill(student_scores, teacher_scores, reduction=reduction)
    valid = _check_mask(mask, student_scores)
    if valid is not None:
        rows = valid.any(dim=1)
        if not bool(rows.all()):
            b.w = rows.to(b.s.dtype)
            valid = valid | ~rows.unsqueeze(1)  # computed on, then zeroed by the reduction
    loss = _LOSSES[kind](b.s / temp, b.t / temp, valid)
    return finish_distill(loss, b, reduction)


class DistillVQLoss(nn.Module):
    """Module form of :func:`distill_vq_loss`; ``forward(student_scores, teacher_scores,
    mask=None)``."""

    def __init__(
        self, *, temperature: float = 1.0, kind: str = "listwise_kl", reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        check_choice("kind", kind, KINDS)
        self.kind = kind
        self.reduction = check_reduction(reduction)

    def forward(
        self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return distill_vq_loss(
            student_scores, teacher_scores, temperature=self.temperature, kind=self.kind,
            mask=mask, reduction=self.reduction,
        )  # fmt: skip


def _candidates(docs: Tensor, doc_matrix: Tensor | None, n: int, dim: int) -> Tensor:
    """Candidate embeddings ``[N, L, D]`` or shared ``[L, D]`` from vectors or ids."""
    if doc_matrix is None:
        if not isinstance(docs, Tensor) or not docs.is_floating_point():
            raise ValueError("docs must be floating embeddings (or ids with doc_matrix)")
        if docs.ndim not in (2, 3) or docs.shape[-1] != dim or (docs.ndim == 3 and len(docs) != n):
            raise ValueError(
                f"docs must have shape [{n}, L, {dim}] or [L, {dim}], got {tuple(docs.shape)}"
            )
        check_finite("docs", docs)
        return docs
    if not isinstance(doc_matrix, Tensor) or not doc_matrix.is_floating_point():
        raise ValueError("doc_matrix must be a floating tensor [num_docs, D]")
    if doc_matrix.ndim != 2 or doc_matrix.shape[1] != dim:
        raise ValueError(f"doc_matrix must have shape [num_docs, {dim}]")
    if not isinstance(docs, Tensor) or docs.is_floating_point() or docs.dtype == torch.bool:
        raise ValueError("docs must be integer ids into doc_matrix when doc_matrix is given")
    if docs.ndim not in (1, 2) or (docs.ndim == 2 and len(docs) != n):
        raise ValueError(f"docs ids must have shape [{n}, L] or [L], got {tuple(docs.shape)}")
    if checks_enabled() and bool(((docs < 0) | (docs >= len(doc_matrix))).any()):
        raise ValueError(f"docs ids must lie in [0, {len(doc_matrix)})")
    check_finite("doc_matrix", doc_matrix)
    return doc_matrix[docs.long()]


def _quantize(quantizer: Callable[[Tensor], Tensor | tuple], docs: Tensor) -> Tensor:
    flat = docs.reshape(-1, docs.shape[-1])
    out = quantizer(flat)
    out = out[0] if isinstance(out, tuple) else out
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(flat.shape):
        raise ValueError("quantizer must map [B, D] to a reconstruction [B, D] (or a tuple)")
    return out.reshape(docs.shape)


def _score(q: Tensor, d: Tensor, similarity: str) -> Tensor:
    ip = q @ d.T if d.ndim == 2 else torch.einsum("nd,nld->nl", q, d)
    if similarity == "ip":
        return ip
    dd = d.pow(2).sum(-1)
    return 2 * ip - q.pow(2).sum(-1, keepdim=True) - (dd if d.ndim == 3 else dd.unsqueeze(0))


def candidate_scores(
    queries: Tensor,
    docs: Tensor,
    quantizer: Callable[[Tensor], Tensor | tuple],
    *,
    doc_matrix: Tensor | None = None,
    similarity: str = "ip",
) -> tuple[Tensor, Tensor]:
    """``(student_scores, teacher_scores)``, each ``[N, L]``, for ``queries [N, D]`` and
    candidates ``docs``: ``[N, L, D]`` per query, ``[L, D]`` shared by all queries (in-batch
    candidates), or integer ids ``[N, L]`` / ``[L]`` into ``doc_matrix [num_docs, D]``. The
    teacher scores the dense documents and is detached; the student scores the
    reconstructions ``quantizer(docs)`` (a :class:`ProductQuantizer`, or any callable mapping
    ``[B, D]`` to ``[B, D]`` or to a tuple led by it). Queries are not quantized; their
    gradient flows through the student scores. ``similarity``: ``"ip"`` (``<q, d>``, the
    paper's choice) or ``"l2"`` (``-||q - d||^2``). Scores come back in ``queries``' dtype."""
    check_choice("similarity", similarity, SIMILARITIES)
    check_scores(queries, "queries")
    n, dim = queries.shape
    cand = _candidates(docs, doc_matrix, n, dim)
    x_hat = _quantize(quantizer, cand)
    q, d, r = upcast_all(queries, cand.detach(), x_hat)
    teacher = _score(q.detach(), d, similarity)
    student = _score(q, r, similarity)
    return student.to(queries.dtype), teacher.to(queries.dtype)


register(
    "distill_vq",
    kind="loss",
    family="distillation",
    papers=(51,),
    summary="Distill-VQ: listwise KL (ListNet) from dense to quantized retrieval scores; "
    "RankNet and Margin-MSE variants.",
    defaults={"temperature": 1.0, "kind": "listwise_kl"},
    function=distill_vq_loss,
    module=DistillVQLoss,
)
