"""What a training recipe sees of an arena trial (:class:`RecipeRun`).

A recipe (:mod:`losskit.arena.recipes`) owns its models and loops, but it trains the trial's
model (``trial.model``) with the trial's optimiser, learning rate, batch size and epochs on
the scenario's training split, standardised once (:attr:`RecipeRun.x`), and is scored on the
clean test split like every other trial. :meth:`RecipeRun.fit_ce` is the arena's own
cross-entropy loop (the batches of :func:`losskit.arena.trial.run_trial`), for the stages of a
recipe that are plain training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit.arena.models import SmallCNN, build_model, is_image
from losskit.arena.scenario_data import ScenarioData
from losskit.arena.trial import Trial, make_optimizer, predict, take_step


class MeanPool(nn.Module):
    """Global average pooling of ``[N, C, H, W]`` feature maps to ``[N, C]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class RecipeRun:
    """One recipe trial: ``trial``, its ``data``, the standardised training inputs ``x``
    (float32; ``[N, 3, 32, 32]`` channels-last for images), observed labels ``y`` and the
    ``curves`` (``train_loss``, ``test_accuracy`` per epoch) the recipe fills."""

    def __init__(self, trial: Trial, data: ScenarioData) -> None:
        self.trial, self.data = trial, data
        self.x = data.std(data.x_train)
        self.y = torch.from_numpy(data.labels)
        self.curves: dict[str, list[float | None]] = {"train_loss": [], "test_accuracy": []}

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def image(self) -> bool:
        return is_image(self.data.x_train)

    def new_model(self) -> nn.Module:
        """A fresh ``trial.model`` (initialised from the global RNG)."""
        return build_model(self.trial.model, self.data.x_train[:1], self.num_classes)

    def split(self, model: nn.Module) -> tuple[nn.Module, nn.Linear]:
        """``(backbone, head)`` of an arena model with a hidden layer: the penultimate
        features and the last linear layer (the modules are shared, not copied)."""
        if isinstance(model, SmallCNN):
            return nn.Sequential(model.features, MeanPool()), model.head
        if not isinstance(model, nn.Sequential) or len(model) < 3:
            raise ValueError(
                f"this recipe needs a model with a hidden layer (mlp, mlp_small, cnn, "
                f"cnn_small), got {self.trial.model!r}"
            )
        return model[:-1], model[-1]

    def sequential(self, model: nn.Module) -> nn.Sequential:
        """The model as ``nn.Sequential(backbone..., head)`` (same modules)."""
        backbone, head = self.split(model)
        return nn.Sequential(*backbone, head)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The trial's optimiser (Adam or SGD, its lr and weight decay) over ``params``."""
        return make_optimizer(self.trial, list(params))

    def test_logits(self, model: nn.Module) -> np.ndarray:
        """Logits ``[N_test, C]`` of the clean test split (eval mode)."""
        return predict(model, self.data.std, self.data.ds.x_test)

    def test_accuracy(self, model: nn.Module) -> float:
        was_training = model.training
        acc = float(np.mean(self.test_logits(model).argmax(axis=1) == self.data.ds.y_test))
        model.train(was_training)
        return acc

    def log(self, train_loss: float | None, model: nn.Module | None) -> None:
        """Append one epoch to the curves (test accuracy of ``model``, or ``None``)."""
        self.curves["train_loss"].append(train_loss)
        self.curves["test_accuracy"].append(None if model is None else self.test_accuracy(model))

    def unlabeled_pool(self, ratio: float) -> tuple[np.ndarray, Tensor]:
        """Training rows the scenario dropped, at most ``ratio`` times the labelled count
        (a seeded random subset), as ``(rows into ds.x_train, standardised inputs)``."""
        rows = self.data.unlabeled_index()
        if len(rows) == 0:
            raise ValueError(
                f"recipe {self.trial.objective!r} needs an unlabeled pool: a scenario that "
                f"drops training samples (longtail:R, subset:F), got {self.trial.scenario!r}"
            )
        cap = int(ratio * len(self.y))
        if len(rows) > cap:
            rng = np.random.default_rng(self.trial.seed)
            rows = np.sort(rng.choice(rows, size=max(cap, 1), replace=False))
        return rows, self.data.std(self.data.ds.x_train[rows])

    def fit_ce(
        self,
        model: nn.Module,
        *,
        epochs: int,
        x: Tensor | None = None,
        y: Tensor | None = None,
        log: bool = False,
    ) -> None:
        """Cross-entropy training of ``model`` in place on ``(x, y)`` (default the whole
        training split) with the trial's optimiser; batches from ``torch.randperm`` with a
        generator seeded by ``trial.seed``, as :func:`~losskit.arena.trial.run_trial`.
        ``log``: append every epoch to the curves. A non-finite loss raises."""
        x = self.x if x is None else x
        y = self.y if y is None else torch.as_tensor(y)
        opt = self.optimizer(model.parameters())
        gen = torch.Generator().manual_seed(self.trial.seed)
        for _ in range(epochs):
            model.train()
            total = 0.0
            for idx in torch.randperm(len(y), generator=gen).split(self.trial.batch_size):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                if not take_step(opt, loss):
                    raise FloatingPointError(f"recipe {self.trial.objective!r}: non-finite loss")
                total += float(loss.detach()) * len(idx)
            if log:
                self.log(total / len(y), model)


def augment_images(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Random 32x32 crops of the 4-pixel zero-padded images and horizontal flips (each with
    probability 1/2), the standard CIFAR augmentation, for ``[N, C, H, W]`` batches."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(batch.shape[1])[None, :, None,
                 None], rows, cols]  # fmt: skip
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
