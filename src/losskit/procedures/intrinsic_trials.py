"""One seed of the paper-22 demonstration (:mod:`losskit.procedures.intrinsic_demo`).

Every input lives in pixel space: features in ``[0, 1]`` (digits: pixels / 16; Olivetti:
grey levels / 255; CIFAR-10: RGB / 255, images ``[N, 3, 32, 32]``). Intrinsic dimension and
label sharpness are measured there, and the attacks perturb there: each arena model is
wrapped in :class:`PixelModel`, which standardises with the training statistics inside.

- :func:`properties`: ``d_data`` (MLE, k = 20, and TwoNN) and ``K_F`` on ``M`` random
  training points, clean and with 10 % of the labels flipped.
- :func:`scaling`: test cross-entropy and error of models trained on growing subsets, and
  ``d_repr`` (penultimate layer) of the model trained on the largest subset.
- :func:`pair_tasks`: binary class-pair tasks: ``K_F`` of the training set against the
  model's clean, FGSM and PGD accuracy (L-infinity) on test images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit.arena.datasets import Dataset
from losskit.arena.models import build_model
from losskit.diagnostics.adversarial import robust_accuracy
from losskit.diagnostics.intrinsic import label_sharpness, mle_intrinsic_dim, twonn_intrinsic_dim

DATASETS = ("digits", "cifar10", "olivetti")
MODEL = {"digits": "mlp", "cifar10": "cnn_small", "olivetti": "mlp"}


@dataclass(frozen=True)
class Config:
    """Sizes of one run (``QUICK`` for tests, ``FULL`` for the reported numbers)."""

    cifar_points: int  # CIFAR-10 training images for d_data (the largest training subset)
    cifar_test: int  # CIFAR-10 test images for losses and attacks
    kf_points: int  # M, the sample on which K_F is evaluated (paper: 1000)
    sizes: dict[str, tuple[int, ...]]  # training-set sizes (Olivetti: images per person)
    steps: dict[str, int]  # optimiser steps per training run (batch 64)
    digit_pairs: tuple[tuple[int, int], ...]
    cifar_pairs: tuple[tuple[int, int], ...]
    pair_train: int  # CIFAR-10 training images per pair task
    pair_test: int  # test images attacked per pair task (at most)
    eps: dict[str, float]  # L-infinity radius in pixel units
    pgd_steps: int


# class pairs (digits: easy and hard digit pairs; CIFAR-10: class indices)
_DIGIT_PAIRS = ((0, 1), (3, 5), (4, 9), (1, 7), (3, 8), (0, 6), (2, 3), (5, 9), (6, 7), (1, 8))
_CIFAR_PAIRS = ((0, 1), (3, 5), (1, 9), (4, 7), (0, 8), (6, 9))
QUICK = Config(
    cifar_points=200,
    cifar_test=100,
    kf_points=200,
    sizes={"digits": (50, 200), "cifar10": (100, 200), "olivetti": (2, 4)},
    steps={"digits": 30, "cifar10": 4, "olivetti": 20, "digits_pair": 30, "cifar10_pair": 4},
    digit_pairs=_DIGIT_PAIRS[:3],
    cifar_pairs=_CIFAR_PAIRS[:2],
    pair_train=100,
    pair_test=100,
    eps={"digits": 0.1, "cifar10": 2 / 255},
    pgd_steps=2,
)
FULL = Config(
    cifar_points=2000,
    cifar_test=2000,
    kf_points=1000,
    sizes={
        "digits": (40, 80, 160, 320, 640, 1257),
        "cifar10": (250, 500, 1000, 2000),
        "olivetti": (2, 3, 5, 7),
    },
    steps={
        "digits": 300,
        "cifar10": 400,
        "olivetti": 150,
        "digits_pair": 200,
        "cifar10_pair": 150,
    },
    digit_pairs=_DIGIT_PAIRS,
    cifar_pairs=_CIFAR_PAIRS,
    pair_train=1000,
    pair_test=400,
    eps={"digits": 0.1, "cifar10": 2 / 255},
    pgd_steps=10,
)


class PixelModel(nn.Module):
    """``body((x - mean) / std)`` for pixel inputs; ``features`` is the penultimate layer."""

    def __init__(self, body: nn.Module, mean: Tensor, std: Tensor, image: bool):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", mean.reshape(shape).clone())
        self.register_buffer("std", std.reshape(shape).clone())
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body((x - self.mean) / self.std)

    def features(self, x: Tensor) -> Tensor:
        z = (x - self.mean) / self.std
        if hasattr(self.body, "head"):  # SmallCNN: pooled convolutional features
            return self.body.features(z).mean(dim=(2, 3))
        return self.body[:-1](z)


def pixels(name: str, x: np.ndarray) -> Tensor:
    """Inputs of dataset ``name`` as float32 pixels in [0, 1] (CIFAR: ``[N, 3, 32, 32]``)."""
    if name == "cifar10":
        return torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def train(name: str, x: Tensor, y: np.ndarray, classes: int, *, steps: int, seed: int):
    """The arena model for ``name`` trained with AdamW (lr 3e-3 for the CNN, 1e-3 for the
    MLP, weight decay 1e-2, batch 64, ``steps`` steps over reshuffled epochs), in eval mode."""
    image = name == "cifar10"
    dims = (0, 2, 3) if image else (0,)
    mean, std = x.mean(dim=dims), x.std(dim=dims, unbiased=False)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)  # constant pixels map to 0
    example = np.zeros((1, 32, 32, 3), np.uint8) if image else x[:1].numpy()
    torch.manual_seed(seed)
    model = PixelModel(build_model(MODEL[name], example, classes), mean, std, image)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3 if image else 1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    target = torch.as_tensor(y)
    order = torch.empty(0, dtype=torch.long)
    model.train()
    for _ in range(steps):
        if len(order) < min(64, len(x)):
            order = torch.randperm(len(x), generator=gen)
        idx, order = order[:64], order[64:]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), target[idx]).backward()
        opt.step()
        sched.step()
    return model.eval()


def evaluate(model: nn.Module, x: Tensor, y: np.ndarray) -> tuple[float, float]:
    """Test cross-entropy and error."""
    with torch.no_grad():
        logits = torch.cat([model(x[s : s + 512]) for s in range(0, len(x), 512)])
    target = torch.as_tensor(y)
    loss = float(F.cross_entropy(logits, target))
    return loss, float((logits.argmax(1) != target).float().mean())


def _flip(y: np.ndarray, rate: float, classes: int, rng: np.random.Generator) -> np.ndarray:
    out = y.copy()
    idx = rng.choice(len(y), size=round(rate * len(y)), replace=False)
    out[idx] = (y[idx] + rng.integers(1, classes, size=len(idx))) % classes
    return out


def _flat(x: Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).numpy()


def _cifar_subsets(data: dict[str, Dataset], cfg: Config, rng: np.random.Generator):
    train = rng.choice(len(data["cifar10"].y_train), size=cfg.cifar_points, replace=False)
    test = rng.choice(len(data["cifar10"].y_test), size=cfg.cifar_test, replace=False)
    return train, test


def properties(data: dict[str, Dataset], cfg: Config, seed: int) -> dict[str, dict]:
    """``d_data`` (MLE k = 20, TwoNN) and ``K_F`` (clean / 10 % flipped) per dataset: the
    dimension of the digits training split, ``cifar_points`` random CIFAR-10 training images
    and all 400 faces; ``K_F`` on ``kf_points`` random training points of each."""
    rng = np.random.default_rng(seed)
    c_train, _ = _cifar_subsets(data, cfg, rng)
    digits, cifar, faces = data["digits"], data["cifar10"], data["olivetti"]
    x_cifar = _flat(pixels("cifar10", cifar.x_train[c_train]))
    points = {  # name: (points for d_data, training points and labels for K_F)
        "digits": (digits.x_train, digits.x_train, digits.y_train),
        "cifar10": (x_cifar, x_cifar, cifar.y_train[c_train]),
        "olivetti": (np.concatenate([faces.x_train, faces.x_test]), faces.x_train, faces.y_train),
    }
    out = {}
    for name, (x_id, x, y) in points.items():
        m = rng.choice(len(x), size=min(cfg.kf_points, len(x)), replace=False)
        noisy = _flip(y[m], 0.1, data[name].num_classes, rng)
        out[name] = {
            "n": len(x_id),
            "dim": int(x_id.shape[1]),
            "mle": mle_intrinsic_dim(x_id, k=20, duplicates="drop"),
            "twonn": twonn_intrinsic_dim(x_id, duplicates="drop"),
            "kf": label_sharpness(x[m], y[m]),
            "kf_noisy": label_sharpness(x[m], noisy),
            "m": len(m),
        }
    return out


def scaling(data: dict[str, Dataset], cfg: Config, seed: int) -> dict[str, dict]:
    """Test loss / error against training-set size, and ``d_repr`` of the largest model on
    the same points as ``d_data`` (digits, CIFAR-10: the training points; Olivetti: all)."""
    rng = np.random.default_rng(seed)
    c_train, c_test = _cifar_subsets(data, cfg, rng)
    out = {}
    for name in DATASETS:
        ds = data[name]
        if name == "cifar10":
            x_all, y_all = pixels(name, ds.x_train[c_train]), ds.y_train[c_train]
            xt, yt = pixels(name, ds.x_test[c_test]), ds.y_test[c_test]
        else:
            x_all, y_all = pixels(name, ds.x_train), ds.y_train
            xt, yt = pixels(name, ds.x_test), ds.y_test
        perm = rng.permutation(len(y_all))
        rows = {"n": [], "loss": [], "error": []}
        for size in cfg.sizes[name]:
            if name == "olivetti":  # `size` images of every person
                idx = np.concatenate([perm[y_all[perm] == c][:size] for c in range(ds.num_classes)])
            else:
                idx = perm[:size]
            model = train(
                name, x_all[idx], y_all[idx], ds.num_classes, steps=cfg.steps[name], seed=seed
            )
            loss, err = evaluate(model, xt, yt)
            rows["n"].append(len(idx))
            rows["loss"].append(loss)
            rows["error"].append(err)
        reps = torch.cat([x_all, xt]) if name == "olivetti" else x_all
        with torch.no_grad():
            z = model.features(reps).numpy()
        rows["d_repr_mle"] = mle_intrinsic_dim(z, k=20, duplicates="drop")
        rows["d_repr_twonn"] = twonn_intrinsic_dim(z, duplicates="drop")
        rows["repr_width"] = int(z.shape[1])
        out[name] = rows
    return out


def _pair(ds: Dataset, a: int, b: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    y = getattr(ds, f"y_{split}")
    idx = np.flatnonzero((y == a) | (y == b))
    return idx, (y[idx] == b).astype(np.int64)


def pair_tasks(data: dict[str, Dataset], cfg: Config, seed: int) -> list[dict]:
    """Binary class-pair tasks of digits and CIFAR-10: ``K_F`` of the training set (all of
    it for digits, ``pair_train`` random images for CIFAR-10) against robustness."""
    rng = np.random.default_rng(seed)
    out = []
    tasks = [("digits", p) for p in cfg.digit_pairs] + [("cifar10", p) for p in cfg.cifar_pairs]
    for name, (a, b) in tasks:
        ds = data[name]
        tr, ytr = _pair(ds, a, b, "train")
        te, yte = _pair(ds, a, b, "test")
        if name == "cifar10":
            keep = rng.choice(len(tr), size=min(cfg.pair_train, len(tr)), replace=False)
            tr, ytr = tr[keep], ytr[keep]
        pick = rng.choice(len(te), size=min(cfg.pair_test, len(te)), replace=False)
        te, yte = te[pick], yte[pick]
        x, xt = pixels(name, ds.x_train[tr]), pixels(name, ds.x_test[te])
        model = train(name, x, ytr, 2, steps=cfg.steps[f"{name}_pair"], seed=seed)
        loss, err = evaluate(model, xt, yte)
        target, eps = torch.as_tensor(yte), cfg.eps[name]
        gen = torch.Generator().manual_seed(seed)
        out.append(
            {
                "dataset": name,
                "pair": f"{ds.class_names[a]}-{ds.class_names[b]}",
                "kf": label_sharpness(_flat(x), ytr),
                "loss": loss,
                "acc": 1.0 - err,
                "fgsm": robust_accuracy(model, xt, target, attack="fgsm", eps=eps),
                "pgd": robust_accuracy(
                    model, xt, target, attack="pgd", eps=eps, steps=cfg.pgd_steps, generator=gen
                ),
            }
        )
    return out
