"""The two-layer MLP of paper 55 (Doshi, Das, He, Gromov) on modular arithmetic, its
training recipe and IPR-guided pruning.

Model (the paper's Eq. 1, Eq. 5 for BatchNorm): one-hot inputs ``e_a (+) e_b`` in
``R^{2p}``, ``f(a, b) = W phi(U e_a + V e_b)`` with ``W_in = [U | V]`` of shape ``[N, 2p]``,
``W`` of shape ``[p, N]``, no biases; ``phi(x) = x^2`` (the paper's default) or ReLU
(its Appendix N). Options: dropout on the pre-activations (``phi(dropout(W_in x))``, as the
paper's code places it) and post-activation BatchNorm ``W BN(phi(...))``. Initial weights
``N(0, (16 N)^{-2/3})``.

Training (the paper's Appendix A default): MSE between the outputs and one-hot targets,
AdamW with ``lr = 0.01``, ``betas = (0.9, 0.98)``, decoupled weight decay ``wd`` on all
parameters, full batch (or minibatches of ``batch_size``), 2000 steps.

Pruning (Section 2.1): neuron ``k`` is removed by zeroing row ``k`` of ``U`` and ``V`` and
column ``k`` of ``W`` on a copy of the trained model, without retraining; zeroing the column
of ``W`` removes its contribution also behind BatchNorm.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register
from losskit.diagnostics.grokking import neuron_ipr, split_accuracies
from losskit.labels.modular import ModularDataset

ACTIVATIONS = ("quadratic", "relu")


class ModularMLP(nn.Module):
    """``f(a, b) = W phi(U e_a + V e_b)`` on one-hot inputs ``[n, 2p]`` (paper 55, Eq. 1)."""

    def __init__(
        self,
        p: int,
        width: int = 500,
        *,
        activation: str = "quadratic",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int) or p < 2:
            raise ValueError(f"p must be an int >= 2, got {p!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1, got {width!r}")
        check_choice("activation", activation, ACTIVATIONS)
        self.p, self.width, self.activation = p, width, activation
        self.fc1 = nn.Linear(2 * p, width, bias=False)
        self.fc2 = nn.Linear(width, p, bias=False)
        self.dropout = nn.Dropout(
            check_number("dropout", dropout, low=0.0, high=1.0, high_open=True)
        )
        self.norm = nn.BatchNorm1d(width) if batch_norm else None
        std = (16.0 * width) ** (-1.0 / 3.0)
        nn.init.normal_(self.fc1.weight, std=std)
        nn.init.normal_(self.fc2.weight, std=std)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(self.fc1(x))
        h = h * h if self.activation == "quadratic" else torch.relu(h)
        if self.norm is not None:
            h = self.norm(h)
        return self.fc2(h)

    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``U [N, p]``, ``V [N, p]``, ``W [p, N]`` as float64 arrays."""
        w_in = self.fc1.weight.detach().double().cpu().numpy()
        return w_in[:, : self.p], w_in[:, self.p :], self.fc2.weight.detach().double().cpu().numpy()


def one_hot_pairs(a: np.ndarray, b: np.ndarray, p: int) -> Tensor:
    """Concatenated one-hot encodings ``e_a (+) e_b``, float32 ``[n, 2p]``."""
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return torch.cat([F.one_hot(a, p), F.one_hot(b, p)], dim=1).float()


@dataclass
class GrokkingRun:
    """A trained model with its accuracy history (see
    :func:`~losskit.diagnostics.grokking.split_accuracies` for the keys) and final IPRs."""

    model: ModularMLP
    steps: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    ipr: np.ndarray = field(default_factory=lambda: np.zeros(0))


