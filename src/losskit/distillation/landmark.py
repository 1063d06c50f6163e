"""KD-Loss for facial landmark regression with a tolerant and a tough teacher (paper 29).

Inputs (coordinates, not class logits):

============  ============================  =========================================
argument      shape                         meaning
============  ============================  =========================================
``student``   ``[N, K, 2]`` or ``[N, 2K]``  the student's landmarks ``x_pr``
``tolerant``  same as ``student``           the Tolerant-Teacher's ``x_tol`` (trained
                                            on soft, ASM-smoothed landmarks)
``tough``     same as ``student``           the Tough-Teacher's ``x_tough`` (trained
                                            on the ground-truth, hard landmarks)
``target``    same as ``student``           the ground truth ``x_gt``
============  ============================  =========================================

Any ``[N, ...]`` layout works: every coordinate is treated on its own. The teachers and the
ground truth never receive a gradient. Per coordinate, with ``e = x_pr - x_gt``:

1. Each teacher is *reflected* onto the student's side of the ground truth,
   ``x'_T = x_gt + sign(e) |x_T - x_gt|``, with a band point
   ``b_T = x_gt + sign(e) * band * |x_T - x_gt|`` (``band = 0.15``).
2. Assistive weight map: ``alpha_T`` where the student lies beyond the teacher
   (``sign(x_pr - x'_T) sign(x'_T - x_gt) > 0``), ``alpha_neg_T`` (negative) where it lies
   between ``b_T`` and ``x'_T`` (``sign(x'_T - x_pr) sign(x_pr - b_T) >= 0``, ends included),
   0 elsewhere (inside the band next to the ground truth). The two conditions are added, so
   the map takes values in ``{alpha, alpha_neg, 0, alpha + alpha_neg}``.
3. ``ALoss_T = map_T * |x'_T - x_pr|``: beyond the teacher it pulls the student back towards
   the teacher; between band and teacher its negative weight pushes the student past the
   teacher towards the ground truth.
4. Main loss, with ``d = |x_tol - x_gt|`` (the tolerant teacher's error):
   ``slope * |e|`` if ``|e| <= d`` and ``e^2 + slope * d - d^2`` otherwise (continuous at
   ``|e| = d``; ``slope = 3``).
5. ``KD-Loss = main_weight * L_main + tough_weight * ALoss_tough + tol_weight * ALoss_tol``.

The per-sample loss is the mean of this over the sample's coordinates, so
``reduction="mean"`` equals the released code's ``reduce_mean`` over the whole batch.
Defaults are the released code's (``aliprf/KD-Loss``: ``student_train.py`` and ``main.py``):
``alpha_tough=1.9, alpha_neg_tough=-0.45, alpha_tol=1.8, alpha_neg_tol=-0.4,
main_weight=2, tough_weight=tol_weight=1``. The teachers enter only through their distances
``|x_T - x_gt|``, so the loss is unchanged when the student is mirrored about the ground
truth (``e -> -e``) or a teacher is; it is 0 at ``x_pr = x_gt`` and, because of the negative
weights, can be negative elsewhere. With ``tough_weight = tol_weight = 0`` only the main loss
is left: L1 below the tolerant teacher's error, L2 above.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register

_DEFAULTS = {
    "alpha_tough": 1.9,
    "alpha_neg_tough": -0.45,
    "alpha_tol": 1.8,
    "alpha_neg_tol": -0.4,
    "main_weight": 2.0,
    "tough_weight": 1.0,
    "tol_weight": 1.0,
    "band": 0.15,
    "slope": 3.0,
}


def _check_hyper(**kw: float) -> dict[str, float]:
    out = {}
    for name, value in kw.items():
        if name.startswith("alpha_neg"):
            out[name] = check_number(name, value, high=0.0)
        elif name == "band":
            out[name] = check_number(name, value, low=0.0, high=1.0)
        elif name == "slope":
            out[name] = check_number(name, value, low=0.0, low_open=True, high=1e6)
        else:
            out[name] = check_number(name, value, low=0.0, high=1e6)
    return out


def _check_coords(x: Tensor, name: str, shape: tuple[int, ...] | None) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if shape is None:
        if x.ndim < 2 or x.shape[0] == 0 or x[0].numel() == 0:
            raise ValueError(
                f"{name} must have shape [N, K, 2] or [N, 2K] with N, K >= 1, got {tuple(x.shape)}"
            )
    elif tuple(x.shape) != shape:
        raise ValueError(f"{name} must have the student's shape {shape}, got {tuple(x.shape)}")
    check_finite(name, x)


def _assist_map(x_pr: Tensor, x_gt: Tensor, x_teacher: Tensor, a_pos: float, a_neg: float,
                band: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The reflected teacher ``x'_T`` and its weight map (step 1 and 2 of the docstring)."""
    side = torch.sign(x_pr - x_gt)
    dist = (x_teacher - x_gt).abs()
    reflected = x_gt + side * dist
    edge = x_gt + side * dist * band
    beyond = torch.sign(x_pr - reflected) * torch.sign(reflected - x_gt) > 0
    between = torch.sign(reflected - x_pr) * torch.sign(x_pr - edge) >= 0
    weight = beyond.to(x_pr.dtype) * a_pos + between.to(x_pr.dtype) * a_neg
    return reflected, weight


