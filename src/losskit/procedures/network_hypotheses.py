"""Network hypotheses that fit the training set (paper 30's neural-network hypothesis spaces):
many networks of one architecture, each trained from its own random initialisation with Adam
on the MSE to the class targets, as the paper's code does, evaluated by their test MSE.

The ``E`` members of an ensemble are trained at once as one batched model: the loss is the sum
of the members' mean-squared errors, so each member's gradient is its own and, Adam acting
elementwise, every member follows exactly the trajectory it would follow alone.

- :class:`MLPEnsemble`: ``E`` ReLU MLPs ``D -> hidden... -> K`` as batched matrix products.
- :class:`CNNEnsemble`: ``E`` CNNs on 8x8 one-channel images: 3x3 conv -> ReLU -> 2x2
  max-pool -> 3x3 conv -> ReLU -> linear head (no padding).

Parameters start as PyTorch's ``nn.Linear`` / ``nn.Conv2d`` do: uniform on
``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` for weights and biases, drawn in float64 from the
``seed`` and stored in ``dtype`` (float32 by default, for speed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.diagnostics.kernel_hypotheses import class_targets, prediction_errors


def _count(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _uniform(gen: torch.Generator, shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)


def _dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


class MLPEnsemble(nn.Module):
    """``members`` ReLU MLPs ``in_dim -> hidden -> ... -> out_dim``: ``[N, D] -> [E, N, K]``."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        out_dim: int,
        hidden: tuple[int, ...] = (128, 128),
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        sizes = [_count("in_dim", in_dim), *(_count("hidden", h) for h in hidden)]
        sizes.append(_count("out_dim", out_dim))
        self.members = _count("members", members)
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            self.weights.append(_uniform(gen, (members, a, b), a))
            self.biases.append(_uniform(gen, (members, 1, b), a))
        self.to(_dtype(dtype))

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(self.weights[0].dtype).expand(self.members, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            h = h if i == last else torch.relu(h)
        return h


def _phase_index() -> Tensor:
    """Pixel indices ``[4, 9, 9]`` into a flat 8x8 image: for each 2x2 pooling phase
    ``(py, px)``, each pooled position ``(i, j)`` of the 3x3 map and each 3x3 kernel offset
    ``(ky, kx)``, the pixel ``(2i + py + ky, 2j + px + kx)`` under the first convolution."""
    r = torch.arange(3)
    py, px, i, j, ky, kx = torch.meshgrid(r[:2], r[:2], r, r, r, r, indexing="ij")
    return ((2 * i + py + ky) * 8 + (2 * j + px + kx)).reshape(4, 9, 9)


class CNNEnsemble(nn.Module):
    """``members`` CNNs on 8x8 one-channel images given flat ``[N, 64]`` -> ``[E, N, K]``:
    ``conv3x3(c1) -> ReLU -> maxpool2 -> conv3x3(c2) -> ReLU -> linear`` with unpadded
    convolutions (8x8 -> 6x6 -> 3x3 -> 1x1), i.e. ``nn.Conv2d(1, c1, 3)``, ``nn.MaxPool2d(2)``,
    ``nn.Conv2d(c1, c2, 3)``, ``nn.Linear(c2, K)``. The first convolution is evaluated at the
    pixels of each of the four 2x2 pooling phases on shared patches, and the pooling is the
    maximum over the phases (before the bias and ReLU, which commute with it)."""

    def __init__(
        self,
        members: int,
        out_dim: int,
        channels: tuple[int, int] = (8, 32),
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels must hold two widths, got {channels!r}")
        c1, c2 = (_count("channels", c) for c in channels)
        self.members = _count("members", members)
        gen = torch.Generator().manual_seed(seed)
        self.w1, self.b1 = _uniform(gen, (members, 9, c1), 9), _uniform(gen, (members, 1, c1), 9)
        self.w2 = _uniform(gen, (members, 9 * c1, c2), 9 * c1)
        self.b2 = _uniform(gen, (members, 1, c2), 9 * c1)
        self.w3 = _uniform(gen, (members, c2, _count("out_dim", out_dim)), c2)
        self.b3 = _uniform(gen, (members, 1, out_dim), c2)
        self.register_buffer("index", _phase_index(), persistent=False)
        self.to(_dtype(dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 64:
            raise ValueError(f"x must be flat 8x8 images [N, 64], got {tuple(x.shape)}")
        n = x.shape[0]
        patches = x.to(self.w1.dtype)[:, self.index].transpose(0, 1)  # [4 phases, N, 9, 9]
        h = torch.matmul(patches.reshape(1, 4 * n * 9, 9), self.w1)  # [E, 4 N 9, c1]
        h = h.reshape(self.members, 4, n * 9, -1).amax(dim=1)  # pooling: max over phases
        h = torch.relu(h + self.b1).reshape(self.members, n, -1)  # [E, N, 9 c1], (i, j, c)
        h = torch.relu(torch.baddbmm(self.b2, h, self.w2))
        return torch.baddbmm(self.b3, h, self.w3)


def fit_ensemble(
    model: nn.Module, x: Tensor, targets: Tensor, *, steps: int = 200, lr: float = 1e-2
) -> Tensor:
    """Train every member on ``(x, targets[N, K])`` with full-batch Adam on its MSE for
    ``steps`` steps (the paper's code: Adam at lr 1e-3 on minibatches for a number of epochs);
    returns each member's final training MSE ``[E]``."""
    if targets.ndim != 2 or len(targets) != len(x):
        raise ValueError(f"targets must be [N, K] with N = {len(x)}, got {tuple(targets.shape)}")
    _count("steps", steps)
    lr = check_number("lr", lr, low=0.0, low_open=True, high=math.inf, high_open=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        per_member = ((model(x) - targets) ** 2).mean(dim=(1, 2))
        per_member.sum().backward()
        opt.step()
    with torch.no_grad():
        return ((model(x) - targets) ** 2).mean(dim=(1, 2))


@dataclass(frozen=True)
class NetworkHypotheses:
    """Per member: test MSE, test classification error and final training MSE ``[E]``."""

    mse: np.ndarray
    error: np.ndarray
    train_mse: np.ndarray


def network_hypothesis_errors(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    steps: int = 200,
    lr: float = 1e-2,
) -> NetworkHypotheses:
    """Fit the ensemble ``model`` to the class targets of ``y_train`` (one-hot, ``+-1`` for two
    classes) and measure every member on the test split."""
    for split, (a, b) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
        if len(a) != len(b):
            raise ValueError(f"x_{split} and y_{split} differ in length: {len(a)} vs {len(b)}")
    dtype = next(model.parameters()).dtype
    xt = torch.as_tensor(np.asarray(x_train), dtype=dtype)
    yt = torch.as_tensor(class_targets(y_train, num_classes), dtype=dtype)
    train_mse = fit_ensemble(model, xt, yt, steps=steps, lr=lr)
    with torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(x_test), dtype=dtype)).double().numpy()
    mse, err = prediction_errors(pred, class_targets(y_test, num_classes))
    return NetworkHypotheses(mse, err, train_mse.double().numpy())


register(
    "network_hypothesis_errors",
    kind="procedure",
    family="procedures",
    papers=(30,),
    summary="Test MSE and error of many MLPs / CNNs trained at once from random initialisations "
    "on the MSE to class targets (the network hypothesis spaces of the inductive-bias estimate).",
    defaults={"steps": 200, "lr": 1e-2},
    function=network_hypothesis_errors,
)
