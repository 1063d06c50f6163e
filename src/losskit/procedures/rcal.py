"""RCAL (paper 32): representation calibration for noisy labels on long-tailed data.

Three stages, for any torch ``encoder`` (``x[N, ...] -> z[N, d]``) and a training set with
noisy labels:

1. **Contrastive pre-training** without labels, so neither the noise nor the imbalance shapes
   the representations: :func:`~losskit.procedures.imbalance_pretext.pretrain_backbone` with
   the ``"contrastive"`` pretext, i.e. two views of every input and the symmetric InfoNCE
   (:func:`losskit.embedding.info_nce_loss`, cosine, ``temperature``) through a projection
   MLP that is discarded. Views: ``m * (x + noise * e)``, Gaussian noise and feature dropout,
   for feature vectors; pass ``augment(batch, generator)`` for image augmentations. The paper
   uses MoCo (a momentum encoder and a queue) with SimCLR augmentations; this is the in-batch
   version that fits a CPU. The frozen result gives the reference representations
   ``z_i = f_0(x_i)``. ``pretrain_epochs=0`` skips the stage (an encoder trained elsewhere).
2. **Distributional calibration** (:mod:`losskit.procedures.rcal_statistics`): per labelled
   class, LOF outlier removal, Gaussian moments, tail classes averaged with their ``q``
   nearest head classes; then ``samples_per_class`` representations are drawn from every
   calibrated Gaussian (once, before training) and labelled with their class.
3. **Classifier learning with individual calibration**: the encoder (from ``f_0``) and a
   linear ``classifier`` are trained together with Adam on::

       L = lam CE(h(f(x_mix)), y_a) + (1 - lam) CE(h(f(x_mix)), y_b)     mixup, lam ~ Beta(a, a)
         + CE(h(s), y_s)                                                 sampled representations
         + beta * mean_i ||f(x_i) - z_i||^2                              individual calibration

   where ``x_mix = lam x_a + (1 - lam) x_b`` mixes a batch with a permutation of itself
   (``mixup_alpha = 0``: no mixup, plain CE) and each batch of real samples is paired with a
   chunk of the sampled ones (:func:`~losskit.procedures.paired_batches.paired_batches`).
   The regulariser keeps the learned representations near the contrastive ones, which the
   paper credits for robustness to the noisy labels; ``beta = reg_weight``. With
   ``mixup_alpha = 0``, ``reg_weight = 0`` and ``samples_per_class = 0`` the stage is plain
   cross-entropy training of encoder and classifier on the same batches (tested).

Not verified against the paper's equations or code (neither could be read): the squared
Euclidean distance of the regulariser, the equal weights of the three terms, sampling once
with ``samples_per_class`` defaulting to ``round(N / C)`` (a balanced sampled set as large as
the real one) and the defaults of ``q``, ``mixup_alpha`` and ``reg_weight``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.labels.noise import check_class_labels, check_num_classes
from losskit.procedures.imbalance_pretext import pretrain_backbone
from losskit.procedures.paired_batches import check_count, generators, paired_batches
from losskit.procedures.rcal_statistics import (
    LOF_THRESHOLD,
    ClassGaussians,
    robust_class_gaussians,
    sample_class_gaussians,
)

Augment = Callable[[Tensor, torch.Generator], Tensor]


def individual_calibration_loss(features: Tensor, reference: Tensor) -> Tensor:
    """``mean_i ||features_i - reference_i||^2`` over rows ``[N, d]`` (reference detached)."""
    if not isinstance(features, Tensor) or features.ndim != 2 or len(features) == 0:
        raise ValueError("features must be a non-empty tensor [N, d]")
    if not isinstance(reference, Tensor) or reference.shape != features.shape:
        raise ValueError(
            f"reference must be a tensor of shape {tuple(features.shape)} like features"
        )
    return (features - reference.detach()).pow(2).sum(dim=1).mean()


@dataclass
class RCALResult:
    """The trained ``encoder`` and ``classifier``, the calibrated ``gaussians``, the LOF
    ``inliers`` mask ``[N]``, the contrastive ``reference`` representations ``[N, d]``, the
    contrastive loss per epoch, one log dict per classifier epoch (``loss``, ``ce``,
    ``sampled_ce``, ``reg`` and what ``evaluate`` returned) and ``diagnostics``."""

    encoder: nn.Module
    classifier: nn.Module
    gaussians: ClassGaussians
    inliers: np.ndarray
    reference: Tensor
    pretrain_history: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Classifier logits of ``x`` in eval mode."""
        self.encoder.eval()
        self.classifier.eval()
        return self.classifier(self.encoder(x))


