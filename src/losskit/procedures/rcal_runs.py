"""One seed of the paper-32 comparison: the arena MLP trained through noisy, long-tailed labels.

:func:`make_split` builds the training set: a label scenario (``losskit.labels``; a
``longtail:rho`` step first, so the tail is defined by the true classes), then, for
``noise="prior"``, the paper's flip model (Assumption 3.1 (3), also RoLT's)::

    P(observed j | true k) = eta * n_j / n   (j != k),   the rest stays k

which sends most flips to the head classes: every class loses a share ``eta (1 - n_k / n)``
of its samples and the tail receives few. ``noise="scenario"`` uses the scenario's own noise
(e.g. ``longtail:10+symmetric:0.4``: uniform flips, so the tail classes are flooded).

:func:`run_seed` trains, on the same split and batch order:

- ``ce``, ``gce`` (``generalized_cross_entropy``, q = 0.7), ``ldam`` (LDAM-DRW,
  ``drw_start`` at 80 % of the epochs, counts of the observed labels): the arena MLP;
- ``rcal``: :func:`~losskit.procedures.rcal.rcal` with the MLP's hidden layers as encoder
  and its last layer as classifier, contrastive pre-training once per seed and shared by the
  RCAL variants: ``rcal_lof20`` (LOF drops the top 20 % per class instead of the 1.5
  threshold), ``rcal_no_tail`` (``q = 0``: no borrowing from head classes),
  ``rcal_no_sampling`` (no sampled representations: contrastive start, regulariser and mixup
  only) and ``rcal_no_reg`` (``reg_weight = 0``).

Reported per arm: balanced test accuracy, head / medium / tail test accuracy (classes split
into thirds by their true training counts, :func:`losskit.labels.class_groups`), and for
the RCAL arms the LOF diagnostics (share of clean labels before and after removal).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ARMS = ("ce", "gce", "ldam", "rcal", "rcal_lof20", "rcal_no_tail", "rcal_no_sampling",
        "rcal_no_reg")  # fmt: skip
RCAL_VARIANTS = {
    "rcal": {},
    "rcal_lof20": {"lof_contamination": 0.2},
    "rcal_no_tail": {"q": 0},
    "rcal_no_sampling": {"samples_per_class": 0},
    "rcal_no_reg": {"reg_weight": 0.0},
}


@dataclass(frozen=True)
class Setting:
    """Training sizes shared by all arms of a scenario."""

    epochs: int
    pretrain_epochs: int
    eta: float = 0.4  # the "prior" flip rate
    lr: float = 1e-3
    batch_size: int = 128


@dataclass
class Split:
    x: Tensor
    y: Tensor  # noisy labels
    clean: Tensor
    x_test: Tensor
    y_test: np.ndarray
    num_classes: int
    groups: dict[str, np.ndarray]
    noise_rate: float


def prior_flip_matrix(counts: np.ndarray, eta: float) -> np.ndarray:
    """``T[k, j] = eta n_j / n`` off the diagonal, ``T[k, k] = 1 - eta (n - n_k) / n``."""
    n = np.asarray(counts, dtype=np.float64)
    t = np.tile(eta * n / n.sum(), (len(n), 1))
    np.fill_diagonal(t, 0.0)
    np.fill_diagonal(t, 1.0 - t.sum(axis=1))
    return t


def size_order(y_train: np.ndarray, num_classes: int) -> np.ndarray:
    """Relabelling map ``old -> new`` that numbers classes by decreasing training size, so
    that a ``longtail`` step keeps the largest class as its head (ties: smaller id)."""
    counts = np.bincount(y_train, minlength=num_classes)
    order = np.lexsort((np.arange(num_classes), -counts))
    remap = np.empty(num_classes, dtype=np.int64)
    remap[order] = np.arange(num_classes)
    return remap


def make_split(ds: Any, spec: str, noise: str, seed: int, eta: float) -> Split:
    """The corrupted, standardised training set of one seed and the test set."""
    from losskit.arena.models import Standardizer
    from losskit.labels import apply_scenario, class_groups, sample_from_noise_matrix

    remap = size_order(ds.y_train, ds.num_classes)
    c = apply_scenario(spec, remap[ds.y_train], ds.num_classes, seed=seed)
    true_counts = np.bincount(c.clean, minlength=ds.num_classes)
    labels = c.labels
    if noise == "prior":
        flips = prior_flip_matrix(true_counts, eta)
        labels = sample_from_noise_matrix(c.clean, flips, np.random.default_rng(seed + 7919))
    x = ds.x_train[c.index]
    std = Standardizer.fit(x)
    return Split(std(x), torch.as_tensor(labels), torch.as_tensor(c.clean), std(ds.x_test),
                 remap[ds.y_test], ds.num_classes, class_groups(true_counts),
                 float((labels != c.clean).mean()))  # fmt: skip


def _mlp(split: Split, seed: int) -> nn.Sequential:
    from losskit.arena.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model("mlp", split.x[:1].numpy(), split.num_classes)


def _scores(logits: Tensor, split: Split) -> dict[str, float]:
    from losskit.arena.metrics import balanced_accuracy, group_accuracy

    pred = logits.argmax(1).numpy()
    out = {"balanced_accuracy": balanced_accuracy(split.y_test, pred, split.num_classes)}
    for g, acc in group_accuracy(split.y_test, pred, split.groups).items():
        out[f"{g}_accuracy"] = acc
    return out


def _train(model: nn.Module, loss_fn: nn.Module, split: Split, st: Setting, seed: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=st.lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(st.epochs):
        if hasattr(loss_fn, "set_epoch"):
            loss_fn.set_epoch(epoch)
        model.train()
        for idx in torch.randperm(len(split.y), generator=gen).split(st.batch_size):
            loss = loss_fn(model(split.x[idx]), split.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def run_seed(ds: Any, spec: str, noise: str, seed: int, st: Setting) -> dict[str, Any]:
    """Every arm of :data:`ARMS` on one seed; a JSON-ready dict."""
    import losskit
    from losskit.procedures.imbalance_pretext import pretrain_backbone
    from losskit.procedures.rcal import rcal

    split = make_split(ds, spec, noise, seed, st.eta)
    counts = np.bincount(split.y.numpy(), minlength=split.num_classes).clip(min=1)
    losses = {
        "ce": nn.CrossEntropyLoss(),
        "gce": losskit.get("generalized_cross_entropy").build(),
        "ldam": losskit.get("ldam").build(class_counts=counts.tolist(),
                                          drw_start=int(0.8 * st.epochs)),
    }  # fmt: skip
    scores: dict[str, dict[str, float]] = {}
    for arm, loss_fn in losses.items():
        model = _mlp(split, seed)
        _train(model, loss_fn, split, st, seed)
        with torch.no_grad():
            scores[arm] = _scores(model(split.x_test), split)
    base = _mlp(split, seed)
    contrastive = pretrain_backbone(
        base[:-1],
        split.x,
        pretext="contrastive",
        epochs=st.pretrain_epochs,
        batch_size=256,
        seed=seed,
    )
    diagnostics = {}
    for arm, overrides in RCAL_VARIANTS.items():
        model = copy.deepcopy(base)
        res = rcal(model[:-1], split.x, split.y, split.num_classes, classifier=model[-1],
                   pretrain_epochs=0, epochs=st.epochs, batch_size=st.batch_size, lr=st.lr,
                   clean=split.clean, seed=seed, **overrides)  # fmt: skip
        scores[arm] = _scores(res.logits(split.x_test), split)
        d = res.diagnostics
        diagnostics[arm] = {
            k: d[k]
            for k in (
                "kept_fraction",
                "clean_fraction",
                "kept_clean_fraction",
                "removed_noisy_recall",
            )
        }
    return {
        "scores": scores,
        "lof": diagnostics,
        "contrastive_loss": contrastive,
        "noise_rate": split.noise_rate,
        "train_counts": np.bincount(split.clean.numpy(), minlength=split.num_classes).tolist(),
        "sizes": {"train": len(split.y), "test": len(split.y_test)},
    }
