"""Distillation objectives adapted to the arena's student loop: a declarative table.

Each objective of the distillation track has an :class:`Adapter` in :data:`ADAPTERS` that
declares what the **student** must provide, what the **trial** supplies, and how the
registered loss is **combined** with cross-entropy. :class:`DistillObjective` builds the
registered module from it and computes a batch's loss; :class:`Student` gives the outputs.

``Adapter.call`` lists the loss module's positional ``forward`` arguments, by name:

======================= =========================================================================
objective           loss of a batch
=================== =========================================================================
cross_entropy       CE (the CE-only student)
kd                  ``alpha T^2 KL + (1 - alpha) CE`` inside :func:`kd_loss` (the suite uses
                    ``alpha=0.9``, T = 4: mdistiller's KD weights 0.9 / 0.1)
dkd                 CE + ramp * DKD (alpha 1, beta 8, T 4; mdistiller)
nkd                 CE + NKD (paper 44: NKD is used alongside the usual cross-entropy)
uskd                CE + USKD, teacher-free; the weak head sits on the penultimate features
                    (the paper: an intermediate stage; the arena students have one hidden
                    stage)
nd                  KD++ (paper 21): CE + ramp * KD(T = 4) + ND(projected features, teacher
                    features, teacher class means)
dual_head_kd        CE on the main head + BinaryKL-Norm on the auxiliary head, both inside
                    :func:`dual_head_kd_loss` (paper 23; linear auxiliary head, no gradient
                    alignment: the code's ImageNet recipe)
ferkd               soft cross-entropy on FerKD's adapted labels (paper 27): the teacher's
                    soft label where it gives the true class >= 0.2, the smoothed hard label
                    below; whole samples stand for the paper's crops, no SelfMix
soft_label_protocol paper 58's soft-label arm (``SoftLabelLoss``): KL at T = 20 without T^2,
                    no CE; the registry's loss defaults only, not the protocol's AdamW (the
                    trial's Adam, under which the T^2 factor barely matters)
=================== =========================================================================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from losskit.arena.models import SmallCNN

STUDENT_INPUTS = ("logits", "aux_logits", "features", "projected")
TRIAL_INPUTS = ("teacher", "teacher_features", "target")
BUILD_CONTEXT = ("teacher_probs", "class_means", "in_features", "num_classes", "warmup_epochs")
KD_PARAMS = ("kd_weight", "kd_temperature", "kd_warmup")
WARMUP_SHARE = 12  # mdistiller ramps over 20 of 240 epochs: one twelfth of training


@dataclass(frozen=True)
class Adapter:
    """How the student loop drives one registered objective (see the module docstring)."""

    module: str | None  # Python module that registers the objective (imported before use)
    call: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    ce_weight: float = 0.0
    kd: bool = False
    epoch_base: int | None = None
    teacher_probs_ok: bool = True  # False: needs the teacher's logits or features
    defaults: tuple[str, ...] | None = None  # registry defaults passed to the module (all)

    def __post_init__(self) -> None:
        unknown = set(self.call) - set(STUDENT_INPUTS) - set(TRIAL_INPUTS)
        unknown |= set(self.build) - set(BUILD_CONTEXT)
        if unknown:
            raise ValueError(f"adapter names unknown inputs {sorted(unknown)}")

    @property
    def dual_head(self) -> bool:
        return "aux_logits" in self.call

    @property
    def needs_teacher(self) -> bool:
        return self.kd or "teacher" in self.call or "teacher_features" in self.call

    @property
    def needs_teacher_features(self) -> bool:
        return "teacher_features" in self.call or "class_means" in self.build


_D = "losskit.distillation."
_LOGITS = ("logits", "teacher", "target")
ADAPTERS: dict[str, Adapter] = {
    "cross_entropy": Adapter(None, ce_weight=1.0),
    "kd": Adapter(_D + "kd", _LOGITS, ("teacher_probs",)),
    "dkd": Adapter(_D + "dkd", _LOGITS, ("teacher_probs", "warmup_epochs"), 1.0, epoch_base=1),
    "nkd": Adapter(_D + "nkd", _LOGITS, ("teacher_probs",), 1.0),
    "uskd": Adapter(_D + "uskd", ("logits", "target", "features"),
                    ("in_features", "num_classes"), 1.0),
    "nd": Adapter(_D + "feature_norm", ("projected", "teacher_features", "target"),
                  ("class_means",), 1.0, kd=True, teacher_probs_ok=False),
    "dual_head_kd": Adapter(_D + "dual_head", ("logits", "aux_logits", "teacher", "target"),
                            teacher_probs_ok=False),
    "ferkd": Adapter(_D + "ferkd", _LOGITS, ("teacher_probs",)),
    # registered as a procedure whose defaults also hold its optimiser: keep the loss's
    "soft_label_protocol": Adapter("losskit.procedures.soft_label_protocol",
                                   ("logits", "teacher"), ("teacher_probs",),
                                   defaults=("temperature", "scale_t2")),
}  # fmt: skip


def get_adapter(name: str) -> Adapter:
    """The adapter of ``name``, its registering module imported; unknown names raise."""
    if name not in ADAPTERS:
        raise ValueError(f"objective must be one of the distillation track's {sorted(ADAPTERS)}, "
                         f"got {name!r}")  # fmt: skip
    adapter = ADAPTERS[name]
    if adapter.module is not None:
        importlib.import_module(adapter.module)
    return adapter


def scaled_warmup(num_epochs: int) -> int:
    """mdistiller's 20-of-240-epoch warm-up scaled to ``num_epochs`` (at least 1)."""
    return max(1, round(num_epochs / WARMUP_SHARE))


