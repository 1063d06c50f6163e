"""FerKD: partial soft-hard label adaptation and stabilised SelfMix (paper 27).

FerKD distils from labels stored per random crop (region) of each training image, as FKD
does: the rows of ``teacher[N, C]`` are the teacher's outputs on ``N`` crops (logits, or
probabilities with ``teacher_probs=True``) and ``target[N]`` is the ground-truth class of the
image each crop was cut from. With the teacher's probability of that class on the crop,
``c_i = p_T(y_i | crop_i)``, the label of crop ``i`` is

- ``p_T(. | crop_i)`` (the teacher's soft label) when ``c_i >= threshold``: easy and hard
  positives, where the teacher's prediction is reliable;
- the softened hard label ``(1 - smoothing) onehot(y_i) + smoothing / C`` when
  ``discard_below <= c_i < threshold``: the less-confident regions (backgrounds, hard
  negatives) are calibrated to be context of the ground-truth class;
- none (the crop is dropped from the loss and from the ``"mean"`` denominator) when
  ``c_i < discard_below``.

The student is trained with the soft cross-entropy ``-sum_c q_c log softmax(s)_c`` on these
labels (FKD's ``Soft_CrossEntropy``; its gradient is ``softmax(s) - q``). Without a
``target`` no label is adapted and this is FKD's soft cross-entropy on the teacher's labels;
with ``threshold=0`` it is the same with a target; with ``threshold > 1`` every crop gets the
label-smoothed ground truth (cross-entropy with label smoothing).

:func:`selfmix` is the stabilised mixing: each crop is mixed (CutMix by default, or Mixup)
with another crop *of the same image* (``group`` holds each crop's image id), and the labels
are mixed with the same proportion, so the mixed label stays close to the image's own labels
and varies far less than with crops of other images. When all crops of an image share one
label, the mixed label is that label.

*Paper vs this implementation.* The released material (``szq0214/FKD``: ``FerKD/`` README,
soft-label zoo, FKD training code) contains neither the calibration nor SelfMix, and the
paper's thresholds and smoothing value could not be checked here. The rule above is the
abstract's ("calibrates the less-confident regions ... using softened hard ground-truth
labels"; "mixing similar regions within the same image"), with library defaults
``threshold=0.2``, ``smoothing=0.1`` (the usual label-smoothing value), ``discard_below=0``
(nothing dropped) and ``Beta(1, 1)`` CutMix, all of them hyperparameters. The paper ranks the
stored crops of an image by this confidence; a per-image fraction is a per-image threshold.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from losskit._core.checks import (
    check_choice,
    check_class_target,
    check_number,
    check_scores,
)
from losskit._core.precision import upcast
from losskit._core.reduction import safe_target, sample_weights
from losskit._core.registry import register
from losskit.distillation._common import (
    DistillLossModule,
    finish_distill,
    prepare_distill,
)

MODES = ("cutmix", "mixup")


def _check_rule(threshold: float, smoothing: float, discard_below: float) -> tuple[float, ...]:
    thr = check_number("threshold", threshold, low=0.0, high=math.inf, high_open=True)
    eps = check_number("smoothing", smoothing, low=0.0, high=1.0)
    low = check_number("discard_below", discard_below, low=0.0, high=1.0)
    if low > thr:
        raise ValueError(f"discard_below must be <= threshold ({thr}), got {discard_below!r}")
    return thr, eps, low


def _adapt(log_q: Tensor, y: Tensor, thr: float, eps: float) -> tuple[Tensor, Tensor]:
    """Labels with the less-confident rows replaced by the smoothed one-hot, and the
    confidences ``c_i`` (teacher probability of the ground-truth class)."""
    q = log_q.exp()
    conf = q.gather(1, y[:, None]).squeeze(1)
    hard = torch.full_like(q, eps / q.shape[1]).scatter_add_(
        1, y[:, None], torch.full_like(conf[:, None], 1 - eps)
    )
    return torch.where((conf < thr)[:, None], hard, q), conf


def ferkd_soft_labels(
    teacher: Tensor,
    target: Tensor,
    *,
    teacher_probs: bool = False,
    threshold: float = 0.2,
    smoothing: float = 0.1,
    ignore_index: int = -100,
) -> Tensor:
    """FerKD's adapted crop labels ``[N, C]`` (rows sum to 1). Rows whose target is
    ``ignore_index`` keep the teacher's label. Returned in the compute dtype (>= float32)."""
    thr, eps, _ = _check_rule(threshold, smoothing, 0.0)
    check_scores(teacher, "teacher")
    if teacher_probs:
        check_class_target(teacher, teacher, name="teacher")
    check_class_target(target, teacher, ignore_index=ignore_index, allow_soft=False)
    t = upcast(teacher.detach())
    log_q = torch.log_softmax(torch.log(t) if teacher_probs else t, dim=1)
    _, keep = sample_weights(target, None, ignore_index)
    labels, _ = _adapt(log_q, safe_target(target, keep), thr, eps)
    if keep is not None:
        labels = torch.where(keep[:, None], labels, log_q.exp())
    return labels


