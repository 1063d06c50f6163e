"""Cross-rank candidates for the embedding losses.

``gather_with_grad(x)`` concatenates ``x`` from every rank of the default process group along
dim 0, **in rank order**: rank ``r``'s rows sit at ``offsets[r] : offsets[r] + n_r`` (with
equal local sizes ``n``: ``r*n : (r+1)*n``). Ranks may hold different numbers of rows; the
trailing dimensions, dtype and device must agree. Without an initialised process group it
returns ``x`` itself and warns once per process.

Use: anchors stay local, candidates are gathered::

    keys_all = gather_with_grad(keys)                      # [W*n, D]
    pos = torch.arange(n) + dist.get_rank() * n            # local query i <-> global key
    loss = info_nce_loss(query, keys_all, pos)
    loss = supcon_loss(emb, y, ref_embeddings=gather_with_grad(emb),
                       ref_labels=gather_with_grad(y))      # class ids need no offset

Note that ``supcon_loss`` with ``ref_*`` does not exclude the anchor's own entry (it is in
the gathered refs); the single-process equivalent is ``supcon_loss(E, Y, ref_embeddings=E,
ref_labels=Y)`` on the concatenated batch, not the default self-excluded ``supcon_loss(E, Y)``.

Gradient (full, not "local only"): the backward pass sums the gradient that every rank's
loss sends to each gathered row (an all-reduce) and returns rank ``r`` its own slice. So the
gradient rank ``r`` sees for a local row ``z_j`` is ``sum_{r'} dL_{r'}/dz_j``, where ``L_{r'}``
is rank ``r'``'s loss, including ``z_j``'s role as another rank's candidate. Every rank must
call ``backward`` (it is a collective). Gathered integer tensors (labels) carry no gradient.

Scale against one process on the concatenated batch (``W`` ranks, ``L`` the single-process
loss, ``n_r`` local anchors on rank ``r``):

- ``reduction="sum"``: ``L = sum_r L_r``, so each rank's gradient w.r.t. its local rows is
  exactly ``dL/dz_j`` (factor 1). DDP then *averages* the parameter gradients over ranks,
  giving ``1/W`` of the single-process parameter gradient; multiply the loss by ``W`` to undo.
- ``reduction="mean"`` with the same number ``c`` of anchors-with-a-positive on every rank
  (e.g. equal ``n`` and every anchor has a positive): ``L = (1/W) sum_r L_r``, so each rank's
  gradient w.r.t. its local rows is ``W * dL/dz_j``, and the mean of the per-rank losses is
  ``L``. DDP's averaging of parameter gradients then gives exactly the single-process
  parameter gradient (``(1/W) * sum_r sum_{j in r} W dL/dz_j dz_j/dtheta``).
- ``reduction="mean"`` with unequal counts ``c_r``: the ranks' means are weighted
  ``1/c_r`` instead of ``1/sum c_r``; no constant factor relates the two. Use ``"sum"`` and
  divide by the all-reduced count for an exact match.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_with_grad", "sum_across_ranks", "world_size"]

_warned = False


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _gather(x: Tensor) -> tuple[Tensor, int, int]:
    """All-gather (no autograd) in rank order; also this rank's start row and row count."""
    world = dist.get_world_size()
    rank = dist.get_rank()
    x = x.contiguous()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    biggest = max(counts)
    padded = x
    if x.shape[0] < biggest:  # all_gather needs equal shapes
        padded = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))], dim=0)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)], dim=0)
    return out, sum(counts[:rank]), counts[rank]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        out, ctx.start, ctx.n = _gather(x)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.n]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All-gather ``tensor`` along dim 0 over the default process group, in rank order.

    The result has ``sum_r n_r`` rows (rank ``r``'s at ``sum_{q<r} n_q`` onwards). Gradients
    flow back to every rank's own slice, summed over all ranks' losses (see the module
    docstring for the scale). Identity (with one warning per process) when
    ``torch.distributed`` is unavailable or not initialised.
    """
    global _warned
    if not isinstance(tensor, Tensor):
        raise ValueError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim == 0:
        raise ValueError("tensor must have at least one dimension (gathered along dim 0)")
    if not _is_initialized():
        if not _warned:
            _warned = True
            warnings.warn(
                "gather_with_grad: torch.distributed is not initialised; returning the "
                "local tensor unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
        return tensor
    if dist.get_world_size() == 1:
        return tensor
    if tensor.requires_grad:
        return _GatherWithGrad.apply(tensor)
    return _gather(tensor)[0]


def world_size() -> int:
    """The number of ranks of the default process group; 1 when not initialised."""
    return dist.get_world_size() if _is_initialized() else 1


def sum_across_ranks(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all ranks, without gradient (for counts and
    normalisers that must be global, e.g. ``tcm_loss(..., sync_counts=True)``). A detached
    copy of ``tensor`` when not distributed."""
    out = tensor.detach().clone()
    if _is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