class StudentOutputs(NamedTuple):
    logits: Tensor
    features: Tensor
    aux_logits: Tensor | None


class _GlobalAvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def split_model(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """An arena model as ``(backbone, head)`` with ``head(backbone(x)) == model(x)``: the
    penultimate features are ``backbone(x)`` (for ``"linear"`` the flattened inputs)."""
    if isinstance(model, SmallCNN):
        return nn.Sequential(model.features, _GlobalAvgPool()), model.head
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    raise ValueError(f"model must be an arena model (Sequential or SmallCNN), got {model!r:.60}")


class Student(nn.Module):
    """An arena model split into backbone and head, with an auxiliary linear head on the same
    features when ``dual_head`` (through :class:`DualHeadStudent`, whose main head is the
    model's own, so every objective starts from the same weights). ``forward`` gives the main
    logits (evaluation); :meth:`outputs` gives logits, features and auxiliary logits."""

    def __init__(self, model: nn.Module, num_classes: int, *, dual_head: bool = False) -> None:
        super().__init__()
        backbone, head = split_model(model)
        self.width = head.in_features
        self.aux_head: nn.Module | None = None
        if dual_head:
            from losskit.distillation.dual_head import DualHeadStudent

            net = DualHeadStudent(backbone, num_classes, in_features=self.width)
            self.aux_head = net.aux_head
        self.backbone, self.head = backbone, head

    def outputs(self, x: Tensor) -> StudentOutputs:
        f = self.backbone(x)
        aux = None if self.aux_head is None else self.aux_head(f)
        return StudentOutputs(self.head(f), f, aux)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class DistillObjective(nn.Module):
    """A registered objective with its adapter. ``context`` holds the :data:`BUILD_CONTEXT`
    values, ``num_epochs`` and ``teacher_width``; ``params`` the spec's hyperparameters (and
    :data:`KD_PARAMS` for ``kd=True`` adapters). ``forward(out, teacher, teacher_features,
    target)``; the unneeded teacher inputs may be ``None``."""

    def __init__(self, name: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__()
        import losskit

        self.adapter = a = get_adapter(name)
        params = dict(params)
        kd = {k: params.pop(k) for k in KD_PARAMS if a.kd and k in params}
        self.kd_weight = float(kd.get("kd_weight", 1.0))
        self.kd_temperature = float(kd.get("kd_temperature", 4.0))
        self.kd_warmup = int(kd.get("kd_warmup", scaled_warmup(context["num_epochs"])))
        if self.kd_warmup < 1:
            raise ValueError(f"kd_warmup must be an int >= 1, got {self.kd_warmup!r}")
        self.teacher_probs = bool(context.get("teacher_probs", False))
        if self.teacher_probs and not a.teacher_probs_ok:
            raise ValueError(f"objective {name!r} needs the teacher's logits and features; "
                             "this teacher gives probabilities only")  # fmt: skip
        self.loss: nn.Module | None = None
        if a.module is not None:
            ctx = {**context, "warmup_epochs": scaled_warmup(context["num_epochs"])}
            extra = {k: ctx[k] for k in a.build if k not in params}
            entry = losskit.get(name)
            keep = entry.defaults if a.defaults is None else a.defaults
            defaults = {k: v for k, v in entry.defaults.items() if k in keep}
            self.loss = entry.module(**{**defaults, **params, **extra})
        elif params:
            raise ValueError(f"objective {name!r} takes no parameters, got {sorted(params)}")
        self.projector: nn.Module | None = None
        if "projected" in a.call:
            from losskit.distillation.feature_norm import nd_projector

            self.projector = nd_projector(context["in_features"], context["teacher_width"])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called before every epoch, ``epoch`` counting from 0."""
        self.epoch = epoch
        if self.adapter.epoch_base is not None and self.loss is not None:
            self.loss.set_epoch(epoch + self.adapter.epoch_base)

    def forward(
        self,
        out: StudentOutputs,
        teacher: Tensor | None,
        teacher_features: Tensor | None,
        target: Tensor,
    ) -> Tensor:
        a = self.adapter
        values = {
            "logits": out.logits, "aux_logits": out.aux_logits, "features": out.features,
            "teacher": teacher, "teacher_features": teacher_features, "target": target,
        }  # fmt: skip
        if self.projector is not None:
            values["projected"] = self.projector(out.features)
        loss = out.logits.new_zeros(())
        if self.loss is not None:
            loss = loss + self.loss(*(values[k] for k in a.call))
        if a.ce_weight:
            loss = loss + a.ce_weight * F.cross_entropy(out.logits, target)
        if a.kd and self.kd_weight:
            from losskit.distillation.kd import kd_loss

            ramp = min((self.epoch + 1) / self.kd_warmup, 1.0)
            kd = kd_loss(out.logits, teacher, temperature=self.kd_temperature,
                         teacher_probs=self.teacher_probs)  # fmt: skip
            loss = loss + self.kd_weight * ramp * kd
        return loss
