"""COMIC's head/tail balanced classifier (paper 19, "Balance").

In ``wannature/COMIC`` (``models/BalancedlNetwork.py``, ``utils/dataloader.py``, the
``*NormClassifier.py`` models, ``config/coco/resnet50_plt.yaml``) head and tail are not split by
label: three branches see the same labels but differently *sampled* data.

- **head** branch: instance sampling (the data as it comes, dominated by head labels);
- **tail** branch: "reverse" sampling: a label drawn with probability ``∝ 1 / n_c``, then a
  sample among that label's positives;
- **balanced** branch: a label drawn uniformly, then a sample among its positives.

Each branch is a causal-norm cosine classifier ``z = s <x/|x|, w_c/(|w_c| + g)>`` (``s = 16``,
``g = 1/32``). With ``c`` the unit direction of a moving average of the features and
``cos = <x/|x|, c>``, the head branch also gives *effect* logits from ``x/|x| - cos c`` (the
mean-feature direction removed) and the tail branch from ``x/|x| + alpha cos c`` (amplified,
``alpha = 2``); the corrector sees those, the modifier loss the plain logits. The training
objective sums the three branch objectives, and the balanced one also contains the mean of the
three modifier losses::

    L = sum_b [MFM_b + 0.2 RLC_b] + mean_b MFM_b        (b in head, tail, balanced)

Predictions come from the balanced branch. Choices made here (documented):

- One batch instead of three sampled ones: the tail and balanced branch losses weight sample
  ``i`` by its sampling probability over the uniform one, ``sum_{c in pos(i)} q_c / n_c``,
  normalised to mean one over the batch (:func:`branch_sample_weights`).
- One feature tensor for all branches (the code trains three backbones); the feature average is
  an exponential moving average (the code's un-normalised running sum has the same direction).
- The code's evaluation adds ``0.1 *`` an additive attention over head and tail features to the
  balanced features, but that attention is never trained (its training call is commented out);
  it is left out. The code also pairs the head features with the tail-sampled images and the
  loss with the instance-sampled labels; here every branch is scored against its own targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number
from losskit.multilabel._common import (
    Counts,
    as_class_counts,
    check_class_counts,
    finish_samples,
    prepare_multilabel,
)
from losskit.multilabel.comic import COMICLoss


class BranchLogits(NamedTuple):
    """Logits ``[N, L]`` of the three branches and the head/tail effect logits."""

    head: Tensor
    tail: Tensor
    balanced: Tensor
    head_effect: Tensor
    tail_effect: Tensor


def branch_sample_weights(
    target: Tensor, class_counts: Counts, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample weights ``[N]`` of the head, tail and balanced branches: ones, and the
    importance weights of reverse (label ``∝ 1/n_c``) and label-uniform sampling, each
    normalised to mean one over the batch (zero for a sample without a known positive)."""
    counts = as_class_counts(class_counts)
    dtype = target.dtype if target.is_floating_point() else torch.get_default_dtype()
    b = prepare_multilabel(target.to(dtype), target, mask, name="target")
    check_class_counts(counts, b.y.shape[1])
    pos = b.positives().to(b.y.dtype)
    inv = 1.0 / counts.to(device=pos.device, dtype=pos.dtype).clamp_min(1.0)
    out = [torch.ones_like(pos[:, 0])]
    for per_label in (inv * inv, inv):  # reverse: q_c ∝ 1/n_c; balanced: q_c uniform
        w = pos @ per_label
        out.append(w / w.mean().clamp_min(torch.finfo(w.dtype).tiny))
    return out[0], out[1], out[2]


