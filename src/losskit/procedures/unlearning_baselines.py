"""Supervised baselines for machine unlearning (paper 10's comparisons), and the training
loop they share.

- :func:`retrain_unlearn`: a fresh model trained on the remaining data with its labels, the
  gold standard (what the model would be had the forgotten data never been seen).
- :func:`finetune_unlearn`: the trained model fine-tuned on the remaining data with its labels
  for a few epochs, relying on forgetting by interference.

Both minimise the mean cross-entropy with Adam over shuffled mini-batches
(:func:`train_classifier`), deterministic for a given ``seed``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number


def _check_xy(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty floating tensor [N, ...], got {type(x).__name__}")
    check_finite("x", x)
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
        raise ValueError(f"y must be an int64 tensor of shape ({len(x)},) matching x")
    if bool((y < 0).any()):
        raise ValueError(f"y must hold class indices >= 0, got {int(y.min())}")


def train_classifier(
    model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float = 1e-3,
    batch_size: int = 32, weight_decay: float = 0.0, seed: int = 0,
) -> nn.Module:  # fmt: skip
    """Train ``model`` in place on ``(x, y)``: ``epochs`` passes of Adam on the mean
    cross-entropy over batches reshuffled each epoch; returns ``model`` in eval mode."""
    _check_xy(x, y)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    check_number("lr", lr, low=0.0, low_open=True)
    check_number("weight_decay", weight_decay, low=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def retrain_unlearn(
    make_model: Callable[[], nn.Module], x_remain: Tensor, y_remain: Tensor, *, epochs: int,
    lr: float = 1e-3, batch_size: int = 32, weight_decay: float = 0.0, seed: int = 0,
) -> nn.Module:  # fmt: skip
    """Retraining from scratch: ``make_model()`` (initialised under ``seed``) trained on the
    remaining data with its labels."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = make_model()
    return train_classifier(
        model, x_remain, y_remain, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, seed=seed,
    )  # fmt: skip


def finetune_unlearn(
    model: nn.Module, x_remain: Tensor, y_remain: Tensor, *, epochs: int = 5, lr: float = 1e-3,
    batch_size: int = 32, weight_decay: float = 0.0, seed: int = 0,
) -> nn.Module:  # fmt: skip
    """Fine-tuning: a copy of the trained ``model`` trained further on the remaining data with
    its labels (the input model is untouched)."""
    return train_classifier(
        copy.deepcopy(model), x_remain, y_remain, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, seed=seed,
    )  # fmt: skip


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """``model(x)`` in eval mode, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
