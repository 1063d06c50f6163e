"""Pretext tasks for paper 15's self-supervised pre-training (SSP) of a backbone.

- ``"rotation"`` (the paper's CIFAR pretext, ``pretrain_rot.py`` of
  ``YyzHarry/imbalanced-semi-self``): every input, seen as a square image of
  ``image_shape`` (``(H, W)`` or ``(C, H, W)``, ``H == W``; flat rows are reshaped), is turned
  by ``k * 90`` degrees, ``k`` drawn as a random permutation of ``[0, 1, 2, 3]`` repeated
  over the batch (each rotation about a quarter of the batch, as in the code's
  ``rotation``), and a linear head on the backbone's features predicts ``k`` (4-way CE).
- ``"contrastive"`` (SimCLR-style, for inputs that are not images, e.g. sentence
  embeddings): two views of every input, ``v = m * (x + noise * e)`` with ``e ~ N(0, I)``
  and a feature-dropout mask ``m ~ Bernoulli(1 - drop)``; a projection MLP ``[d, d, proj]``
  on the backbone's features and the symmetric InfoNCE
  ``(info_nce(z1, z2) + info_nce(z2, z1)) / 2`` (:func:`losskit.embedding.info_nce_loss`,
  cosine similarities, ``temperature``) pull the two views of an input together. The paper
  uses MoCo on ImageNet-LT; this is the in-batch version that fits a CPU.

The pretext head is discarded afterwards; only the backbone keeps what it learned.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.embedding.info_nce import info_nce_loss
from losskit.procedures.paired_batches import check_count, generators

PRETEXTS = ("rotation", "contrastive")


def _check_shape(x: Tensor, image_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if image_shape is None or len(image_shape) not in (2, 3):
        raise ValueError(f"image_shape must be (H, W) or (C, H, W), got {image_shape!r}")
    shape = tuple(int(s) for s in image_shape)
    if shape[-1] != shape[-2] or min(shape) < 1:
        raise ValueError(f"rotations need square images, got image_shape {shape}")
    if math.prod(x.shape[1:]) != math.prod(shape):
        raise ValueError(f"rows of x (shape {tuple(x.shape[1:])}) do not hold images {shape}")
    return shape


def rotate_images(x: Tensor, turns: Tensor, image_shape: tuple[int, ...]) -> Tensor:
    """Each row of ``x`` turned by ``turns[i] * 90`` degrees counter-clockwise
    (``torch.rot90`` on the last two image axes); the result has the shape of ``x``."""
    shape = _check_shape(x, image_shape)
    if tuple(turns.shape) != (len(x),) or turns.is_floating_point():
        raise ValueError(f"turns must be integers of shape ({len(x)},)")
    img = x.reshape(len(x), *shape)
    out = img.clone()
    for k in range(1, 4):
        mask = (turns % 4) == k
        if bool(mask.any()):
            out[mask] = torch.rot90(img[mask], k, dims=(-2, -1))
    return out.reshape(x.shape)


def rotation_task(
    x: Tensor, image_shape: tuple[int, ...], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``(rotated x, k)`` with ``k`` a random permutation of ``[0, 1, 2, 3] * ceil(N / 4)``
    cut to ``N`` (balanced rotations, as the reference code)."""
    n = len(x)
    pattern = torch.arange(4).repeat(n // 4 + 1)
    turns = pattern[torch.randperm(len(pattern), generator=generator)][:n]
    return rotate_images(x, turns, image_shape), turns


def noisy_views(
    x: Tensor, *, noise: float, drop: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Two views ``m * (x + noise * e)`` of ``x`` (fresh ``e ~ N(0, I)`` and dropout masks
    ``m ~ Bernoulli(1 - drop)`` per view)."""
    noise = check_number("noise", noise, low=0.0)
    drop = check_number("drop", drop, low=0.0, high=1.0, high_open=True)

    def view() -> Tensor:
        e = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        keep = torch.rand(x.shape, generator=generator) >= drop
        return (x + noise * e) * keep

    return view(), view()


def pretrain_backbone(
    backbone: nn.Module,
    x: Tensor,
    *,
    pretext: str = "rotation",
    image_shape: tuple[int, ...] | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    temperature: float = 0.2,
    noise: float = 0.1,
    drop: float = 0.2,
    projection_dim: int = 64,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    seed: int = 0,
) -> list[float]:
    """Train ``backbone`` (in place; ``x[N, ...] -> features [N, d]``) on ``pretext`` with
    Adam; returns the mean pretext loss of every epoch. The pretext head is built here
    (under ``torch.manual_seed(seed)``) and dropped at the end. ``augment(batch,
    generator)``, when given, transforms every batch before the pretext's own transform."""
    if pretext not in PRETEXTS:
        raise ValueError(f"pretext must be one of {PRETEXTS}, got {pretext!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or len(x) < 2:
        raise ValueError("x must be a floating tensor [N, ...] with N >= 2")
    if pretext == "rotation":
        _check_shape(x, image_shape)
    epochs = check_count("epochs", epochs, 1)
    batch_size = check_count("batch_size", batch_size, 2)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    check_number("temperature", temperature, low=0.0, low_open=True)
    projection_dim = check_count("projection_dim", projection_dim, 1)
    with torch.no_grad():
        was = backbone.training
        feats = backbone.eval()(x[:2])
        backbone.train(was)
    if feats.ndim != 2:
        raise ValueError(f"backbone must map x to features [N, d], got {tuple(feats.shape)}")
    d = feats.shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if pretext == "rotation":
            head: nn.Module = nn.Linear(d, 4)
        else:
            head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen, aug = generators(seed)
    history = []
    backbone.train()
    for _ in range(epochs):
        total, steps = 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            if len(idx) < 2:
                continue
            xb = x[idx] if augment is None else augment(x[idx], aug)
            if pretext == "rotation":
                xr, turns = rotation_task(xb, image_shape, aug)
                loss = F.cross_entropy(head(backbone(xr)), turns)
            else:
                v1, v2 = noisy_views(xb, noise=noise, drop=drop, generator=aug)
                z1, z2 = head(backbone(v1)), head(backbone(v2))
                loss = 0.5 * (
                    info_nce_loss(z1, z2, temperature=temperature)
                    + info_nce_loss(z2, z1, temperature=temperature)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        history.append(total / max(steps, 1))
    return history


register(
    "ssp_pretext",
    kind="procedure",
    family="procedures",
    papers=(15,),
    summary="Self-supervised pre-training of a backbone: rotation prediction or noisy-view "
    "InfoNCE, the first stage of SSP.",
    defaults={"pretext": "rotation", "temperature": 0.2, "noise": 0.1, "drop": 0.2},
    function=pretrain_backbone,
)
