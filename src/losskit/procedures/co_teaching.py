"""Co-teaching (Han et al. 2018), the training half of paper 12's recipe.

Two networks learn side by side from the same mini-batches. In epoch ``t`` (counting from 0)
each network ranks the batch by its own per-sample cross-entropy and keeps its
``floor((1 - R(t)) B)`` smallest-loss samples (at least one); each network then takes a
cross-entropy step on the samples its *peer* kept. The forget rate ramps up linearly::

    R(t) = min(t / T_k * tau, tau)          (R = tau from the start when T_k = 0)

since networks fit clean samples before noisy ones; ``tau`` should match the noise rate.
Small-loss samples of one network are likely clean, and exchanging them keeps each network
from confirming its own mistakes. With ``tau = 0`` nothing is dropped and co-teaching is
plain cross-entropy training of each network on the full batches (tested to equal training
each network alone on the same batches).

``selection``: ``"train"`` ranks with the losses of the training forward pass and steps on
its rows (Han et al.'s code); ``"eval"`` ranks with a separate no-grad forward in eval mode
and then runs a training forward on the kept samples only (the paper-12 code, where a
nested network ranks at its chosen cut). Differences from the paper-12 code: both networks
see the whole batch (the code gives each network one half of it), each network draws its
own nested-dropout cut (the code draws one for both), and the ramp is the formula above
(the code's ``linspace(0, tau, T_k)`` reaches ``tau`` one epoch earlier).

Batches: every epoch, ``torch.randperm(N, generator=g).split(batch_size)`` with
``g = torch.Generator().manual_seed(seed)`` drawn once; nothing else uses that generator.
Randomness inside the networks (dropout, nested dropout) draws from the global RNG or from
the networks' own generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register

SELECTIONS = ("train", "eval")
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def forget_rate_schedule(epoch: int, forget_rate: float, num_gradual: int) -> float:
    """``R(t) = min(t / T_k * tau, tau)`` for epoch ``t >= 0``, ``tau = forget_rate`` in
    ``[0, 1)``, ``T_k = num_gradual >= 0`` (``T_k = 0``: ``tau`` throughout)."""
    t = _check_int("epoch", epoch, 0)
    tau = check_number("forget_rate", forget_rate, low=0.0, high=1.0, high_open=True)
    tk = _check_int("num_gradual", num_gradual, 0)
    return tau if tk == 0 else min(t / tk * tau, tau)


def num_remembered(batch_size: int, forget_rate: float) -> int:
    """``max(1, floor((1 - R) B))`` samples kept of a batch of ``B`` (a ``1e-9`` slack keeps
    ``(1 - 0.3) * 10`` at 7 despite rounding)."""
    b = _check_int("batch_size", batch_size, 1)
    rate = check_number("forget_rate", forget_rate, low=0.0, high=1.0, high_open=True)
    return max(1, math.floor((1.0 - rate) * b + 1e-9))


def small_loss_indices(losses: Tensor, keep: int) -> Tensor:
    """Indices of the ``keep`` smallest of the per-sample ``losses`` ``[B]``, in increasing
    index order (ties go to the earlier sample)."""
    if not isinstance(losses, Tensor) or losses.ndim != 1 or losses.numel() == 0:
        raise ValueError("losses must be a non-empty 1-D tensor")
    keep = _check_int("keep", keep, 1)
    if keep > losses.numel():
        raise ValueError(f"keep must be <= {losses.numel()} (the batch), got {keep}")
    order = torch.sort(losses.detach(), stable=True).indices
    return torch.sort(order[:keep]).values


@dataclass
class CoTeachingResult:
    """The two trained networks and one log dict per epoch: ``epoch``, ``forget_rate``,
    ``kept`` (fraction of the samples kept), ``loss_a``/``loss_b`` (mean update loss), with
    ``clean`` also ``precision_a``/``precision_b`` (fraction of the samples kept by that
    network whose label is clean), and what ``evaluate`` returned."""

    model_a: nn.Module
    model_b: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)


def _check_data(x: Tensor, y: Tensor, clean: Tensor | None) -> None:
    if not isinstance(x, Tensor) or x.ndim < 1 or len(x) == 0:
        raise ValueError("x must be a non-empty tensor [N, ...]")
    for name, t in (("y", y), ("clean", clean)):
        if t is None:
            continue
        if not isinstance(t, Tensor) or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of class indices")
        if tuple(t.shape) != (len(x),):
            raise ValueError(f"{name} must have shape ({len(x)},) like x, got {tuple(t.shape)}")
        if bool((t < 0).any()):
            raise ValueError(f"{name} holds negative class indices")


def _check_models(model_a: nn.Module, model_b: nn.Module) -> None:
    if not isinstance(model_a, nn.Module) or not isinstance(model_b, nn.Module):
        raise ValueError("model_a and model_b must be torch nn.Modules")
    if model_a is model_b or {id(p) for p in model_a.parameters()} & {
        id(p) for p in model_b.parameters()
    }:
        raise ValueError("model_a and model_b must be two networks without shared parameters")


def _ranking_losses(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        losses = F.cross_entropy(model(xb), yb, reduction="none")
    model.train()
    return losses


def _step(opt: torch.optim.Optimizer, loss: Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def co_teaching(
    model_a: nn.Module,
    model_b: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    forget_rate: float,
    num_gradual: int,
    epochs: int,
    optimizer: OptimizerFactory | None = None,
    batch_size: int = 128,
    seed: int = 0,
    selection: str = "train",
    clean: Tensor | None = None,
    evaluate: Callable[[nn.Module, nn.Module, int], dict[str, Any]] | None = None,
    progress: bool = False,
) -> CoTeachingResult:
    """Train ``model_a`` and ``model_b`` (in place) by co-teaching on ``x`` ``[N, ...]`` with
    noisy labels ``y`` ``[N]``; see the module docstring.

    ``optimizer``: a factory ``params -> torch.optim.Optimizer`` called once per network
    (default Adam, lr 1e-3). ``clean``: true labels, for the logged label precision only.
    ``evaluate(model_a, model_b, epoch)``: called after every epoch, its dict joins the log.
    """
    _check_models(model_a, model_b)
    _check_data(x, y, clean)
    forget_rate_schedule(0, forget_rate, num_gradual)  # validates both
    epochs = _check_int("epochs", epochs, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    check_choice("selection", selection, SELECTIONS)
    factory = optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
    if not callable(factory):
        raise ValueError("optimizer must be a callable params -> torch.optim.Optimizer")
    opt_a, opt_b = factory(model_a.parameters()), factory(model_b.parameters())
    gen = torch.Generator().manual_seed(seed)
    result = CoTeachingResult(model_a, model_b)
    epoch_iter: Iterable[int] = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="co-teaching", unit="epoch", leave=False)
    for epoch in epoch_iter:
        rate = forget_rate_schedule(epoch, forget_rate, num_gradual)
        model_a.train()
        model_b.train()
        sums = np.zeros(5)  # kept, loss_a, loss_b, clean kept by a, clean kept by b
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb, yb = x[idx], y[idx]
            keep = num_remembered(len(idx), rate)
            if selection == "train":
                out_a, out_b = model_a(xb), model_b(xb)
                loss_a = F.cross_entropy(out_a, yb, reduction="none")
                loss_b = F.cross_entropy(out_b, yb, reduction="none")
                kept_a, kept_b = small_loss_indices(loss_a, keep), small_loss_indices(loss_b, keep)
                update_a, update_b = loss_a[kept_b].mean(), loss_b[kept_a].mean()
            else:
                kept_a = small_loss_indices(_ranking_losses(model_a, xb, yb), keep)
                kept_b = small_loss_indices(_ranking_losses(model_b, xb, yb), keep)
                update_a = F.cross_entropy(model_a(xb[kept_b]), yb[kept_b])
                update_b = F.cross_entropy(model_b(xb[kept_a]), yb[kept_a])
            sums[:3] += (keep, _step(opt_a, update_a) * keep, _step(opt_b, update_b) * keep)
            if clean is not None:
                cb = clean[idx]
                sums[3:] += ((yb[kept_a] == cb[kept_a]).sum(), (yb[kept_b] == cb[kept_b]).sum())
        log: dict[str, Any] = {
            "epoch": epoch,
            "forget_rate": rate,
            "kept": sums[0] / len(x),
            "loss_a": sums[1] / sums[0],
            "loss_b": sums[2] / sums[0],
        }
        if clean is not None:
            log.update(precision_a=sums[3] / sums[0], precision_b=sums[4] / sums[0])
        if evaluate is not None:
            log.update(evaluate(model_a, model_b, epoch))
        result.history.append({k: v.item() if hasattr(v, "item") else v for k, v in log.items()})
    return result


register(
    "co_teaching",
    kind="procedure",
    family="procedures",
    papers=(12,),
    summary="Co-teaching: two networks each keep their small-loss (1 - R(t)) share of a batch "
    "for the peer to train on, R(t) = min(t / T_k * tau, tau).",
    defaults={"forget_rate": 0.2, "num_gradual": 5, "selection": "train"},
    function=co_teaching,
)
