"""InfoNCE and SupCon with memory linear in the batch: the chunked paths of
:func:`~losskit.embedding.info_nce_loss` and :func:`~losskit.embedding.supcon_loss`.

Both losses split per anchor ``i`` into a log-partition term and a positive term,

``l_i = LSE_{a in A(i)}(s_ia / T) - 1/|P(i)| sum_{p in P(i)} s_ip / T``,

with similarities ``s_ia = <z_i, z_a>`` (cosine when ``normalize=True``), candidates ``A(i)``
and positives ``P(i)`` as in ``losskit.embedding._common``. The positive term is linear in the
similarities, so it is computed from ``O((N + M) D)`` tensors: ``<z_i, k_p(i)>`` for an index of
positives, ``<z_i, sum_{p: y_p = y_i} z_p>`` (less the anchor itself when it is among the
candidates) for labels. The log-partition term is a custom autograd function that walks the
keys in chunks of ``chunk_size`` columns: the forward pass keeps a running per-anchor
logsumexp and saves only the ``N`` results; the backward pass recomputes each ``[N, chunk]``
block of similarities and accumulates ``dQ += softmax_block @ K_block`` and
``dK_block = softmax_block.T @ Q`` (the recomputation scheme of GradCache and Cut Cross-Entropy).
No ``[N, M]`` tensor is ever built: peak memory is ``O((N + M) D + N * chunk_size)`` against
``O(N M)`` for the full path, for one extra ``N x M x D`` matrix product (the similarities
recomputed in the backward pass). The default ``chunk_size=None`` takes ``2**21 // N`` columns,
so a block holds at most ``2**21`` similarities (8 MiB in float32) and the memory beyond the
inputs and their gradients stays constant as the batch grows. Blocks that small also stay in
the allocator's reusable range on the CPU: there this path is as fast as the full one at a few
hundred anchors and faster beyond (``benchmarks/embedding.py``).

Semantics are those of the full functions: the same reductions (an anchor without a positive
gives 0 and drops out of ``"mean"``; an all-empty batch gives 0 with zero gradient), float32 or
wider internals, the result in the input dtype. The values agree with the full path up to
float rounding (the positive term is summed in a different order). Not offered here because
they are ``[N, M]`` inputs themselves: ``positive_mask`` and ``candidate_mask`` (use the full
functions, or express several positives per query as labels with :func:`chunked_supcon_loss`).
The chunked functions are once differentiable (no double backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from losskit._core.checks import check_number, check_reduction, checks_enabled
from losskit._core.precision import upcast_all
from losskit.embedding._common import (
    check_embeddings,
    check_labels,
    check_temperature,
    reduce_anchors,
)

BLOCK_ELEMENTS = 2**21


def _block(q: Tensor, k: Tensor, start: int, stop: int, t: float, exclude_self: bool) -> Tensor:
    """Logits ``q @ k[start:stop].T / t``, with ``-inf`` on the anchor's own column."""
    logits = (q @ k[start:stop].T).div_(t)
    if exclude_self and start < q.shape[0]:
        rows = torch.arange(start, min(stop, q.shape[0]), device=q.device)
        logits[rows, rows - start] = float("-inf")
    return logits


class _ChunkedLogSumExp(torch.autograd.Function):
    """``LSE_a (q_i . k_a / t)`` per row ``i``, over key chunks (``a != i`` when
    ``exclude_self``); saves ``q``, ``k`` and the ``N`` results only."""

    @staticmethod
    def forward(ctx, q, k, t, chunk_size, exclude_self):  # type: ignore[override]
        lse = q.new_full((q.shape[0],), float("-inf"))
        for start in range(0, k.shape[0], chunk_size):
            block = _block(q, k, start, start + chunk_size, t, exclude_self)
            lse = torch.logaddexp(lse, torch.logsumexp(block, dim=1))
        ctx.save_for_backward(q, k, lse)
        ctx.t, ctx.chunk_size, ctx.exclude_self = t, chunk_size, exclude_self
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        q, k, lse = ctx.saved_tensors
        t, chunk_size, exclude_self = ctx.t, ctx.chunk_size, ctx.exclude_self
        # a row with no candidate at all has lse = -inf and an all -inf block: softmax 0
        shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[:, None]
        scale = (grad / t)[:, None]
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.empty_like(k) if need_k else None
        for start in range(0, k.shape[0], chunk_size):
            stop = start + chunk_size
            p = _block(q, k, start, stop, t, exclude_self).sub_(shift).exp_().mul_(scale)
            if dq is not None:
                dq.addmm_(p, k[start:stop])
            if dk is not None:
                torch.mm(p.T, q, out=dk[start:stop])
        return dq, dk, None, None, None