@torch.no_grad()
def predict(model: ModularMLP, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Predicted classes (argmax of the outputs) in eval mode."""
    was = model.training
    model.eval()
    out = model(one_hot_pairs(a, b, model.p)).argmax(1).numpy()
    model.train(was)
    return out


def evaluate(model: ModularMLP, data: ModularDataset) -> dict[str, float]:
    """:func:`~losskit.diagnostics.grokking.split_accuracies` of the model's predictions on
    all ``p^2`` pairs."""
    return split_accuracies(predict(model, data.a, data.b), data)


def train_modular_mlp(
    data: ModularDataset,
    *,
    width: int = 500,
    activation: str = "quadratic",
    weight_decay: float = 0.0,
    dropout: float = 0.0,
    batch_norm: bool = False,
    lr: float = 1e-2,
    steps: int = 2000,
    batch_size: int | None = None,
    log_every: int = 100,
    seed: int = 0,
) -> GrokkingRun:
    """Train the paper-55 MLP on ``data``'s (corrupted) training labels with MSE and AdamW.

    ``batch_size=None`` is full batch (the paper's default); otherwise each step draws a
    minibatch without replacement from a fresh permutation per epoch. Accuracies are logged
    every ``log_every`` steps and after the last; ``seed`` fixes the initialisation, dropout
    masks and minibatches.
    """
    check_number("weight_decay", weight_decay, low=0.0)
    check_number("lr", lr, low=0.0, low_open=True)
    for name, value in (("steps", steps), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    n = data.train.size
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n
    ):
        raise ValueError(f"batch_size must be None or an int in [1, {n}], got {batch_size!r}")
    if batch_norm and (batch_size or n) < 2:
        raise ValueError("batch_norm needs batches of at least 2 examples")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ModularMLP(
            data.p, width, activation=activation, dropout=dropout, batch_norm=batch_norm
        )
        run = _fit(model, data, weight_decay, lr, steps, batch_size, log_every)
    run.final = {k: v[-1] for k, v in run.history.items()}
    run.ipr = neuron_ipr(*model.weights())
    return run


def _fit(
    model: ModularMLP,
    data: ModularDataset,
    weight_decay: float,
    lr: float,
    steps: int,
    batch_size: int | None,
    log_every: int,
) -> GrokkingRun:
    """The training loop; draws dropout masks and minibatches from the global torch RNG."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=weight_decay
    )
    x = one_hot_pairs(data.a[data.train], data.b[data.train], data.p)
    y = F.one_hot(torch.as_tensor(data.train_labels), data.p).float()
    n, run = x.shape[0], GrokkingRun(model=model)
    order, pos = torch.randperm(n), 0
    for step in range(1, steps + 1):
        model.train()
        if batch_size is None:
            xb, yb = x, y
        else:
            if pos + batch_size > n:
                order, pos = torch.randperm(n), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            xb, yb = x[idx], y[idx]
        loss = F.mse_loss(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps:
            if not math.isfinite(loss.item()):
                raise ValueError(f"training diverged by step {step} (loss {loss.item()}); lower lr")
            acc = evaluate(model, data)
            run.steps.append(step)
            for key, value in acc.items():
                run.history.setdefault(key, []).append(value)
    return run


def prune_neurons(model: ModularMLP, neurons: np.ndarray | list[int]) -> ModularMLP:
    """A copy of ``model`` with the hidden ``neurons`` removed: rows of ``U`` and ``V`` and
    columns of ``W`` set to zero (paper 55, Section 2.1). An empty list changes nothing."""
    idx = np.asarray(neurons, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= model.width):
        raise ValueError(f"neurons must lie in [0, {model.width}), got {idx.min()}..{idx.max()}")
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        sel = torch.as_tensor(idx)
        pruned.fc1.weight[sel] = 0.0
        pruned.fc2.weight[:, sel] = 0.0
    return pruned


def pruning_curve(
    model: ModularMLP, data: ModularDataset, order: np.ndarray, counts: list[int]
) -> dict[str, list[float]]:
    """Accuracies after pruning the first ``c`` neurons of ``order`` for each ``c`` in
    ``counts`` (e.g. ``order = argsort(ipr)``: lowest IPR first)."""
    out: dict[str, list[float]] = {}
    for c in counts:
        for key, value in evaluate(prune_neurons(model, order[:c]), data).items():
            out.setdefault(key, []).append(value)
    return out


register(
    "modular_mlp",
    kind="procedure",
    family="procedures",
    papers=(55,),
    summary="Two-layer quadratic (or ReLU) MLP on one-hot modular pairs trained with MSE and "
    "AdamW (weight decay, dropout, BatchNorm), its accuracy splits and IPR pruning.",
    defaults={"width": 500, "activation": "quadratic", "lr": 1e-2, "steps": 2000},
    function=train_modular_mlp,
)
