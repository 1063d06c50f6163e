"""The one input contract of ``losskit.embedding``.

Two forms of input:

- **label-based** (``supcon_loss``): ``embeddings[N, D]`` (floating) and ``labels[N]``
  (integer class ids). The candidates are ``ref_embeddings[M, D]`` with ``ref_labels[M]``
  (both or neither); by default they are the batch itself, and each anchor's own entry is
  excluded from its candidates. Positives of anchor ``i`` are the candidates with its label.
  Candidates gathered across ranks are passed as ``ref_embeddings``/``ref_labels``.
- **pair-based** (``info_nce_loss``): ``query[N, D]`` and ``keys[M, D]`` with either
  ``positives[N]`` (integer index of each query's positive key; default ``arange(N)``, i.e.
  ``keys[i]`` is the positive of ``query[i]``) or ``positive_mask[N, M]`` (bool).

Both forms take an optional ``candidate_mask[N, M]`` (bool, e.g. from a miner in
``losskit.mining``): candidates where it is False are removed for that anchor, as positives
and as negatives; it is ANDed with the default self-exclusion.

Similarities ``<z_i, z_a>`` (of L2-normalised vectors when ``normalize=True``) are computed
in float32 or wider: half-precision inputs are upcast, float64 is kept; the result has the
dtype of ``embeddings`` / ``query``.

Reduction, the same for every embedding loss:

- ``"none"``: one value per anchor; an anchor without a positive gives 0 (zero gradient).
- ``"sum"``: the sum of the per-anchor values.
- ``"mean"``: the mean over the anchors that have at least one positive (others drop out);
  0 (with zero gradient) when no anchor has one, a normal event for a batch of distinct
  labels rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss


@dataclass
class PairBatch:
    """Validated inputs: ``sim[N, M]`` similarities in the compute dtype, ``pos[N, M]`` the
    positives, ``valid[N, M]`` the candidates (``None``: all), ``dtype`` the input dtype."""

    sim: Tensor
    pos: Tensor
    valid: Tensor | None
    dtype: torch.dtype


def check_embeddings(x: Tensor, name: str, dim: int | None = None) -> None:
    """A floating, finite, non-empty ``[N, D]`` tensor (``D == dim`` when given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"{name} must have {dim} features like the anchors, got shape {tuple(x.shape)}"
        )
    check_finite(name, x)


def check_labels(labels: Tensor, n: int, name: str) -> None:
    """Integer class ids of shape ``(n,)``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")


def check_temperature(temperature: float) -> float:
    return check_number("temperature", temperature, low=0.0, low_open=True)


def similarities(a: Tensor, b: Tensor, normalize: bool) -> Tensor:
    """``a @ b.T`` in float32 or wider, of L2-normalised rows when ``normalize``."""
    a, b = upcast_all(a, b)
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return a @ b.T


def check_candidate_mask(mask: Tensor | None, n: int, m: int) -> Tensor | None:
    """``None`` or a bool ``[n, m]`` tensor."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError("candidate_mask must be a bool tensor")
    if tuple(mask.shape) != (n, m):
        raise ValueError(f"candidate_mask must have shape {(n, m)}, got {tuple(mask.shape)}")
    return mask


