"""One seed of the paper-12 comparison: five ways to train the arena MLP through noisy labels.

:func:`run_seed` corrupts the training labels with a scenario, holds out a validation part
(noisy labels: the cut of a nested network is chosen on it) and trains, on the rest:

- ``ce``: cross-entropy;
- ``gce``: generalized cross-entropy (``losskit.get("generalized_cross_entropy")``, q = 0.7);
- ``nested``: cross-entropy with :class:`~losskit.procedures.nested_dropout.NestedDropout`
  on the MLP's last hidden layer, evaluated at the validation-chosen cut;
- ``co_teaching``: :func:`~losskit.procedures.co_teaching.co_teaching` from scratch (Han et
  al.: forget rate = noise rate, linear ramp);
- ``nested_co_teaching``: the paper's two stages: two nested networks (the ``nested`` one and
  a second seed, trained together by co-teaching at forget rate 0, which is plain training),
  each taken back to its epoch of best validation accuracy (at its best cut), then both
  fine-tuned by co-teaching (ramp 0, learning rate / 10, ranking at the chosen cuts, which
  are chosen again after every epoch).

Reported: final-epoch clean test accuracy (network A for the co-teaching arms; the sum of
both networks' logits, as the paper's code evaluates, in ``*_pair``), per-epoch test
accuracy, the label precision of the samples kept by co-teaching, and test accuracy against
the prefix length ``k`` for the nested and the CE network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from losskit.procedures.co_teaching import co_teaching
from losskit.procedures.nested_dropout import NestedDropoutNet, cut_accuracies, nested_dropout_net

ARMS = ("ce", "gce", "nested", "co_teaching", "nested_co_teaching")


@dataclass(frozen=True)
class Setting:
    """Training sizes of one scenario (shared by all arms)."""

    epochs: int  # CE, GCE, nested, co-teaching; also stage 1 of nested + co-teaching
    finetune_epochs: int  # stage 2 of nested + co-teaching
    num_gradual: int  # co-teaching ramp T_k (epochs)
    sigma: float = 10.0  # nested dropout, p(k) ∝ exp(-(k / sigma)^2)
    lr: float = 1e-3
    batch_size: int = 128
    val_fraction: float = 0.1


@dataclass
class Split:
    x: Tensor  # standardised training inputs (val part removed)
    y: Tensor  # noisy labels
    clean: Tensor
    x_val: Tensor
    y_val: Tensor  # noisy labels
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    noise_rate: float


def make_split(ds: Any, spec: str, seed: int, val_fraction: float) -> Split:
    """Corrupt ``ds``'s training labels with scenario ``spec`` (seed ``seed``), hold out a
    random ``val_fraction`` (noisy labels) and standardise with the training statistics."""
    from losskit.arena.models import Standardizer
    from losskit.labels import apply_scenario

    c = apply_scenario(spec, ds.y_train, ds.num_classes, seed=seed, extras=ds.extras)
    perm = np.random.default_rng(seed).permutation(len(c.index))
    n_val = int(round(val_fraction * len(perm)))
    tr, va = perm[n_val:], perm[:n_val]
    x = ds.x_train[c.index]
    std = Standardizer.fit(x[tr])
    labels, clean = torch.as_tensor(c.labels), torch.as_tensor(c.clean)
    return Split(std(x[tr]), labels[tr], clean[tr], std(x[va]), labels[va], std(ds.x_test),
                 torch.as_tensor(ds.y_test), ds.num_classes, float(c.noise_rate))  # fmt: skip


def _mlp(split: Split, seed: int) -> nn.Sequential:
    from losskit.arena.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model("mlp", split.x[:1].numpy(), split.num_classes)


def _nested(split: Split, seed: int, sigma: float) -> NestedDropoutNet:
    return nested_dropout_net(
        _mlp(split, seed), sigma=sigma, generator=torch.Generator().manual_seed(seed + 7)
    )


@torch.no_grad()
def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean())


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    return model(x)


def _train(model: nn.Module, loss_fn: nn.Module, split: Split, st: Setting, seed: int):
    """Adam on ``loss_fn`` with co-teaching's batch order; per-epoch test accuracy."""
    opt = torch.optim.Adam(model.parameters(), lr=st.lr)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(st.epochs):
        model.train()
        for idx in torch.randperm(len(split.y), generator=gen).split(st.batch_size):
            loss = loss_fn(model(split.x[idx]), split.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        curve.append(_accuracy(_logits(model, split.x_test), split.y_test))
    return curve


class _Checkpoints:
    """Per network, its state at the epoch with the best noisy-validation accuracy."""

    def __init__(self) -> None:
        self.best: dict[str, float] = {}
        self.states: dict[str, dict[str, Tensor]] = {}

    def offer(self, name: str, net: nn.Module, val_accuracy: float) -> None:
        if val_accuracy > self.best.get(name, -1.0):
            self.best[name] = val_accuracy
            self.states[name] = copy.deepcopy(net.state_dict())


def _pair_eval(split: Split, keeper: _Checkpoints | None = None):
    """``evaluate`` callback for co-teaching: test accuracy of network A; for nested networks
    the cuts are chosen on the validation part first (and the best states kept in
    ``keeper``)."""

    def evaluate(a: nn.Module, b: nn.Module, epoch: int) -> dict[str, float]:
        if isinstance(a, NestedDropoutNet) and isinstance(b, NestedDropoutNet):
            for name, net in (("a", a), ("b", b)):
                val = float(net.select_cut(split.x_val, split.y_val).max())
                if keeper is not None:
                    keeper.offer(name, net, val)
        return {"test_a": _accuracy(_logits(a, split.x_test), split.y_test)}

    return evaluate


def _prefix_curve(backbone: nn.Module, head: nn.Module, split: Split) -> np.ndarray:
    backbone.eval()
    with torch.no_grad():
        return cut_accuracies(head, backbone(split.x_test), split.y_test)


def run_seed(ds: Any, spec: str, seed: int, st: Setting, forget_rate: float) -> dict[str, Any]:
    """All five arms on one seed of scenario ``spec``; a JSON-ready dict."""
    import losskit

    split = make_split(ds, spec, seed, st.val_fraction)
    acc: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    ce = _mlp(split, seed)
    curves["ce"] = _train(ce, nn.CrossEntropyLoss(), split, st, seed)
    gce = _mlp(split, seed)
    curves["gce"] = _train(gce, losskit.get("generalized_cross_entropy").build(), split, st, seed)
    acc["ce"], acc["gce"] = curves["ce"][-1], curves["gce"][-1]

    def pair(a: nn.Module, b: nn.Module, lr: float, evaluate, **kwargs: Any):
        return co_teaching(a, b, split.x, split.y, seed=seed, batch_size=st.batch_size,
                           clean=split.clean, optimizer=lambda p: torch.optim.Adam(p, lr=lr),
                           evaluate=evaluate, **kwargs)  # fmt: skip

    co = pair(_mlp(split, seed), _mlp(split, seed + 1000), st.lr, _pair_eval(split),
              forget_rate=forget_rate, num_gradual=st.num_gradual, epochs=st.epochs)  # fmt: skip
    keeper = _Checkpoints()
    a, b = _nested(split, seed, st.sigma), _nested(split, seed + 1000, st.sigma)
    stage1 = pair(a, b, st.lr, _pair_eval(split, keeper), forget_rate=0.0, num_gradual=0,
                  epochs=st.epochs)  # fmt: skip
    cut_stage1 = int(a.nested.cut)  # chosen on the validation part after the last epoch
    prefix = {"nested": _prefix_curve(a.backbone, a.head, split).tolist(),
              "ce": _prefix_curve(ce[:-1], ce[-1], split).tolist()}  # fmt: skip
    acc["nested"] = stage1.history[-1]["test_a"]
    acc["nested_full_width"] = prefix["nested"][-1]
    a.load_state_dict(keeper.states["a"])  # stage 2 starts from the best-validation states
    b.load_state_dict(keeper.states["b"])
    acc["nested_best_val"] = _accuracy(_logits(a, split.x_test), split.y_test)
    fine = pair(a, b, st.lr / 10, _pair_eval(split), forget_rate=forget_rate, num_gradual=0,
                epochs=st.finetune_epochs, selection="eval")  # fmt: skip
    for arm, res in (("co_teaching", co), ("nested_co_teaching", fine)):
        acc[arm] = res.history[-1]["test_a"]
        both = _logits(res.model_a, split.x_test) + _logits(res.model_b, split.x_test)
        acc[f"{arm}_pair"] = _accuracy(both, split.y_test)
    curves["nested"] = [h["test_a"] for h in stage1.history]
    curves["co_teaching"] = [h["test_a"] for h in co.history]
    curves["nested_co_teaching"] = [h["test_a"] for h in fine.history]  # stage 2
    return {
        "accuracy": acc,
        "curves": curves,
        "precision": {"co_teaching": [h["precision_a"] for h in co.history],
                      "nested_co_teaching": [h["precision_a"] for h in fine.history]},
        "prefix_accuracy": prefix,
        "cut": {"nested": cut_stage1, "nested_co_teaching": int(fine.model_a.nested.cut)},
        "noise_rate": split.noise_rate,
        "sizes": {"train": len(split.y), "val": len(split.y_val), "test": len(split.y_test)},
    }  # fmt: skip
