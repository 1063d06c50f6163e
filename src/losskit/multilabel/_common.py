"""The one input contract of ``losskit.multilabel``.

``scores[N, L]`` (floating: logits, or query-label similarities for dual encoders) and
``target[N, L]`` with entries in {0, 1} (bool, integer or floating dtype). ``mask[N, L]``
(bool, or floating in {0, 1}) marks the *known* entries: an unknown entry contributes nothing
to the loss and receives exactly zero gradient. Without a mask every entry is known.

Reduction, the same for every multi-label loss:

- ``"none"``: one value per sample. For losses that are a sum of per-entry terms, it is the
  mean over the sample's known entries (so without a mask ``"mean"`` equals
  ``F.binary_cross_entropy_with_logits(reduction="mean")``); a sample with no known entry
  gives 0.
- ``"sum"``: the sum of the per-sample values.
- ``"mean"``: the mean over the samples that have at least one known entry (samples with none
  drop out, as ignored samples do in ``losskit.classification``); NaN if none has.

``weight[L]`` (per-label factor) and ``pos_weight[L]`` (factor on the positive term) act as in
``torch.nn.functional.binary_cross_entropy_with_logits``: they scale entries and do not enter
any denominator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_reduction, check_scores, checks_enabled
from losskit._core.precision import upcast
from losskit._core.reduction import reduce_loss

Counts = Tensor | Sequence[float]


@dataclass
class MLBatch:
    """Validated, upcast inputs: ``x`` scores and ``y`` targets in the compute dtype,
    ``known`` the mask as 0/1 floats (``None``: all known), ``dtype`` the input dtype."""

    x: Tensor
    y: Tensor
    known: Tensor | None
    dtype: torch.dtype

    @property
    def num_known(self) -> Tensor:
        """Known entries per sample ``[N]`` (floating)."""
        if self.known is None:
            return self.x.new_full((self.x.shape[0],), float(self.x.shape[1]))
        return self.known.sum(dim=1)

    def positives(self) -> Tensor:
        """Bool ``[N, L]``: the known positive entries."""
        pos = self.y > 0.5
        return pos if self.known is None else pos & (self.known > 0)

    def negatives(self) -> Tensor:
        """Bool ``[N, L]``: the known negative entries."""
        neg = self.y < 0.5
        return neg if self.known is None else neg & (self.known > 0)


def check_binary_target(target: Tensor, scores: Tensor, name: str = "target") -> None:
    """``target`` must be a tensor shaped like ``scores`` with entries in {0, 1}."""
    if not isinstance(target, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if tuple(target.shape) != tuple(scores.shape):
        raise ValueError(
            f"{name} must have shape {tuple(scores.shape)} like the scores, "
            f"got {tuple(target.shape)}"
        )
    if target.is_complex():
        raise ValueError(f"{name} must be bool, integer or floating, got dtype {target.dtype}")
    if target.dtype == torch.bool or not checks_enabled():
        return
    off = (target != 0) & (target != 1)
    if bool(off.any()):
        raise ValueError(f"{name} entries must be 0 or 1, got {target[off][0].item()}")


def check_mask(mask: Tensor | None, scores: Tensor, name: str = "mask") -> None:
    """``mask`` (known entries) must be shaped like ``scores``, bool or 0/1 valued."""
    if mask is None:
        return
    check_binary_target(mask, scores, name=name)


def check_label_vector(v: Tensor | None, num_labels: int, name: str) -> None:
    """A per-label floating, finite, non-negative tensor ``[L]`` (or ``None``)."""
    if v is None:
        return
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape ({num_labels},)")
    if tuple(v.shape) != (num_labels,):
        raise ValueError(f"{name} must have shape ({num_labels},), got {tuple(v.shape)}")
    if checks_enabled():
        check_finite(name, v)
        if bool((v < 0).any()):
            raise ValueError(f"{name} must be non-negative")


def as_class_counts(class_counts: Counts) -> Tensor:
    """``class_counts[L]`` (positives per label in training) as a non-empty 1-D tensor of
    finite, non-negative counts. Keeps the dtype of a floating tensor (float64 otherwise) and
    its device."""
    try:
        n = torch.as_tensor(class_counts)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"class_counts must be a 1-D tensor of counts, got {class_counts!r}"
        ) from None
    n = n if n.is_floating_point() else n.to(torch.float64)
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D tensor, got shape {tuple(n.shape)}")
    check_label_vector(n, n.shape[0], "class_counts")
    return n


def check_class_counts(per_label: Tensor, num_labels: int) -> None:
    """``per_label`` (the class counts, or the weights or margins made from them) must have
    one entry per label of the scores."""
    if per_label.shape[0] != num_labels:
        raise ValueError(
            f"class_counts must have one entry per label ({num_labels}), got {per_label.shape[0]}"
        )


def prepare_multilabel(
    scores: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    reduction: str = "mean",
    name: str = "logits",
) -> MLBatch:
    """Validate the multi-label contract and upcast to the compute dtype."""
    check_reduction(reduction)
    check_scores(scores, name, min_classes=1)
    check_binary_target(target, scores)
    check_mask(mask, scores)
    x = upcast(scores)
    y = target.to(x.dtype)
    known = None if mask is None else mask.to(x.dtype)
    if known is not None and checks_enabled() and bool(known.all()):
        known = None
    return MLBatch(x, y, known, scores.dtype)


def reduce_entries(
    entry_loss: Tensor, b: MLBatch, reduction: str, weight: Tensor | None = None
) -> Tensor:
    """Reduce per-entry losses ``[N, L]``: the per-sample mean over known entries, then
    ``reduction`` over samples (see the module docstring). ``weight[L]`` scales entries.

    Unknown entries are removed with ``torch.where``, so they get exactly zero gradient even
    where their term is not finite."""
    if weight is not None:
        entry_loss = entry_loss * weight.to(entry_loss.dtype)
    if b.known is not None:
        entry_loss = torch.where(b.known > 0, entry_loss, torch.zeros_like(entry_loss))
    count = b.num_known
    per_sample = entry_loss.sum(dim=1) / count.clamp_min(1.0)
    return finish_samples(per_sample, b, reduction)


def finish_samples(per_sample: Tensor, b: MLBatch, reduction: str) -> Tensor:
    """Reduce per-sample losses ``[N]``: samples without a known entry give 0 and drop out of
    the ``"mean"``; the result has the input dtype."""
    keep = None if b.known is None else (b.num_known > 0).to(per_sample.dtype)
    return reduce_loss(per_sample, reduction, keep).to(b.dtype)


class MultiLabelLossModule(nn.Module):
    """Base of the module forms: ``reduction`` and the per-label ``weight`` buffer (so it
    moves and saves with the module)."""

    def __init__(self, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", weight)