class HeadTailBalancedClassifier(nn.Module):
    """Three causal-norm cosine classifiers over ``features[N, in_features]``; returns
    :class:`BranchLogits`. In training mode each call updates the moving feature average."""

    def __init__(
        self,
        in_features: int,
        num_labels: int,
        class_counts: Counts,
        *,
        scale: float = 16.0,
        norm_gamma: float = 1 / 32,
        tail_alpha: float = 2.0,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("num_labels", num_labels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.scale = check_number("scale", scale, low=0.0, low_open=True)
        self.norm_gamma = check_number("norm_gamma", norm_gamma, low=0.0)
        self.tail_alpha = check_number("tail_alpha", tail_alpha, low=0.0)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        counts = as_class_counts(class_counts)
        check_class_counts(counts, num_labels)
        bound = 1.0 / math.sqrt(in_features)
        # head, tail, balanced classifier weights
        self.weight = nn.Parameter(torch.empty(3, num_labels, in_features).uniform_(-bound, bound))
        self.register_buffer("class_counts", counts.to(torch.get_default_dtype()))
        self.register_buffer("feature_mean", torch.zeros(in_features))

    def sample_weights(
        self, target: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`branch_sample_weights` with this classifier's ``class_counts``."""
        return branch_sample_weights(target, self.class_counts, mask)

    def forward(self, features: Tensor) -> BranchLogits:
        d = self.weight.shape[-1]
        if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[1] != d:
            got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features must be a tensor of shape [N, {d}], got {got}")
        if self.training:
            with torch.no_grad():
                batch_mean = features.detach().mean(dim=0).to(self.feature_mean.dtype)
                self.feature_mean.lerp_(batch_mean, 1.0 - self.momentum)
        x = F.normalize(features, dim=1)
        w = self.weight / (self.weight.norm(dim=-1, keepdim=True) + self.norm_gamma)
        c = F.normalize(self.feature_mean.to(x.dtype), dim=0)
        head, tail, balanced = (self.scale * x @ w[k].T for k in range(3))
        cos = (x @ c)[:, None]
        head_effect = head - self.scale * cos * (w[0] @ c)
        tail_effect = tail + self.scale * self.tail_alpha * cos * (w[1] @ c)
        return BranchLogits(head, tail, balanced, head_effect, tail_effect)


def head_tail_balanced_loss(
    branches: BranchLogits,
    target: Tensor,
    *,
    criterion: COMICLoss | Sequence[COMICLoss],
    mask: Tensor | None = None,
    sample_weights: Sequence[Tensor] | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``sum_b w_b (MFM_b + lambda RLC_b) + mean_b w_b MFM_b`` per sample, then ``reduction``.

    ``criterion``: one :class:`COMICLoss` or one per branch (head, tail, balanced; the code keeps
    a separate corrector state per branch). The corrector of the head and tail branches sees the
    effect logits. ``sample_weights``: three ``[N]`` tensors (e.g. from
    :func:`branch_sample_weights`); ``None`` weighs every sample 1."""
    b = prepare_multilabel(branches.balanced, target, mask, reduction=reduction)
    crits = tuple(criterion) if isinstance(criterion, Sequence) else (criterion,) * 3
    weights = (None,) * 3 if sample_weights is None else tuple(sample_weights)
    if len(crits) != 3 or len(weights) != 3:
        raise ValueError("criterion and sample_weights must give one entry per branch (3)")
    n = b.x.shape[0]
    for w in weights:
        if w is not None and (not isinstance(w, Tensor) or tuple(w.shape) != (n,)):
            raise ValueError(f"sample_weights must be three tensors of shape ({n},)")
    plain = (branches.head, branches.tail, branches.balanced)
    corrected = (branches.head_effect, branches.tail_effect, branches.balanced)
    total = b.x.new_zeros(n)
    for crit, z, z_corr, w in zip(crits, plain, corrected, weights, strict=True):
        # the branch's own modifier term plus its share of the mean over the three branches
        branch = crit.modifier(z, target, mask).to(total.dtype) * (4.0 / 3.0)
        if crit.corrector_active:
            rlc = crit.corrector.loss(z_corr, target, mask).to(total.dtype)
            branch = branch + crit.corrector_weight * rlc
        total = total + (branch if w is None else branch * w.to(total.dtype))
    return finish_samples(total, b, reduction)