def _chunk(chunk_size: int | None, n: int) -> int:
    """``chunk_size`` validated; ``None`` picks ``BLOCK_ELEMENTS // n`` columns, so that a
    block holds at most ``BLOCK_ELEMENTS`` similarities (8 MiB in float32) whatever ``n``."""
    if chunk_size is None:
        return max(1, BLOCK_ELEMENTS // n)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(check_number("chunk_size", chunk_size, low=1))


def _reduce(per_anchor: Tensor, has_pos: Tensor, reduction: str, dtype: torch.dtype) -> Tensor:
    """The embedding package's reduction (see ``losskit.embedding._common``)."""
    per_anchor = torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor))
    return reduce_anchors(per_anchor, has_pos, reduction).to(dtype)


def chunked_info_nce_loss(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None = None,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """:func:`~losskit.embedding.info_nce_loss` of ``query[N, D]`` against ``keys[M, D]``
    without an ``[N, M]`` matrix: ``l_i = LSE_j(s_ij / T) - s_ip(i) / T`` with
    ``positives[N]`` indexing each query's positive key (default ``arange(N)``), keys taken
    ``chunk_size`` at a time. Default ``temperature=0.07`` as in ``info_nce_loss``."""
    t = check_temperature(temperature)
    check_reduction(reduction)
    check_embeddings(query, "query")
    n, d = query.shape
    chunk = _chunk(chunk_size, n)
    check_embeddings(keys, "keys", d)
    m = keys.shape[0]
    if positives is None:
        if m < n:
            raise ValueError(
                f"keys must have at least N={n} rows when positives is not given "
                f"(keys[i] is query i's positive), got {m}"
            )
        positives = torch.arange(n, device=query.device)
    check_labels(positives, n, "positives")
    if checks_enabled() and (bool((positives < 0).any()) or bool((positives >= m).any())):
        raise ValueError(f"positives must index keys in [0, {m})")
    q, k = upcast_all(query, keys)
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    lse = _ChunkedLogSumExp.apply(q, k, t, chunk, False)
    per_anchor = lse - (q * k[positives]).sum(dim=1) / t
    has_pos = torch.ones(n, dtype=torch.bool, device=query.device)
    return _reduce(per_anchor, has_pos, reduction, query.dtype)


def chunked_supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """:func:`~losskit.embedding.supcon_loss` (L_out) of ``embeddings[N, D]`` with integer
    ``labels[N]`` against ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self
    excluded) without an ``[N, M]`` matrix; candidates taken ``chunk_size`` at a time. The
    positive term uses per-class sums of the candidates. Default ``temperature=0.1`` as in
    ``supcon_loss``."""
    t = check_temperature(temperature)
    check_reduction(reduction)
    check_embeddings(embeddings, "embeddings")
    n, d = embeddings.shape
    chunk = _chunk(chunk_size, n)
    check_labels(labels, n, "labels")
    if (ref_embeddings is None) != (ref_labels is None):
        missing = "ref_labels" if ref_labels is None else "ref_embeddings"
        raise ValueError(f"{missing} must be given with the other ref_ argument")
    exclude_self = ref_embeddings is None
    if exclude_self:
        (q,) = upcast_all(embeddings)
        q = F.normalize(q, dim=1) if normalize else q
        k, ref_labels = q, labels
    else:
        check_embeddings(ref_embeddings, "ref_embeddings", d)
        check_labels(ref_labels, ref_embeddings.shape[0], "ref_labels")
        q, k = upcast_all(embeddings, ref_embeddings)
        if normalize:
            q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    # positives of anchor i: the candidates of its class; class sums and counts over the keys
    classes, ids = torch.unique(torch.cat([labels, ref_labels]), return_inverse=True)
    q_ids, k_ids = ids[:n], ids[n:]
    class_sum = k.new_zeros(classes.numel(), d).index_add(0, k_ids, k)
    class_count = torch.bincount(k_ids, minlength=classes.numel())
    pos_vec = class_sum[q_ids]
    count = class_count[q_ids]
    if exclude_self:
        pos_vec = pos_vec - k
        count = count - 1
    has_pos = count > 0
    pos_mean = (q * pos_vec).sum(dim=1) / count.clamp_min(1).to(q.dtype)
    lse = _ChunkedLogSumExp.apply(q, k, t, chunk, exclude_self)
    return _reduce(lse - pos_mean / t, has_pos, reduction, embeddings.dtype)


__all__ = ["chunked_info_nce_loss", "chunked_supcon_loss"]
