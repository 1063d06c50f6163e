"""EnsLoss: stochastic calibrated loss ensembles (paper 16), binary classification.

Instead of one fixed surrogate ``phi(z)`` of the margin ``z_i = y_i f(x_i)`` (``y = +-1``),
every call draws a random *loss derivative* ``g`` that keeps the two conditions making a
convex surrogate classification-calibrated: ``phi'`` non-decreasing in ``z`` (convexity) and
``phi'(0) < 0`` (calibration). The recipe of the reference code, per batch of ``N`` samples:

1. ``eps ~ N(0, 1)^N`` and ``g~ = -BoxCoxInv_lam(eps)``, where
   ``BoxCoxInv_lam(e) = max(1 + lam e, 0)^(1/lam)`` and ``BoxCoxInv_0(e) = exp(e)``;
2. sort ``g~`` ascending, clamp it to ``>= -1`` and hand it out by the rank of ``z``
   (the smallest margin gets the most negative derivative);
3. ``g_i <- g_i / z_i`` where ``z_i > 1`` (a super-linearly decaying tail), then ``g -= 1e-6``.

The per-sample loss is ``g_i.detach() * z_i``, so ``d loss_i / d f_i = g_i y_i`` exactly
(``/ N`` under ``"mean"``): the loss value is only a vehicle for the random gradient. ``g`` is
non-decreasing in ``z`` within the batch, lies in ``[-1 - 1e-6, -1e-6]`` (strictly below
``-1e-6`` for ``lam <= 0``), and ``g_i z_i`` stays bounded for ``z_i > 1``.

Inputs: ``scores[N]`` or ``[N, 1]`` (one real score per sample) and an integer ``target[N]``
in ``{0, 1}`` or in ``{-1, +1}`` (``1`` is the positive class in both conventions; mixing
``0`` and ``-1`` is an error). ``weight[2]`` weights sample ``i`` by ``weight[class_i]``
(class 0 = negative, 1 = positive) as in ``_core/reduction.py``. There is no ``ignore_index``:
the ranks are taken over the whole batch, so drop unwanted samples before the call.

Randomness: ``eps`` is drawn as ``torch.randn(N, generator=generator, dtype=torch.float32)``
on the generator's device (the global generator on the scores' device when ``generator`` is
``None``) and moved to the scores' device, so a seeded CPU generator gives the same
derivatives on every device. The paper (and this module) is binary only: it defines no
multiclass extension. Defaults from the paper's code: ``lam = 0`` (``g~ = -exp(eps)``).
Relation to fixed losses: logistic (BCE), hinge and exponential losses are single convex
calibrated surrogates whose derivative in ``z`` is fixed; EnsLoss draws a new one per batch
(the fixed ones are not duplicated here: ``F.binary_cross_entropy_with_logits`` is one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from losskit._core.checks import (
    check_class_weight,
    check_number,
    check_reduction,
    check_scores,
    checks_enabled,
)
from losskit._core.precision import upcast
from losskit._core.reduction import reduce_loss, sample_weights
from losskit._core.registry import register

_SHIFT = 1e-6


def _check_binary(scores: Tensor, target: Tensor) -> Tensor:
    """Validate ``scores[N]``/``[N, 1]`` and a ``{0,1}`` or ``{-1,+1}`` integer target;
    return the scores as ``[N]``."""
    if isinstance(scores, Tensor) and scores.ndim == 1:
        scores = scores[:, None]
    check_scores(scores, "scores", min_classes=1)
    if scores.shape[1] != 1:
        raise ValueError(f"scores must have shape [N] or [N, 1], got {tuple(scores.shape)}")
    n = scores.shape[0]
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer labels, got dtype {target.dtype}")
    if tuple(target.shape) != (n,):
        raise ValueError(
            f"target must have shape ({n},) to match scores, got {tuple(target.shape)}"
        )
    if checks_enabled():
        bad = (target != 1) & (target != 0) & (target != -1)
        if bool(bad.any()):
            raise ValueError(f"target must be in {{0, 1}} or {{-1, +1}}, got {target[bad][0]}")
        if bool((target == 0).any()) and bool((target == -1).any()):
            raise ValueError("target mixes the {0, 1} and {-1, +1} conventions (holds 0 and -1)")
    return scores[:, 0]


def _boxcox_inv(eps: Tensor, lam: float) -> Tensor:
    if lam == 0:
        return torch.exp(eps)
    return torch.clamp(1.0 + lam * eps, min=0.0) ** (1.0 / lam)


def _draw(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    if generator is None:
        return torch.randn(n, dtype=torch.float32, device=device)
    eps = torch.randn(n, generator=generator, dtype=torch.float32, device=generator.device)
    return eps.to(device)


def ens_loss(
    scores: Tensor,
    target: Tensor,
    *,
    lam: float = 0.0,
    weight: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> Tensor:
    """EnsLoss of paper 16 (see the module docstring): ``g.detach() * y f`` per sample with a
    random calibrated derivative ``g`` drawn from ``generator``."""
    lam = check_number("lam", lam, low_open=True, high_open=True)
    check_reduction(reduction)
    f = upcast(_check_binary(scores, target))
    cls = (target == 1).long()
    check_class_weight(weight, 2)
    y = cls.to(f.dtype) * 2 - 1
    z = y * f
    with torch.no_grad():
        zd = z.detach()
        eps = _draw(zd.shape[0], generator, zd.device).to(zd.dtype)
        g_sorted = torch.sort(-_boxcox_inv(eps, lam)).values.clamp(min=-1.0)
        order = torch.sort(zd, stable=True).indices
        g = torch.empty_like(zd).scatter_(0, order, g_sorted)
        g = torch.where(zd > 1, g / zd, g) - _SHIFT
    w, _ = sample_weights(cls, None if weight is None else weight.to(f.dtype), None)
    return reduce_loss(g * z, reduction, w).to(scores.dtype)


class EnsLoss(nn.Module):
    """Module form of :func:`ens_loss`. It owns a CPU ``torch.Generator`` seeded with ``seed``
    (the global generator when ``seed`` is ``None``); its state is saved in ``state_dict``
    so a resumed run draws the same derivatives. ``weight`` is a buffer."""

    def __init__(
        self,
        lam: float = 0.0,
        seed: int | None = None,
        *,
        weight: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.lam = check_number("lam", lam, low_open=True, high_open=True)
        self.reduction = check_reduction(reduction)
        check_class_weight(weight, 2)
        self.generator: torch.Generator | None = None
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
            self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", weight)

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        return ens_loss(
            scores,
            target,
            lam=self.lam,
            weight=self.weight,
            generator=self.generator,
            reduction=self.reduction,
        )

    def get_extra_state(self) -> Any:
        return {} if self.generator is None else {"rng_state": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        if "rng_state" in state:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["rng_state"])


register(
    "ensloss",
    kind="loss",
    family="classification",
    papers=(16,),
    summary="Binary loss ensemble: a random convex, calibrated loss derivative per batch.",
    defaults={"lam": 0.0},
    function=ens_loss,
    module=EnsLoss,
)
