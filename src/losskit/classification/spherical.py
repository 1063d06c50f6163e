"""The Z-loss and the spherical family it is compared against (paper 2).

A loss over outputs ``o[D]`` with target class ``c`` is *spherical* when it depends on ``o``
only through ``o_c``, ``S1 = sum_k o_k`` and ``S2 = sum_k o_k^2``; for such losses the exact
output-layer update costs O(d^2) whatever the number of classes D. Each member here has a
direct form on ``logits[N, D]`` (the classification contract) and a ``*_from_stats`` form on
``(o_target[N], s1[N], s2[N], num_classes)``, the one a large-output algorithm calls. All stats
forms share that signature; a member that does not use ``s1`` ignores it.

- Z-loss: ``z_k = (o_k - mu) / sigma``, ``mu = S1/D``, ``sigma^2 = S2/D - mu^2`` (population
  variance), ``L = softplus(a * (b - z_c)) / a``. Shift and scale invariant.
- spherical softmax: ``p_k = (o_k^2 + eps) / (S2 + D*eps)``, ``L = -log p_c``.
- Taylor softmax: ``p_k = t_k / (D + S1 + S2/2)`` with ``t_k = 1 + o_k + o_k^2/2``,
  ``L = -log p_c``.
- squared error: ``L = sum_k (o_k - y_k)^2 = S2 - 2*o_c + 1`` (summed over classes).

Soft targets ``p[N, D]`` give the expectation ``sum_k p_k L(o, k)`` of the hard loss (the
Z-loss and squared error then need every class, so they leave the spherical family).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register
from losskit.classification._common import (
    ClassLossModule,
    finish,
    per_class_expectation,
    prepare,
    row_dot,
)

Z_EPS = 1e-12  # added to sigma^2 so that equal outputs (sigma = 0) stay finite


def _stats(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(o_c, S1, S2)`` per row of ``x[N, D]`` for class indices ``y[N]``."""
    return x.gather(1, y[:, None]).squeeze(1), x.sum(dim=1), (x * x).sum(dim=1)