def ferkd_loss(
    student: Tensor,
    teacher: Tensor,
    target: Tensor | None = None,
    *,
    teacher_probs: bool = False,
    threshold: float = 0.2,
    smoothing: float = 0.1,
    discard_below: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Soft cross-entropy of the student on FerKD's adapted crop labels (see the module
    docstring); without ``target`` the teacher's labels are used as they are."""
    thr, eps, low = _check_rule(threshold, smoothing, discard_below)
    if target is None and low > 0:
        raise ValueError("target (class indices [N]) is required when discard_below > 0")
    b = prepare_distill(
        student, teacher, target, teacher_probs=teacher_probs, ignore_index=ignore_index,
        reduction=reduction,
    )  # fmt: skip
    log_q = b.teacher_log_probs()
    if b.y is None:
        labels = log_q.exp()
    else:
        labels, conf = _adapt(log_q, b.y, thr, eps)
        if low > 0:
            kept = (conf >= low).to(conf.dtype)
            b.w = kept if b.w is None else b.w.to(conf.dtype) * kept
    loss = -(labels * b.student_log_probs()).sum(dim=1)
    return finish_distill(loss, b, reduction)


def _partners(group: Tensor | None, n: int, generator: torch.Generator | None) -> Tensor:
    """For each item another item of its group: a random cycle within every group."""
    g = torch.zeros(n, dtype=torch.long) if group is None else group.detach().cpu().long()
    order = torch.randperm(n, generator=generator)
    order = order[torch.argsort(g[order], stable=True)]
    _, counts = torch.unique_consecutive(g[order], return_counts=True)
    size = torch.repeat_interleave(counts, counts)
    start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    nxt = start + (torch.arange(n) - start + 1) % size
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order[nxt]
    return partner


def selfmix(
    inputs: Tensor,
    soft_labels: Tensor,
    *,
    group: Tensor | None = None,
    lam: float | None = None,
    alpha: float = 1.0,
    mode: str = "cutmix",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Stabilised SelfMix: mix every crop with another crop of the same image.

    ``inputs[N, ...]`` (``[N, ..., H, W]`` for CutMix), ``soft_labels[N, C]`` (rows that sum
    to 1), ``group[N]`` the image id of each crop (``None``: one image). ``lam`` is the share
    of the crop itself, drawn from ``Beta(alpha, alpha)`` when ``None``; for CutMix it is then
    set to the exact share of the crop's pixels outside the pasted box. Returns the mixed
    inputs and ``lam * q_i + (1 - lam) * q_partner``. Deterministic for a seeded CPU
    ``generator``.
    """
    check_choice("mode", mode, MODES)
    a = check_number("alpha", alpha, low=0.0, low_open=True, high=1e6)
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise ValueError("inputs must be a floating torch.Tensor [N, ...]")
    check_scores(soft_labels, "soft_labels")
    check_class_target(soft_labels, soft_labels, name="soft_labels")
    n = soft_labels.shape[0]
    if inputs.ndim < (3 if mode == "cutmix" else 1) or inputs.shape[0] != n:
        want = "[N, ..., H, W]" if mode == "cutmix" else "[N, ...]"
        raise ValueError(f"inputs must have shape {want} with N = {n}, got {tuple(inputs.shape)}")
    if group is not None and (
        not isinstance(group, Tensor) or group.is_floating_point() or tuple(group.shape) != (n,)
    ):
        raise ValueError(f"group must be an integer tensor of shape ({n},)")
    if lam is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        lam = float(np.random.default_rng(seed).beta(a, a))
    lam = check_number("lam", lam, low=0.0, high=1.0)
    partner = _partners(group, n, generator).to(inputs.device)
    other = inputs[partner]
    if mode == "mixup":
        mixed = lam * inputs + (1 - lam) * other
    else:
        h, w = inputs.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = (int(torch.randint(0, s, (1,), generator=generator)) for s in (h, w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        box = torch.zeros(h, w, dtype=torch.bool, device=inputs.device)
        box[y0:y1, x0:x1] = True
        mixed = torch.where(box, other, inputs)
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    labels = lam * soft_labels + (1 - lam) * soft_labels[partner.to(soft_labels.device)]
    return mixed, labels


class FerKDLoss(DistillLossModule):
    """Module form of :func:`ferkd_loss`; ``forward(student, teacher, target=None)``."""

    def __init__(
        self,
        *,
        threshold: float = 0.2,
        smoothing: float = 0.1,
        discard_below: float = 0.0,
        teacher_probs: bool = False,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction, ignore_index, teacher_probs)
        self.threshold, self.smoothing, self.discard_below = _check_rule(
            threshold, smoothing, discard_below
        )

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor | None = None) -> Tensor:
        return ferkd_loss(
            student, teacher, target, threshold=self.threshold, smoothing=self.smoothing,
            discard_below=self.discard_below, **self.common(),
        )  # fmt: skip


register(
    "ferkd",
    kind="loss",
    family="distillation",
    papers=(27,),
    summary="FerKD: soft cross-entropy on crop labels where less-confident crops get the "
    "label-smoothed ground truth instead of the teacher's soft label.",
    defaults={"threshold": 0.2, "smoothing": 0.1, "discard_below": 0.0},
    function=ferkd_loss,
    module=FerKDLoss,
)
