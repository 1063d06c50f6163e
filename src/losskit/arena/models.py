"""The arena's models and their input standardisation.

Five models, small enough for a CPU:

- ``"linear"``: a linear probe ``x -> W x + b`` on features (images are flattened).
- ``"mlp"``: two hidden layers of 256 ReLU units.
- ``"mlp_small"``: one hidden layer of 32 ReLU units (the distillation track's student).
- ``"cnn"``: for 32x32x3 ``uint8`` images; three 3x3 conv blocks (32, 32, 64 channels, batch
  norm, ReLU; 2x2 max-pooling after the first two), global average pooling and a linear head
  (about 28k parameters, 4.4M multiply-adds per image, the widths of the classic
  "CIFAR-10 quick" net). It runs in channels-last memory format, faster on CPUs.
- ``"cnn_small"``: the same with 16, 16, 32 channels (about 7.8k parameters, 1.2M
  multiply-adds per image), the distillation track's CIFAR-10 student.

:class:`Standardizer` holds the training statistics: per-feature mean and standard deviation
for feature matrices ``[N, D]``, per-channel ones for images ``[N, 32, 32, 3]``. It converts
batches lazily, so a ``uint8`` image set stays ``uint8`` in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

MODELS = ("linear", "mlp", "cnn", "mlp_small", "cnn_small")
MLP_HIDDEN = 256
MLP_SMALL_HIDDEN = 32
CNN_CHANNELS = (32, 32, 64)
CNN_SMALL_CHANNELS = (16, 16, 32)
IMAGE_SHAPE = (32, 32, 3)


def is_image(x: np.ndarray) -> bool:
    """Whether ``x`` is a batch of 32x32x3 ``uint8`` images."""
    return x.dtype == np.uint8 and x.ndim == 4 and tuple(x.shape[1:]) == IMAGE_SHAPE


@dataclass(frozen=True)
class Standardizer:
    """Training-split statistics; ``image`` means per-channel statistics over HWC images."""

    mean: np.ndarray
    std: np.ndarray
    image: bool

    @classmethod
    def fit(cls, x: np.ndarray, eps: float = 1e-6) -> Standardizer:
        """Mean and std of ``x`` (features: per column; images: per channel). Constant
        columns get std 1 so they map to 0 instead of dividing by zero."""
        image = is_image(x)
        if not image and x.ndim != 2:
            raise ValueError(
                f"x must be features [N, D] or uint8 images [N, 32, 32, 3], got {x.shape}"
            )
        axes = (0, 1, 2) if image else 0
        mean = np.zeros(x.shape[-1], dtype=np.float64)
        sq = np.zeros_like(mean)
        for start in range(0, len(x), 4096):  # chunked: no float copy of a whole image set
            chunk = x[start : start + 4096].astype(np.float64)
            mean += chunk.sum(axis=axes)
            sq += (chunk**2).sum(axis=axes)
        count = len(x) * (x.shape[1] * x.shape[2] if image else 1)
        mean /= count
        std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
        std = np.where(std < eps, 1.0, std)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32), image=image)

    def __call__(self, x: np.ndarray) -> Tensor:
        """Standardised float32 tensor: ``[B, D]`` for features, ``[B, 3, 32, 32]`` (in
        channels-last memory format) for images."""
        out = (x.astype(np.float32) - self.mean) / self.std
        t = torch.from_numpy(np.ascontiguousarray(out))
        return t.permute(0, 3, 1, 2) if self.image else t  # NHWC memory = channels-last


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head for 32x32 RGB images."""

    def __init__(self, num_classes: int, channels: tuple[int, ...] = CNN_CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_model(kind: str, x_example: np.ndarray, num_classes: int) -> nn.Module:
    """The model ``kind`` for inputs shaped like ``x_example`` (features or images)."""
    if kind not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {kind!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if kind in ("cnn", "cnn_small"):
        if not is_image(x_example):
            raise ValueError(
                f"model {kind!r} needs uint8 images [N, 32, 32, 3], got {x_example.dtype} "
                f"{x_example.shape}"
            )
        channels = CNN_CHANNELS if kind == "cnn" else CNN_SMALL_CHANNELS
        return SmallCNN(num_classes, channels).to(memory_format=torch.channels_last)
    dim = int(np.prod(x_example.shape[1:]))
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(dim, num_classes))
    if kind == "mlp_small":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(dim, MLP_SMALL_HIDDEN),
            nn.ReLU(),
            nn.Linear(MLP_SMALL_HIDDEN, num_classes),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(dim, MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN, MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN, num_classes),
    )
