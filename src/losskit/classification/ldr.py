"""Label distributionally robust losses LDR-KL and ALDR-KL (paper 4).

LDR-KL is the worst case over class weights ``p`` in the simplex, with a KL penalty towards
the uniform distribution, of the margin-shifted score differences::

    psi_lam(f; y) = max_p sum_k p_k (c 1[k != y] + f_k - f_y) - lam KL(p || 1/K)
                  = lam * log( (1/K) sum_k exp((c 1[k != y] + f_k - f_y) / lam) )

computed as ``lam * (CE((f - c e_y) / lam, y) - log K)`` for class indices (the same
logsumexp with the margin moved onto the target entry, so torch's fused cross-entropy does the
work). At ``c = 0, lam = 1`` it is cross-entropy minus ``log K``; as ``lam -> 0`` it tends to
the Crammer-Singer hinge ``max_k(c 1[k != y] + f_k - f_y)`` (error at most ``lam log K``), as
``lam -> inf`` to ``mean_k(c 1[k != y] + f_k - f_y)``.

ALDR-KL gives every training sample ``i`` its own ``lam_i``, the maximiser of
``-lam KL(p_i || 1/K) - (alpha log K / (2 lam0)) (lam - lam0)^2`` for ``p_i = softmax(f/lam_i)``
(the previous ``lam_i``, no margin, as in the reference ``ALDRLoss_V1``)::

    lam_i <- lam0 - lam0 KL(p_i || 1/K) / (alpha log K),   in [lam0 (1 - 1/alpha), lam0]

(``alpha > 1`` keeps it positive), stored detached per dataset index. The loss is
``psi_{lam_i} - (alpha log K / (2 lam0)) (lam_i - lam0)^2``, the second term a constant for
the model. Paper defaults (reference ``experiment.py``): margin ``c = 0.1``, ``lam = lam0 =
10``, ``alpha = 2``.

``transform`` applies the reference code's score maps before the loss: ``"softplus_mean"``
(``LDRLoss_V1``, and ``ALDRLoss_V1`` on CIFAR-100) is ``softplus(f) / mean_k softplus(f)``,
``"l1_mean"`` (``ALDRLoss_V1`` otherwise) is ``f / mean_k |f_k|`` (an all-zero row stays zero).

Soft targets ``q[N, C]`` give the expectation ``sum_c q_c psi(f; c)`` (class weights inside,
see ``_common.per_class_expectation``). The reference adds ``1e-5`` to ``p_i`` (renormalised)
before the log in its KL; here the KL is exact (``log_softmax``). The smoothing lowers the KL by
at most about ``1.3e-4 (K - 1)``, so ``lam_i`` differs by at most ``1.3e-4 (K - 1) lam0 /
(alpha log K)``. ``lam_i`` is also clamped to its range against rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from losskit._core.checks import (
    check_choice,
    check_finite,
    check_number,
    check_scores,
    checks_enabled,
)
from losskit._core.precision import upcast
from losskit._core.registry import register
from losskit.classification._common import (
    Batch,
    ClassLossModule,
    finish,
    per_class_expectation,
    prepare,
    row_dot,
)

TRANSFORMS = (None, "softplus_mean", "l1_mean")
_POSITIVE = {"low": 0.0, "low_open": True, "high": math.inf, "high_open": True}


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` exact at every ``x`` (torch's ``softplus`` returns ``x`` above 20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _log_softplus(x: Tensor) -> Tensor:
    """``log(softplus(x))`` without underflow: below -10 it is ``x + log(log1p(u) / u)``,
    ``u = exp(x)``, with the series of ``log1p(u) / u`` (exact to float64 there)."""
    t = -10.0
    hi = torch.log(_softplus(x.clamp(min=t)))
    u = torch.exp(x.clamp(max=t))
    lo = x + torch.log1p(u * (-0.5 + u * (1.0 / 3.0 - u / 4.0)))
    return torch.where(x > t, hi, lo)


class _L1MeanScaled(torch.autograd.Function):
    """``f / (scale * lam)`` with ``scale = mean_k |f_k|`` per row (``1`` for an all-zero row),
    given as a detached column: the ``"l1_mean"`` transform and the temperature in one pass.
    The hand-written backward accounts for ``scale``'s dependence on ``f`` and forms one
    ``[N, C]`` tensor (autograd through ``abs``, ``mean`` and two divisions forms five).
    First derivatives only."""

    @staticmethod
    def forward(ctx, f: Tensor, scale: Tensor, lam: Tensor) -> Tensor:
        ctx.save_for_backward(f, scale, lam)
        return f / (scale * lam)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        f, scale, lam = ctx.saved_tensors
        inv = 1.0 / (scale * lam)  # [N, 1]
        dot = row_dot(grad, f)[:, None] * inv  # sum_k grad_k h_k
        grad_f = grad_lam = None
        if ctx.needs_input_grad[0]:
            # d h_j / d f_k = inv (delta_jk - h_j sign(f_k) / (C scale)); sign(0) = 0 also
            # covers the all-zero rows, whose scale is the constant 1
            grad_f = torch.sign(f).mul_(-dot / (f.shape[1] * scale)).addcmul_(grad, inv)
        if ctx.needs_input_grad[2]:
            grad_lam = -dot / lam
            if grad_lam.shape != lam.shape:
                grad_lam = grad_lam.sum().reshape(lam.shape)
        return grad_f, None, grad_lam


def _transform(f: Tensor, transform: str | None) -> tuple[Tensor, Tensor | None]:
    """The transformed scores as ``(f', scale)``: for ``"l1_mean"`` the division by the
    detached row scale ``mean_k |f_k|`` is left to :func:`_scaled`, which applies it together
    with the temperature (one pass over ``[N, C]``, shared by ALDR's two temperatures)."""
    if transform == "softplus_mean":
        ls = _log_softplus(f)
        lse = torch.logsumexp(ls, dim=1, keepdim=True)
        return torch.exp(ls - lse + math.log(f.shape[1])), None
    if transform is None:
        return f, None
    with torch.no_grad():
        scale = torch.linalg.vector_norm(f, ord=1, dim=1, keepdim=True) / f.shape[1]
        return f, torch.where(scale > 0, scale, torch.ones_like(scale))


def _scaled(f: Tensor, scale: Tensor | None, lam: float | Tensor) -> Tensor:
    """The transformed scores ``(f, scale)`` divided by ``lam``; always a new tensor."""
    if scale is None:
        return f / lam
    return _L1MeanScaled.apply(f, scale, torch.as_tensor(lam, dtype=f.dtype, device=f.device))


def _psi(f: Tensor, scale: Tensor | None, b: Batch, lam: float | Tensor, margin: float) -> Tensor:
    """Per-sample LDR-KL of the transformed scores ``(f, scale)`` (see :func:`_transform`);
    ``lam`` a number or a column ``[N, 1]``."""
    log_k = math.log(f.shape[1])
    if not b.soft:
        # logsumexp_k (c 1[k != y] + f_k - f_y) / lam is the cross-entropy at y of
        # h = (f - c e_y) / lam: the margin moves one entry per row, and torch's fused kernel
        # does the rest (the k = y term of the sum is exactly exp(0) there as well)
        h = _scaled(f, scale, lam)
        if isinstance(lam, Tensor):
            shift = -margin / lam
        else:
            shift = h.new_full((h.shape[0], 1), -margin / lam)
        h.scatter_add_(1, b.y[:, None], shift)
        lam_row = lam.squeeze(1) if isinstance(lam, Tensor) else lam
        return lam_row * (F.cross_entropy(h, b.y, reduction="none") - log_k)
    # psi(f; c) = lam * (softplus(c/lam + LOO_c - g_c) - log K), g = f/lam and LOO_c the
    # logsumexp of g without class c: B + log1p(-q_c) (q = softmax(g)) is accurate for every
    # class but the row's arg-max, whose LOO is a masked logsumexp.
    g = _scaled(f, scale, lam)
    top = torch.zeros_like(g, dtype=torch.bool).scatter(1, g.argmax(dim=1, keepdim=True), True)
    q = torch.where(top, torch.zeros_like(g), torch.softmax(g, dim=1))
    loo = torch.logsumexp(g, dim=1, keepdim=True) + torch.log1p(-q)
    loo_top = torch.logsumexp(g.masked_fill(top, -math.inf), dim=1, keepdim=True)
    loo = torch.where(top, loo_top, loo)
    per_class = lam * (_softplus(margin / lam + loo - g) - log_k)
    return per_class_expectation(per_class, b)


def ldr_kl_loss(
    logits: Tensor,
    target: Tensor,
    *,
    lam: float = 1.0,
    margin: float = 0.0,
    transform: str | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """LDR-KL loss ``lam * log(mean_k exp((margin 1[k != y] + f_k - f_y) / lam))`` (paper 4).

    ``lam > 0`` is the KL penalty (temperature), ``margin >= 0`` the hinge margin ``c``.
    Defaults give ``CE - log K``; the paper's are ``lam=10, margin=0.1,
    transform="softplus_mean"``. Hard or soft targets, ``weight`` and ``ignore_index`` as
    in :func:`losskit.classification.cross_entropy`.
    """
    lam = check_number("lam", lam, **_POSITIVE)
    margin = check_number("margin", margin, low=0.0, high=math.inf, high_open=True)
    check_choice("transform", transform, TRANSFORMS)
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    return finish(_psi(*_transform(b.x, transform), b, lam, margin), b, reduction)


def _aldr_lambda(
    f: Tensor, scale: Tensor | None, lam_prev: Tensor, lam0: float, alpha: float
) -> Tensor:
    """``lam0 (1 - KL(softmax(f / lam_prev) || 1/K) / (alpha log K))`` clamped to its range,
    for the transformed scores ``(f, scale)``."""
    with torch.no_grad():
        log_k = math.log(f.shape[1])
        # KL = sum_k p_k log p_k + log K with p = e / S, e = exp(g - max g): two [N, C] buffers
        g = _scaled(f.detach(), scale, lam_prev[:, None])
        g.sub_(g.amax(dim=1, keepdim=True))
        e = torch.exp(g)
        s = e.sum(dim=1)
        kl = e.mul_(g).sum(dim=1) / s - torch.log(s) + log_k
        lam = lam0 * (1.0 - kl / (alpha * log_k))
        return lam.clamp(min=lam0 * (1.0 - 1.0 / alpha), max=lam0)


def aldr_kl_lambda(
    logits: Tensor,
    lam_prev: Tensor,
    *,
    lam0: float = 10.0,
    alpha: float = 2.0,
    transform: str | None = "l1_mean",
) -> Tensor:
    """ALDR-KL's per-sample update ``lam0 - lam0 KL(softmax(f / lam_prev) || 1/K) / (alpha log
    K)`` on the transformed scores ``f``; detached, within ``[lam0 (1 - 1/alpha), lam0]``."""
    lam0 = check_number("lam0", lam0, **_POSITIVE)
    alpha = check_number("alpha", alpha, low=1.0, low_open=True, high=math.inf, high_open=True)
    check_choice("transform", transform, TRANSFORMS)
    f, scale = _transform(upcast(check_scores(logits)), transform)
    return _aldr_lambda(f, scale, _check_lam("lam_prev", lam_prev, f), lam0, alpha)


def _check_lam(name: str, lam: Tensor, f: Tensor) -> Tensor:
    """Per-sample temperatures: a positive finite floating ``[N]``, cast to ``f``'s dtype."""
    if not isinstance(lam, Tensor) or not lam.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of per-sample temperatures")
    if tuple(lam.shape) != (f.shape[0],):
        raise ValueError(f"{name} must have shape ({f.shape[0]},), got {tuple(lam.shape)}")
    check_finite(name, lam)
    if checks_enabled() and bool((lam <= 0).any()):
        raise ValueError(f"{name} must be positive")
    return lam.to(f.dtype)


def _aldr(
    f: Tensor,
    scale: Tensor | None,
    b: Batch,
    lam: Tensor,
    lam0: float,
    alpha: float,
    margin: float,
) -> Tensor:
    coef = alpha * math.log(f.shape[1]) / (2.0 * lam0)
    return _psi(f, scale, b, lam[:, None], margin) - coef * (lam - lam0) ** 2


def aldr_kl_loss(
    logits: Tensor,
    target: Tensor,
    lam: Tensor,
    *,
    lam0: float = 10.0,
    alpha: float = 2.0,
    margin: float = 0.1,
    transform: str | None = "l1_mean",
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """ALDR-KL at given per-sample temperatures ``lam[N]`` (paper 4):
    ``psi_{lam_i}(f_i; y_i) - (alpha log K / (2 lam0)) (lam_i - lam0)^2``.

    ``lam`` usually comes from :func:`aldr_kl_lambda`; :class:`ALDRKLLoss` keeps it per
    dataset index. Defaults are the paper's (``transform="l1_mean"`` as in ``ALDRLoss_V1``).
    """
    lam0 = check_number("lam0", lam0, **_POSITIVE)
    alpha = check_number("alpha", alpha, low=1.0, low_open=True, high=math.inf, high_open=True)
    margin = check_number("margin", margin, low=0.0, high=math.inf, high_open=True)
    check_choice("transform", transform, TRANSFORMS)
    b = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    f, scale = _transform(b.x, transform)
    lam = _check_lam("lam", lam, f)
    return finish(_aldr(f, scale, b, lam, lam0, alpha, margin), b, reduction)


class LDRKLLoss(ClassLossModule):
    """Module form of :func:`ldr_kl_loss`; ``weight`` is a buffer."""

    def __init__(
        self,
        *,
        lam: float = 1.0,
        margin: float = 0.0,
        transform: str | None = None,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.lam = check_number("lam", lam, **_POSITIVE)
        self.margin = check_number("margin", margin, low=0.0, high=math.inf, high_open=True)
        check_choice("transform", transform, TRANSFORMS)
        self.transform = transform

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return ldr_kl_loss(
            logits,
            target,
            lam=self.lam,
            margin=self.margin,
            transform=self.transform,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class ALDRKLLoss(ClassLossModule):
    """ALDR-KL with the per-sample temperatures in the buffer ``lambdas[num_samples]``
    (initialised to ``lam0``). ``forward(logits, target, index)`` takes the dataset indices
    of the batch; it updates ``lambdas[index]`` with :func:`aldr_kl_lambda` (in training mode
    only; in eval mode the updated values are used but not stored), then returns
    :func:`aldr_kl_loss` at the updated values. Repeated indices in one batch: the last wins.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        lam0: float = 10.0,
        alpha: float = 2.0,
        margin: float = 0.1,
        transform: str | None = "l1_mean",
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.lam0 = check_number("lam0", lam0, **_POSITIVE)
        self.alpha = check_number(
            "alpha", alpha, low=1.0, low_open=True, high=math.inf, high_open=True
        )
        self.margin = check_number("margin", margin, low=0.0, high=math.inf, high_open=True)
        check_choice("transform", transform, TRANSFORMS)
        self.transform = transform
        self.register_buffer("lambdas", torch.full((num_samples,), self.lam0))

    def forward(self, logits: Tensor, target: Tensor, index: Tensor) -> Tensor:
        b = prepare(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
        n, size = b.x.shape[0], self.lambdas.shape[0]
        if not isinstance(index, Tensor) or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError("index must be an integer tensor of dataset sample indices")
        if tuple(index.shape) != (n,):
            raise ValueError(f"index must have shape ({n},), got {tuple(index.shape)}")
        if checks_enabled() and bool(((index < 0) | (index >= size)).any()):
            raise ValueError(f"index holds values outside [0, {size}) (num_samples)")
        index = index.to(self.lambdas.device)
        f, scale = _transform(b.x, self.transform)
        lam_prev = self.lambdas[index].to(f.dtype)
        lam = _aldr_lambda(f, scale, lam_prev, self.lam0, self.alpha)
        if self.training:
            self.lambdas[index] = lam.to(self.lambdas.dtype)
        per_sample = _aldr(f, scale, b, lam, self.lam0, self.alpha, self.margin)
        return finish(per_sample, b, self.reduction)


register(
    "ldr_kl",
    kind="loss",
    family="classification",
    papers=(4,),
    summary="LDR-KL: KL-regularised worst case over label weights; CE-like to hinge-like in lam.",
    defaults={"lam": 10.0, "margin": 0.1, "transform": "softplus_mean"},
    function=ldr_kl_loss,
    module=LDRKLLoss,
)

register(
    "aldr_kl",
    kind="loss",
    family="classification",
    papers=(4,),
    summary="ALDR-KL: LDR-KL with a per-sample temperature adapted to each label's reliability.",
    defaults={"lam0": 10.0, "alpha": 2.0, "margin": 0.1, "transform": "l1_mean"},
    function=aldr_kl_loss,
    module=ALDRKLLoss,
)