def _and(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None or b is None:
        return a if b is None else b
    return a & b


def prepare_labels(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    *,
    normalize: bool,
    reduction: str,
    candidate_mask: Tensor | None = None,
) -> PairBatch:
    """Validate the label-based contract; positives share the anchor's label."""
    check_reduction(reduction)
    check_embeddings(embeddings, "embeddings")
    n, d = embeddings.shape
    check_labels(labels, n, "labels")
    if (ref_embeddings is None) != (ref_labels is None):
        missing = "ref_labels" if ref_labels is None else "ref_embeddings"
        raise ValueError(f"{missing} must be given with the other ref_ argument")
    valid = None
    if ref_embeddings is None:
        ref_embeddings, ref_labels = embeddings, labels
        valid = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    else:
        check_embeddings(ref_embeddings, "ref_embeddings", d)
        check_labels(ref_labels, ref_embeddings.shape[0], "ref_labels")
    valid = _and(valid, check_candidate_mask(candidate_mask, n, ref_embeddings.shape[0]))
    pos = labels[:, None] == ref_labels[None, :]
    if valid is not None:
        pos = pos & valid
    return PairBatch(
        similarities(embeddings, ref_embeddings, normalize), pos, valid, embeddings.dtype
    )


def positive_matrix(
    positives: Tensor | None,
    positive_mask: Tensor | None,
    n: int,
    m: int,
    device: torch.device,
    what: str,
) -> Tensor:
    """The bool ``[n, m]`` positives from ``positives[n]`` (an index into the ``m`` candidates,
    ``what`` naming them in errors; default ``arange(n)``) or ``positive_mask[n, m]``."""
    if positives is not None and positive_mask is not None:
        raise ValueError("positives and positive_mask are exclusive; give one of them")
    if positive_mask is not None:
        if not isinstance(positive_mask, Tensor) or positive_mask.dtype != torch.bool:
            raise ValueError("positive_mask must be a bool tensor")
        if tuple(positive_mask.shape) != (n, m):
            raise ValueError(
                f"positive_mask must have shape {(n, m)}, got {tuple(positive_mask.shape)}"
            )
        return positive_mask
    if positives is None:
        if m < n:
            raise ValueError(
                f"{what} must have at least N={n} entries when positives is not given "
                f"(entry i is anchor i's positive), got {m}"
            )
        positives = torch.arange(n, device=device)
    check_labels(positives, n, "positives")
    if checks_enabled() and (bool((positives < 0).any()) or bool((positives >= m).any())):
        raise ValueError(f"positives must index {what} in [0, {m})")
    pos = torch.zeros(n, m, dtype=torch.bool, device=device)
    pos[torch.arange(n, device=device), positives] = True
    return pos


def prepare_pairs(
    query: Tensor,
    keys: Tensor,
    positives: Tensor | None,
    positive_mask: Tensor | None,
    *,
    normalize: bool,
    reduction: str,
    candidate_mask: Tensor | None = None,
) -> PairBatch:
    """Validate the pair-based contract; ``positives[N]`` index or ``positive_mask[N, M]``."""
    check_reduction(reduction)
    check_embeddings(query, "query")
    n, d = query.shape
    check_embeddings(keys, "keys", d)
    m = keys.shape[0]
    pos = positive_matrix(positives, positive_mask, n, m, query.device, "keys")
    valid = check_candidate_mask(candidate_mask, n, m)
    if valid is not None:
        pos = pos & valid
    return PairBatch(similarities(query, keys, normalize), pos, valid, query.dtype)


def reduce_anchors(per_anchor: Tensor, has: Tensor, reduction: str) -> Tensor:
    """Per-anchor losses reduced as in the module docstring: ``"none"`` and ``"sum"`` as usual,
    ``"mean"`` over the anchors where ``has`` is true (those with a positive); 0 when there
    is none."""
    if reduction == "mean":
        return per_anchor.sum() / has.sum().clamp_min(1).to(per_anchor.dtype)
    return reduce_loss(per_anchor, reduction)


def multi_positive_nll(b: PairBatch, temperature: float, reduction: str) -> Tensor:
    """``l_i = -1/|P(i)| sum_{p in P(i)} log softmax_{a in A(i)}(s_ia / T)_p`` per anchor,
    reduced as in the module docstring. Excluded candidates and anchors without a positive
    get exactly zero gradient."""
    logits = b.sim / temperature
    if b.valid is not None:
        logits = logits.masked_fill(~b.valid, float("-inf"))
    count = b.pos.sum(dim=1)
    has_pos = count > 0
    # rows without a positive may have no candidate at all: keep their log_softmax finite
    logits = torch.where(has_pos[:, None], logits, torch.zeros_like(logits))
    log_prob = torch.log_softmax(logits, dim=1)
    picked = torch.where(b.pos, log_prob, torch.zeros_like(log_prob))
    per_anchor = -picked.sum(dim=1) / count.clamp_min(1).to(picked.dtype)
    return reduce_anchors(per_anchor, has_pos, reduction).to(b.dtype)


class EmbeddingLossModule(nn.Module):
    """Base of the module forms: validated ``temperature``, ``normalize`` and ``reduction``."""

    def __init__(self, temperature: float, normalize: bool = True, reduction: str = "mean"):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, "
            f"reduction={self.reduction!r}"
        )


class LabelLossModule(nn.Module):
    """Base of the label-form module classes: ``forward(embeddings, labels, ref_embeddings,
    ref_labels, candidate_mask)`` calls the class's ``function`` with the module attributes
    named in ``options`` (validated by the subclass's ``__init__``)."""

    function: ClassVar[Callable[..., Tensor]]
    options: ClassVar[tuple[str, ...]]

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return type(self).function(
            embeddings,
            labels,
            ref_embeddings=ref_embeddings,
            ref_labels=ref_labels,
            candidate_mask=candidate_mask,
            **{name: getattr(self, name) for name in self.options},
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.options)
