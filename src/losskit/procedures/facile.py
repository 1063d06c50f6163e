"""FACILE (paper 40): learn an instance encoder from set-level labels, then transfer it to
instance-level classification with few labels.

Stage 1, set-level pre-training. Sets of instances ``x[S, K, ...]`` carry coarse labels
``y_set[S]``; no instance is labelled. The instance encoder ``e`` maps each instance to
``e(x) in R^D``; a permutation-invariant set model ``g`` turns a set ``[K, D]`` into one
vector (by default mean pooling, or any module ``[B, K, D] -> [B, D']``: DeepSet, attention
pooling, a SetTransformer), an optional projection head ``h`` follows, and
``set_supcon_loss`` / SupCon on ``h(g(e(x_set)))`` with the set labels trains ``e``, ``g``
and ``h`` together. ``g`` and ``h`` are discarded afterwards.

Stage 2, instance-level transfer. The encoder ``e`` is frozen (``finetune=False``, the
paper's protocol) and a linear head ``f`` is fitted on the few labelled instances by
L2-regularised multinomial logistic regression, ``mean CE + ||W||^2 / (2 C n)`` (scikit-
learn's ``LogisticRegression(C)`` objective divided by ``n``; the bias is not penalised),
with full-batch L-BFGS. ``finetune=True`` instead trains ``e`` and ``f`` end to end with Adam
on the same objective.

Defaults follow the released code where it speaks: SupCon temperature 0.07; a set of 5
instances is the code's choice of data, not an argument here. With ``augment`` given, every
set enters stage 1 as two augmented views sharing its label (the code's two-view SupCon).
:func:`instance_transfer` alone, on an encoder that was never pre-trained, is the baseline
"train on the few instance labels only".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register
from losskit.embedding._common import check_temperature
from losskit.embedding.set_contrastive import pool_sets
from losskit.embedding.supcon import supcon_loss


@dataclass
class FacileResult:
    """The trained instance encoder, the linear head on its features, and the losses of both
    stages (stage 1: mean loss per epoch; stage 2: the final training objective)."""

    encoder: nn.Module
    head: nn.Linear
    pretrain_losses: list[float] = field(default_factory=list)
    transfer_loss: float = float("nan")

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class predictions for instances ``x[n, ...]`` (encoder and head in eval mode)."""
        self.encoder.eval()
        return self.head(self.encoder(x)).argmax(dim=1)


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def set_pretrain(
    encoder: nn.Module,
    sets: Tensor,
    set_labels: Tensor,
    *,
    set_model: nn.Module | None = None,
    projector: nn.Module | None = None,
    pooling: str = "mean",
    temperature: float = 0.07,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    augment: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Stage 1: train ``encoder`` (with ``set_model`` and ``projector``) by SupCon on the set
    labels of ``sets[S, K, ...]``, with Adam; returns the mean loss of each epoch."""
    if not isinstance(sets, Tensor) or sets.ndim < 3 or 0 in sets.shape[:2]:
        raise ValueError("sets must be a tensor [S, K, ...] of S non-empty sets of K instances")
    if not isinstance(set_labels, Tensor) or tuple(set_labels.shape) != (sets.shape[0],):
        raise ValueError(f"set_labels must have shape ({sets.shape[0]},)")
    if set_labels.is_floating_point() or set_labels.dtype == torch.bool:
        raise ValueError(f"set_labels must hold integer labels, got dtype {set_labels.dtype}")
    check_choice("pooling", pooling, ("mean", "max"))
    check_temperature(temperature)
    epochs = int(check_number("epochs", epochs, low=1))
    batch_size = int(check_number("batch_size", batch_size, low=2))
    lr = check_number("lr", lr, low=0.0, low_open=True)
    modules = [m for m in (encoder, set_model, projector) if m is not None]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    device = _device(encoder)
    s, k = sets.shape[:2]
    for m in modules:
        m.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(s, generator=generator)
        total, steps = 0.0, 0
        for start in range(0, s, batch_size):
            pick = order[start : start + batch_size]
            if len(pick) < 2:
                continue
            x, y = sets[pick].to(device), set_labels[pick].to(device)
            if augment is not None:
                x, y = torch.cat([augment(x), augment(x)]), torch.cat([y, y])
            b = x.shape[0]
            inst = encoder(x.reshape(b * k, *x.shape[2:])).reshape(b, k, -1)
            z = set_model(inst) if set_model is not None else pool_sets(inst, pooling=pooling)
            z = projector(z) if projector is not None else z
            loss = supcon_loss(z, y, temperature=temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(steps, 1))
    return losses


def instance_transfer(
    encoder: nn.Module,
    instances: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None = None,
    C: float = 1.0,
    finetune: bool = False,
    steps: int = 200,
    lr: float = 1e-3,
) -> tuple[nn.Linear, float]:
    """Stage 2: a linear head on ``encoder``'s features of the labelled ``instances[n, ...]``
    (integer ``labels[n]``), by L2-regularised logistic regression; the encoder stays frozen
    unless ``finetune``. Returns the head and its final training objective."""
    if not isinstance(instances, Tensor) or instances.ndim < 2 or instances.shape[0] == 0:
        raise ValueError("instances must be a non-empty tensor [n, ...]")
    n = instances.shape[0]
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},)")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if bool((labels < 0).any()):
        raise ValueError("labels must be non-negative class indices")
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if classes <= int(labels.max()):
        raise ValueError(f"num_classes must exceed the largest label {int(labels.max())}")
    inv_c = 1.0 / check_number("C", C, low=0.0, low_open=True)
    steps = int(check_number("steps", steps, low=1))
    lr = check_number("lr", lr, low=0.0, low_open=True)
    device = _device(encoder)
    x, y = instances.to(device), labels.to(device)

    def objective(logits: Tensor, head: nn.Linear) -> Tensor:
        return F.cross_entropy(logits.float(), y) + inv_c * head.weight.pow(2).sum() / (2 * n)

    if not finetune:
        encoder.eval()
        with torch.no_grad():
            feats = encoder(x).float()
        head = nn.Linear(feats.shape[1], classes).to(device)
        opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            loss = objective(head(feats), head)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return head, float(objective(head(feats), head))
    encoder.train()
    with torch.no_grad():
        dim = encoder(x[:1]).shape[1]
    head = nn.Linear(dim, classes).to(device)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr)
    for _ in range(steps):
        loss = objective(head(encoder(x)), head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    encoder.eval()
    with torch.no_grad():
        return head, float(objective(head(encoder(x)), head))


def facile(
    encoder: nn.Module,
    sets: Tensor,
    set_labels: Tensor,
    instances: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None = None,
    set_model: nn.Module | None = None,
    projector: nn.Module | None = None,
    pooling: str = "mean",
    temperature: float = 0.07,
    pretrain_epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    augment: Callable[[Tensor], Tensor] | None = None,
    C: float = 1.0,
    finetune: bool = False,
    transfer_steps: int = 200,
    transfer_lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> FacileResult:
    """Both stages on ``encoder`` (trained in place): set-level SupCon pre-training on
    ``sets[S, K, ...]`` / ``set_labels[S]``, then a linear head on the few labelled
    ``instances[n, ...]`` / ``labels[n]``."""
    losses = set_pretrain(
        encoder, sets, set_labels, set_model=set_model, projector=projector, pooling=pooling,
        temperature=temperature, epochs=pretrain_epochs, batch_size=batch_size, lr=lr,
        augment=augment, generator=generator,
    )  # fmt: skip
    head, final = instance_transfer(
        encoder, instances, labels, num_classes=num_classes, C=C, finetune=finetune,
        steps=transfer_steps, lr=transfer_lr,
    )  # fmt: skip
    return FacileResult(encoder, head, losses, final)


register(
    "facile",
    kind="procedure",
    family="procedures",
    papers=(40,),
    summary="FACILE: set-level SupCon pre-training on coarse set labels, then a few-shot head.",
    defaults={"temperature": 0.07, "pooling": "mean", "C": 1.0, "finetune": False},
    function=facile,
)