def _labels(y: Tensor | np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    a = check_class_labels(a, num_classes, name=name)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like x, got {a.shape}")
    return a


def _diagnostics(
    y: np.ndarray, keep: np.ndarray, gaussians: ClassGaussians, clean: np.ndarray | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kept_fraction": float(keep.mean()),
        "tail_classes": np.flatnonzero(gaussians.tail).tolist(),
        "borrowed": gaussians.borrowed.tolist(),
    }
    if clean is not None:
        right = y == clean
        out["clean_fraction"] = float(right.mean())
        out["kept_clean_fraction"] = float(right[keep].mean())
        out["removed_noisy_recall"] = float((~keep[~right]).mean()) if (~right).any() else 0.0
    return out


def rcal(
    encoder: nn.Module,
    x: Tensor,
    y: Tensor | np.ndarray,
    num_classes: int,
    *,
    pretrain_epochs: int = 100,
    pretrain_lr: float = 1e-3,
    pretrain_batch_size: int = 256,
    temperature: float = 0.2,
    noise: float = 0.1,
    drop: float = 0.2,
    projection_dim: int = 64,
    augment: Augment | None = None,
    lof_neighbors: int = 20,
    lof_threshold: float | None = LOF_THRESHOLD,
    lof_contamination: float | None = None,
    q: int = 1,
    num_head: int | None = None,
    alpha: float = 0.0,
    samples_per_class: int | None = None,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    reg_weight: float = 1.0,
    mixup_alpha: float = 1.0,
    classifier: nn.Module | None = None,
    clean: Tensor | np.ndarray | None = None,
    evaluate: Callable[[nn.Module, nn.Module, int], dict[str, Any]] | None = None,
    seed: int = 0,
) -> RCALResult:
    """Train ``encoder`` (in place) and a classifier on ``x[N, ...]`` with noisy labels
    ``y[N]`` by RCAL; see the module docstring. ``classifier`` defaults to a seeded
    ``nn.Linear(d, num_classes)``; ``clean`` (true labels) feeds the diagnostics only;
    ``evaluate(encoder, classifier, epoch)`` runs after every classifier epoch."""
    if not isinstance(encoder, nn.Module):
        raise ValueError("encoder must be a torch nn.Module")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2 or len(x) < 2:
        raise ValueError("x must be a floating tensor [N, ...] with N >= 2")
    num_classes = check_num_classes(num_classes)
    labels = _labels(y, len(x), num_classes, "y")
    true = None if clean is None else _labels(clean, len(x), num_classes, "clean")
    pretrain_epochs = check_count("pretrain_epochs", pretrain_epochs, 0)
    epochs = check_count("epochs", epochs, 1)
    batch_size = check_count("batch_size", batch_size, 2)
    seed = check_count("seed", seed, 0)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    reg_weight = check_number("reg_weight", reg_weight, low=0.0)
    mixup_alpha = check_number("mixup_alpha", mixup_alpha, low=0.0)
    per_class = round(len(x) / num_classes) if samples_per_class is None else samples_per_class
    per_class = check_count("samples_per_class", per_class, 0)

    history: list[float] = []
    if pretrain_epochs:
        history = pretrain_backbone(
            encoder, x, pretext="contrastive", epochs=pretrain_epochs,
            batch_size=pretrain_batch_size, lr=pretrain_lr, temperature=temperature,
            noise=noise, drop=drop, projection_dim=projection_dim, augment=augment, seed=seed,
        )  # fmt: skip
    encoder.eval()
    with torch.no_grad():
        reference = encoder(x).detach()
    if reference.ndim != 2:
        raise ValueError(f"encoder must map x to [N, d], got {tuple(reference.shape)}")
    gaussians, keep = robust_class_gaussians(
        reference, labels, num_classes, lof_neighbors=lof_neighbors,
        lof_threshold=lof_threshold, lof_contamination=lof_contamination, q=q,
        num_head=num_head, alpha=alpha,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    xs, ys = sample_class_gaussians(gaussians, per_class, rng)
    sampled = torch.as_tensor(xs, dtype=reference.dtype)
    sampled_y = torch.as_tensor(ys)
    if classifier is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            classifier = nn.Linear(reference.shape[1], num_classes)
    y_t = torch.as_tensor(labels)
    params = list(encoder.parameters()) + list(classifier.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen, pool_gen = generators(seed)
    result = RCALResult(encoder, classifier, gaussians, keep, reference, history)
    result.diagnostics = _diagnostics(labels, keep, gaussians, true)
    for epoch in range(epochs):
        encoder.train()
        classifier.train()
        sums = np.zeros(4)
        batches = paired_batches(len(x), len(sampled), batch_size, gen, pool_gen)
        for idx, pool in batches:
            xb, yb = x[idx], y_t[idx]
            if mixup_alpha > 0:
                lam = float(rng.beta(mixup_alpha, mixup_alpha))
                perm = torch.randperm(len(idx), generator=gen)
                out = classifier(encoder(lam * xb + (1.0 - lam) * xb[perm]))
                ce = lam * F.cross_entropy(out, yb) + (1 - lam) * F.cross_entropy(out, yb[perm])
            else:
                out = classifier(encoder(xb))
                ce = F.cross_entropy(out, yb)
            zero = out.new_zeros(())
            sce = F.cross_entropy(classifier(sampled[pool]), sampled_y[pool]) if len(pool) else zero
            reg = individual_calibration_loss(encoder(xb), reference[idx]) if reg_weight else zero
            loss = ce + sce + reg_weight * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss, ce, sce, reg]).detach().numpy()
        means = (sums / len(batches)).tolist()
        log: dict[str, Any] = {"epoch": epoch, "loss": means[0], "ce": means[1],
                               "sampled_ce": means[2], "reg": means[3]}  # fmt: skip
        if evaluate is not None:
            log.update(evaluate(encoder, classifier, epoch))
        result.history.append(log)
    encoder.eval()
    classifier.eval()
    return result


register(
    "rcal",
    kind="procedure",
    family="procedures",
    papers=(32,),
    summary="RCAL: contrastive representations, LOF-robust per-class Gaussians with tail classes "
    "calibrated from head classes, sampled features and a representation regulariser.",
    defaults={
        "q": 1,
        "lof_neighbors": 20,
        "lof_threshold": LOF_THRESHOLD,
        "reg_weight": 1.0,
        "mixup_alpha": 1.0,
    },  # fmt: skip
    function=rcal,
)