class _CentredStats(torch.autograd.Function):
    """``(o_c - mu, sum_k (o_k - mu)^2)`` per row of ``x[N, D]``: the stats of the centred
    row (its ``S1`` is 0). Two passes (mean, then the centred squares summed as a batched
    product), and a hand-written backward that forms one ``[N, D]`` tensor; autograd through
    the centring saves the centred copy and forms several. First derivatives only."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        mu = x.mean(dim=1)
        xc = x - mu[:, None]
        s2 = row_dot(xc, xc)
        oc = xc.gather(1, y[:, None]).squeeze(1)
        ctx.save_for_backward(x, y, mu)
        return oc, s2

    @staticmethod
    @once_differentiable
    def backward(ctx, g_oc: Tensor, g_s2: Tensor) -> tuple[Tensor, None]:
        x, y, mu = ctx.saved_tensors
        # d oc / d x_k = [k = c] - 1/D;  d s2 / d x_k = 2 (x_k - mu)  (sum_k (x_k - mu) = 0)
        grad = torch.sub(x, mu[:, None]).mul_(2 * g_s2[:, None]).sub_(g_oc[:, None] / x.shape[1])
        return grad.scatter_add_(1, y[:, None], g_oc[:, None]), None


def _check_stats(
    o_target: Tensor, s1: Tensor, s2: Tensor, num_classes: int, reduction: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the stats-form inputs and upcast them to one compute dtype."""
    check_reduction(reduction)
    for name, t in (("o_target", o_target), ("s1", s1), ("s2", s2)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating torch.Tensor, got {type(t).__name__}")
        if t.ndim != 1 or t.shape != o_target.shape:
            raise ValueError(
                f"{name} must have shape [N] like o_target {tuple(o_target.shape)}, "
                f"got {tuple(t.shape)}"
            )
    if o_target.shape[0] == 0:
        raise ValueError("o_target is an empty batch (shape (0,))")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    for name, t in (("o_target", o_target), ("s1", s1), ("s2", s2)):
        check_finite(name, t)
    if checks_enabled() and bool((s2 < 0).any()):
        raise ValueError("s2 (the sum of squared outputs) must be non-negative")
    oc, t1, t2 = upcast_all(o_target, s1, s2)
    assert oc is not None and t1 is not None and t2 is not None
    return oc, t1, t2


def _check_eps(eps: float) -> float:
    return check_number("eps", eps, low=0.0, low_open=True, high=math.inf, high_open=True)


def _check_z(a: float, b: float, eps: float) -> tuple[float, float, float]:
    return (
        check_number("a", a, low=0.0, low_open=True, high=math.inf, high_open=True),
        check_number("b", b, low=-math.inf, low_open=True, high=math.inf, high_open=True),
        _check_eps(eps),
    )


def _z_scores(o: Tensor, s1: Tensor, s2: Tensor, d: int, eps: float) -> Tensor:
    """``(o - mu) / sqrt(sigma^2 + eps)``; ``o`` is ``[N]`` or ``[N, D]``, stats are ``[N]``."""
    mu = s1 / d
    sigma = torch.sqrt((s2 / d - mu * mu).clamp_min(0) + eps)
    if o.ndim == 2:
        mu, sigma = mu[:, None], sigma[:, None]
    return (o - mu) / sigma


def _z_from_stats(
    oc: Tensor, s1: Tensor, s2: Tensor, d: int, a: float, b: float, eps: float
) -> Tensor:
    return F.softplus(a * (b - _z_scores(oc, s1, s2, d, eps))) / a


def spherical_z_loss_from_stats(
    o_target: Tensor,
    s1: Tensor,
    s2: Tensor,
    num_classes: int,
    *,
    a: float = 1.0,
    b: float = 0.0,
    eps: float = Z_EPS,
    reduction: str = "mean",
) -> Tensor:
    """The Z-loss from ``o_c``, ``S1`` and ``S2`` alone (see :func:`spherical_z_loss`).

    ``"mean"`` is the plain mean over the N samples; apply class weights or masks to the
    ``"none"`` output. Supply ``s1``/``s2`` in float32 or wider: sums of squares over many
    classes overflow float16. The result has the dtype of ``o_target``.
    """
    a, b, eps = _check_z(a, b, eps)
    oc, t1, t2 = _check_stats(o_target, s1, s2, num_classes, reduction)
    loss = _z_from_stats(oc, t1, t2, num_classes, a, b, eps)
    return reduce_loss(loss, reduction).to(o_target.dtype)


def spherical_z_loss(
    logits: Tensor,
    target: Tensor,
    *,
    a: float = 1.0,
    b: float = 0.0,
    eps: float = Z_EPS,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Z-loss of paper 2: ``softplus(a * (b - z_c)) / a`` on the z-scored outputs.

    ``z_k = (o_k - mu) / sigma`` with ``mu = S1/D`` and the population deviation
    ``sigma = sqrt(S2/D - mu^2 + eps)``. ``a > 0`` sets the sharpness, ``b`` the z-score the
    target must exceed; as ``a -> inf`` the loss tends to ``max(0, b - z_c)``. The paper tunes
    ``(a, b)`` per task; the defaults ``a=1, b=0`` are those hard-coded in the authors' code.
    The loss satisfies ``L(alpha*o + beta) = L(o)`` for ``alpha > 0``, so its gradient sums
    to zero and is orthogonal to ``o``.

    ``eps`` (default 1e-12, added to ``sigma^2``) keeps rows with equal outputs finite: there
    ``z = 0`` and the loss is ``softplus(a*b)/a``, with gradients of order ``1/sqrt(eps)``.
    The invariances hold exactly for rows whose spread is well above ``sqrt(eps)``. (The
    authors' code adds 1e-12 to ``sigma`` instead, which gives NaN gradients at ``sigma=0``.)
    Rows are centred before their stats are formed (exact by shift invariance) to avoid the
    cancellation in ``S2/D - mu^2``; hard targets then go through
    :func:`spherical_z_loss_from_stats` (the centred stats come from a small autograd Function
    whose backward forms one ``[N, D]`` tensor). Scale-free, so half-precision logits of any
    magnitude are safe. Unlike :func:`logsumexp_penalty` (the "z-loss" of some libraries)
    this is a classification loss on its own.
    """
    a, b, eps = _check_z(a, b, eps)
    bt = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    d = bt.x.shape[1]
    if not bt.soft:
        oc, s2 = _CentredStats.apply(bt.x, bt.y)
        return finish(_z_from_stats(oc, torch.zeros_like(s2), s2, d, a, b, eps), bt, reduction)
    xc = bt.x - bt.x.mean(dim=1, keepdim=True)
    z = _z_scores(xc, xc.sum(dim=1), (xc * xc).sum(dim=1), d, eps)
    per_class = F.softplus(a * (b - z)) / a
    return finish(per_class_expectation(per_class, bt), bt, reduction)


def _spherical_softmax_from_stats(oc: Tensor, s2: Tensor, d: int, eps: float) -> Tensor:
    return torch.log(s2 + d * eps) - torch.log(oc * oc + eps)


def spherical_softmax_loss_from_stats(
    o_target: Tensor,
    s1: Tensor,
    s2: Tensor,
    num_classes: int,
    *,
    eps: float = 0.01,
    reduction: str = "mean",
) -> Tensor:
    """``log(S2 + D*eps) - log(o_c^2 + eps)``; ``s1`` is not used (shared signature)."""
    e = _check_eps(eps)
    oc, _, t2 = _check_stats(o_target, s1, s2, num_classes, reduction)
    loss = _spherical_softmax_from_stats(oc, t2, num_classes, e)
    return reduce_loss(loss, reduction).to(o_target.dtype)


def spherical_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    eps: float = 0.01,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Log-spherical-softmax loss, a spherical sibling of the Z-loss (compared in paper 2).

    ``p_k = (o_k^2 + eps) / sum_j (o_j^2 + eps)`` and ``L = -log p_c``. ``eps > 0`` is part
    of the model (it keeps ``p_c > 0`` at ``o_c = 0``), not a stability patch; the papers
    tune it and the authors' code has no spherical softmax, so the default 0.01 is
    losskit's choice. Even in ``o`` and neither shift nor scale invariant (it tends to scale
    invariance as ``eps -> 0``). Stats form: :func:`spherical_softmax_loss_from_stats`.
    """
    e = _check_eps(eps)
    bt = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    q = bt.x * bt.x + e
    per_class = torch.log(q.sum(dim=1, keepdim=True)) - torch.log(q)
    return finish(per_class_expectation(per_class, bt), bt, reduction)


def _taylor_from_stats(oc: Tensor, s1: Tensor, s2: Tensor, d: int) -> Tensor:
    return torch.log(d + s1 + 0.5 * s2) - torch.log(0.5 * ((1 + oc) ** 2 + 1))


def taylor_softmax_loss_from_stats(
    o_target: Tensor, s1: Tensor, s2: Tensor, num_classes: int, *, reduction: str = "mean"
) -> Tensor:
    """``log(D + S1 + S2/2) - log(1 + o_c + o_c^2/2)`` (see :func:`taylor_softmax_loss`)."""
    oc, t1, t2 = _check_stats(o_target, s1, s2, num_classes, reduction)
    loss = _taylor_from_stats(oc, t1, t2, num_classes)
    return reduce_loss(loss, reduction).to(o_target.dtype)


def taylor_softmax_loss(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Log-Taylor-softmax loss, a spherical sibling of the Z-loss (compared in paper 2).

    ``exp`` in the softmax is replaced by its second-order Taylor polynomial
    ``t_k = 1 + o_k + o_k^2/2 = ((1 + o_k)^2 + 1)/2 >= 1/2``, so ``p_k = t_k / sum_j t_j``
    needs no ``eps`` and ``L = -log p_c``. No hyperparameters; neither shift nor scale
    invariant. Stats form: :func:`taylor_softmax_loss_from_stats`.
    """
    bt = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    t = 0.5 * ((1 + bt.x) ** 2 + 1)
    per_class = torch.log(t.sum(dim=1, keepdim=True)) - torch.log(t)
    return finish(per_class_expectation(per_class, bt), bt, reduction)


def spherical_squared_error_from_stats(
    o_target: Tensor, s1: Tensor, s2: Tensor, num_classes: int, *, reduction: str = "mean"
) -> Tensor:
    """``S2 - 2*o_c + 1``; ``s1`` is not used (shared signature)."""
    oc, _, t2 = _check_stats(o_target, s1, s2, num_classes, reduction)
    return reduce_loss(t2 - 2 * oc + 1, reduction).to(o_target.dtype)


def spherical_squared_error(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Squared error to the one-hot target, ``sum_k (o_k - y_k)^2 = S2 - 2*o_c + 1``.

    The spherical loss paper 2 reports the Z-loss beating. Summed (not averaged) over the D
    classes, as in the authors' code. A soft target ``p`` gives ``sum_k p_k ||o - e_k||^2 =
    ||o - p||^2 + 1 - ||p||^2``: squared error to ``p`` up to a constant. Not scale free:
    computed in float32 and returned in the input dtype, a float16 result overflows to inf
    once the loss passes 65504 (e.g. outputs of magnitude ~1e2 over a few classes); bfloat16
    and wider are fine. Stats form: :func:`spherical_squared_error_from_stats`.
    """
    bt = prepare(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    if not bt.soft:
        diff = bt.x - F.one_hot(bt.y, bt.x.shape[1]).to(bt.x.dtype)
        return finish((diff * diff).sum(dim=1), bt, reduction)
    per_class = (bt.x * bt.x).sum(dim=1, keepdim=True) - 2 * bt.x + 1
    return finish(per_class_expectation(per_class, bt), bt, reduction)


class SphericalZLoss(ClassLossModule):
    """Module form of :func:`spherical_z_loss`; ``weight`` is a buffer."""

    def __init__(
        self,
        *,
        a: float = 1.0,
        b: float = 0.0,
        eps: float = Z_EPS,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.a, self.b, self.eps = _check_z(a, b, eps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return spherical_z_loss(logits, target, a=self.a, b=self.b, eps=self.eps, **self.common())


class SphericalSoftmaxLoss(ClassLossModule):
    """Module form of :func:`spherical_softmax_loss`; ``weight`` is a buffer."""

    def __init__(
        self,
        *,
        eps: float = 0.01,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, ignore_index, reduction)
        self.eps = _check_eps(eps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return spherical_softmax_loss(logits, target, eps=self.eps, **self.common())


class TaylorSoftmaxLoss(ClassLossModule):
    """Module form of :func:`taylor_softmax_loss`; ``weight`` is a buffer."""

    def __init__(
        self, *, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(weight, ignore_index, reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return taylor_softmax_loss(logits, target, **self.common())


class SphericalSquaredError(ClassLossModule):
    """Module form of :func:`spherical_squared_error`; ``weight`` is a buffer."""

    def __init__(
        self, *, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(weight, ignore_index, reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return spherical_squared_error(logits, target, **self.common())


register(
    "spherical_z_loss",
    kind="loss",
    family="classification",
    papers=(2,),
    summary="Z-loss: softplus of the target's z-score; shift/scale invariant, spherical.",
    defaults={"a": 1.0, "b": 0.0},
    function=spherical_z_loss,
    module=SphericalZLoss,
)
register(
    "spherical_softmax",
    kind="loss",
    family="classification",
    papers=(2,),
    summary="Log-spherical-softmax: -log((o_c^2 + eps) / sum_j (o_j^2 + eps)), spherical.",
    defaults={"eps": 0.01},
    function=spherical_softmax_loss,
    module=SphericalSoftmaxLoss,
)
register(
    "taylor_softmax",
    kind="loss",
    family="classification",
    papers=(2,),
    summary="Log-Taylor-softmax: exp replaced by 1 + o + o^2/2, spherical.",
    function=taylor_softmax_loss,
    module=TaylorSoftmaxLoss,
)
register(
    "spherical_squared_error",
    kind="loss",
    family="classification",
    papers=(2,),
    summary="Squared error to the one-hot target, S2 - 2*o_c + 1 (summed over classes).",
    function=spherical_squared_error,
    module=SphericalSquaredError,
)
