"""White-box adversarial attacks and robust accuracy, for paper 22's robustness relation
(Konz & Mazurowski, ICLR 2024: label sharpness ``K_F`` is negatively correlated with a
model's adversarial robustness; the paper attacks with FGSM).

``model`` maps a float batch ``x[N, ...]`` to logits ``[N, C]``; ``y[N]`` holds integer classes.
The model is used as it is: put it in ``eval()`` mode first when it has batch norm or dropout.
Gradients are taken with respect to the input only (no parameter ``.grad`` is written) of
``loss_fn(logits, y)``, by default the summed cross-entropy. Inputs must lie in the box
``clamp = (low, high)`` (default ``(0, 1)``, pixels), and so do the adversarial examples;
``clamp=None`` drops the box. ``norm`` is the threat model's ball ``||x' - x|| <= eps``:

- **FGSM** (Goodfellow, Shlens & Szegedy, ICLR 2015): one step of size ``eps``, ``x' = x +
  eps sign(g)`` for ``"linf"``; ``x' = x + eps g / ||g||_2`` per sample for ``"l2"`` (the fast
  gradient method; a zero gradient leaves the sample unchanged), then clipped to the box.
- **PGD** (Madry et al., ICLR 2018): from a uniform random point of the ball
  (``random_start``, else from ``x``), ``steps`` steps of size ``step_size`` (default
  ``2.5 eps / steps``, Madry et al.) along ``sign(g)`` (``"linf"``) or ``g / ||g||_2``
  (``"l2"``), each followed by the projection onto the ball and clipping to the box (clipping
  a point of the ball towards ``x``'s box keeps it in the ball). With ``steps=1``,
  ``step_size=eps`` and no random start, PGD is FGSM.

:func:`robust_accuracy` is the accuracy on the attacked inputs, in batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register

NORMS = ("linf", "l2")
ATTACKS = ("none", "fgsm", "pgd")
Loss = Callable[[Tensor, Tensor], Tensor]


def _sum_ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def _check(x: Tensor, y: Tensor, eps: float, norm: str, clamp: tuple[float, float] | None):
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating torch tensor")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape [N, ...] with N >= 1, got {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError("y must be an integer torch tensor of class indices")
    if tuple(y.shape) != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, got NaN or Inf values")
    check_number("eps", eps, low=0.0)
    check_choice("norm", norm, NORMS)
    if clamp is not None:
        low, high = clamp
        if not low < high:
            raise ValueError(f"clamp must be (low, high) with low < high, got {clamp}")
        if bool((x < low).any()) or bool((x > high).any()):
            raise ValueError(f"x must lie inside clamp = {clamp}")


def _grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Loss) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(model(x), y), x)
    return g


def _direction(g: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return g.sign()
    flat = torch.linalg.vector_norm(g.flatten(1), dim=1)
    scale = torch.where(flat > 0, 1.0 / flat, torch.zeros_like(flat))
    return g * scale.view(-1, *([1] * (g.ndim - 1)))


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = torch.linalg.vector_norm(delta.flatten(1), dim=1)
    factor = torch.where(flat > eps, eps / flat.clamp_min(1e-30), torch.ones_like(flat))
    return delta * factor.view(-1, *([1] * (delta.ndim - 1)))


def _box(x: Tensor, clamp: tuple[float, float] | None) -> Tensor:
    return x if clamp is None else x.clamp(clamp[0], clamp[1])


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss_fn: Loss | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """One-step attack ``x + eps * direction(grad_x loss)``, clipped to ``clamp`` (detached)."""
    _check(x, y, eps, norm, clamp)
    g = _grad(model, x, y, loss_fn or _sum_ce)
    return _box(x.detach() + eps * _direction(g, norm), clamp).detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    loss_fn: Loss | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on the loss inside the ``eps``-ball (detached result)."""
    _check(x, y, eps, norm, clamp)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    alpha = 2.5 * eps / steps if step_size is None else step_size
    alpha = check_number("step_size", alpha, low=0.0)
    loss_fn = loss_fn or _sum_ce
    x0 = x.detach()
    delta = torch.zeros_like(x0)
    if random_start and eps > 0:
        if norm == "linf":
            u = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            delta = (2.0 * u - 1.0) * eps
        else:  # uniform in the L2 ball: a Gaussian direction, radius eps * U^(1/D)
            z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            r = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device)
            r = eps * r.pow(1.0 / x0[0].numel())
            delta = _project(_direction(z, "l2") * r.view(-1, *([1] * (x0.ndim - 1))), eps, "l2")
    adv = _box(x0 + delta, clamp)
    for _ in range(steps):
        g = _grad(model, adv, y, loss_fn)
        delta = _project(adv + alpha * _direction(g, norm) - x0, eps, norm)
        adv = _box(x0 + delta, clamp)
    return adv.detach()


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: str = "pgd",
    eps: float = 0.0,
    batch_size: int = 256,
    **attack_kwargs,
) -> float:
    """Accuracy of ``model`` on ``x`` attacked by ``attack`` ("none", "fgsm" or "pgd") at
    ``eps``, in batches of ``batch_size``; ``attack_kwargs`` go to :func:`fgsm` / :func:`pgd`."""
    check_choice("attack", attack, ATTACKS)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    _check(x, y, eps, attack_kwargs.get("norm", "linf"), attack_kwargs.get("clamp", (0.0, 1.0)))
    correct = 0
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        if attack == "fgsm":
            xb = fgsm(model, xb, yb, eps=eps, **attack_kwargs)
        elif attack == "pgd":
            xb = pgd(model, xb, yb, eps=eps, **attack_kwargs)
        with torch.no_grad():
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / x.shape[0]


_NOTE = "white-box, input gradients only; paper 22 relates it to label sharpness"
register(
    "fgsm",
    kind="diagnostic",
    family="adversarial",
    papers=(22,),
    summary=f"FGSM / fast gradient method (linf or l2), clipped to the input box; {_NOTE}.",
    function=fgsm,
)
register(
    "pgd",
    kind="diagnostic",
    family="adversarial",
    papers=(22,),
    summary=f"PGD (Madry et al.), linf or l2 ball, random start, step 2.5 eps/steps; {_NOTE}.",
    defaults={"steps": 10, "norm": "linf", "random_start": True},
    function=pgd,
)
register(
    "robust_accuracy",
    kind="diagnostic",
    family="adversarial",
    papers=(22,),
    summary=f"Accuracy under an FGSM or PGD attack of radius eps, batched; {_NOTE}.",
    function=robust_accuracy,
)