def landmark_kd_loss(
    student: Tensor,
    tolerant: Tensor,
    tough: Tensor,
    target: Tensor,
    *,
    alpha_tough: float = 1.9,
    alpha_neg_tough: float = -0.45,
    alpha_tol: float = 1.8,
    alpha_neg_tol: float = -0.4,
    main_weight: float = 2.0,
    tough_weight: float = 1.0,
    tol_weight: float = 1.0,
    band: float = 0.15,
    slope: float = 3.0,
    reduction: str = "mean",
) -> Tensor:
    """KD-Loss (paper 29): the tolerant-teacher main loss plus both assistive losses, one value
    per sample (mean over its coordinates) before ``reduction``."""
    h = _check_hyper(
        alpha_tough=alpha_tough, alpha_neg_tough=alpha_neg_tough, alpha_tol=alpha_tol,
        alpha_neg_tol=alpha_neg_tol, main_weight=main_weight, tough_weight=tough_weight,
        tol_weight=tol_weight, band=band, slope=slope,
    )  # fmt: skip
    check_reduction(reduction)
    _check_coords(student, "student", None)
    shape = tuple(student.shape)
    for name, x in (("tolerant", tolerant), ("tough", tough), ("target", target)):
        _check_coords(x, name, shape)
    n = shape[0]
    pr, tol, tou, gt = upcast_all(
        student.reshape(n, -1), tolerant.detach().reshape(n, -1),
        tough.detach().reshape(n, -1), target.detach().reshape(n, -1),
    )  # fmt: skip
    err = (pr - gt).abs()
    d_tol = (tol - gt).abs()
    main = torch.where(err <= d_tol, h["slope"] * err, err**2 + h["slope"] * d_tol - d_tol**2)
    ref_tou, w_tou = _assist_map(pr, gt, tou, h["alpha_tough"], h["alpha_neg_tough"], h["band"])
    ref_tol, w_tol = _assist_map(pr, gt, tol, h["alpha_tol"], h["alpha_neg_tol"], h["band"])
    per_coord = (
        h["main_weight"] * main
        + h["tough_weight"] * w_tou * (ref_tou - pr).abs()
        + h["tol_weight"] * w_tol * (ref_tol - pr).abs()
    )
    return reduce_loss(per_coord.mean(dim=1), reduction).to(student.dtype)


class LandmarkKDLoss(nn.Module):
    """Module form of :func:`landmark_kd_loss`; ``forward(student, tolerant, tough, target)``."""

    def __init__(
        self,
        *,
        alpha_tough: float = 1.9,
        alpha_neg_tough: float = -0.45,
        alpha_tol: float = 1.8,
        alpha_neg_tol: float = -0.4,
        main_weight: float = 2.0,
        tough_weight: float = 1.0,
        tol_weight: float = 1.0,
        band: float = 0.15,
        slope: float = 3.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.hyper = _check_hyper(
            alpha_tough=alpha_tough, alpha_neg_tough=alpha_neg_tough, alpha_tol=alpha_tol,
            alpha_neg_tol=alpha_neg_tol, main_weight=main_weight, tough_weight=tough_weight,
            tol_weight=tol_weight, band=band, slope=slope,
        )  # fmt: skip
        self.reduction = check_reduction(reduction)

    def forward(self, student: Tensor, tolerant: Tensor, tough: Tensor, target: Tensor) -> Tensor:
        return landmark_kd_loss(
            student, tolerant, tough, target, reduction=self.reduction, **self.hyper
        )


register(
    "landmark_kd",
    kind="loss",
    family="distillation",
    papers=(29,),
    summary="KD-Loss for landmark regression: tolerant-teacher main loss plus assistive losses "
    "that pull the student towards reflected tough/tolerant teacher predictions.",
    defaults=dict(_DEFAULTS),
    function=landmark_kd_loss,
    module=LandmarkKDLoss,
)
