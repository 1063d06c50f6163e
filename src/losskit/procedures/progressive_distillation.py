"""ERNIE-Tiny's progressive distillation (paper 1): four stages, each changing one thing.

A stage is a (teacher, data, objective) triple; consecutive stages differ in exactly one:

=====  ====================  ============  ==========================  ==================
stage  name                  teacher       data                        objective
=====  ====================  ============  ==========================  ==================
GD     General Distillation  pretrained    general (unlabelled) text   L_lat
GED    General-Enhanced      fine-tuned    general                     L_lat
TAD    Task-Adaptive         fine-tuned    task data                   L_lat
TSD    Task-Specific         fine-tuned    task data                   L_lat+L_soft+L_hard
=====  ====================  ============  ==========================  ==================

``L_lat`` is :class:`~losskit.distillation.latent.LatentDistillationLoss` (hidden states through
a learned projection, attention maps); ``L_soft = CE(softmax(z_T/t), softmax(z_S/t))``
(:func:`soft_target_cross_entropy`, gradient ``(1/t)(softmax(z_S/t) - softmax(z_T/t))``, no ``t^2``
factor: that is the paper's definition, unlike Hinton's KD); ``L_hard = CE(y, softmax(z_S))``.
Terms are summed with weight 1 (ERNIE-Tiny's weights and ``t`` were not available to check;
``t = 1`` is TinyBERT's choice).

The procedure is generic over models. A model (teacher or student) is a callable
``model(batch) -> ModelOutput`` (``hidden_states``, ``attentions``, ``logits``, each optional);
a batch is a mapping of tensors that holds ``attention_mask`` for ``L_lat`` and ``labels`` for
``L_hard``; ``data`` maps a data name to a re-iterable of batches. An objective term is any
callable ``term(student_out, teacher_out, batch) -> scalar``; one with ``needs_teacher = False``
(``L_hard``) lets a stage skip the teacher's forward pass. Every stage gets a fresh optimizer
over the student's parameters and those of the terms (the latent projections), which carry over
from stage to stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.distillation._common import check_temperature, finish_distill, prepare_distill

Batch = Mapping[str, Tensor]
Term = Callable[..., Tensor]


@dataclass
class ModelOutput:
    """What a model returns to the procedure (Hugging Face's indexing for the sequences)."""

    logits: Tensor | None = None
    hidden_states: Sequence[Tensor] | None = None
    attentions: Sequence[Tensor] | None = None


@dataclass(frozen=True)
class Stage:
    """One stage: the teacher's name (``None``: none is called), the data's, the terms'."""

    name: str
    teacher: str | None
    data: str
    objective: tuple[str, ...]

    def changes(self, other: Stage) -> list[str]:
        """The components (``teacher``, ``data``, ``objective``) in which ``other`` differs."""
        parts = ("teacher", "data", "objective")
        diff = [p for p in parts[:2] if getattr(self, p) != getattr(other, p)]
        return diff + (["objective"] if set(self.objective) != set(other.objective) else [])


PAPER_STAGES = (
    Stage("GD", "pretrained", "general", ("latent",)),
    Stage("GED", "finetuned", "general", ("latent",)),
    Stage("TAD", "finetuned", "task", ("latent",)),
    Stage("TSD", "finetuned", "task", ("latent", "soft", "hard")),
)


@dataclass
class StageLog:
    """What one stage did: its triple, the steps taken, the mean of each term per epoch."""

    name: str
    teacher: str | None
    data: str
    objective: tuple[str, ...]
    steps: int = 0
    seconds: float = 0.0
    epoch_losses: list[dict[str, float]] = field(default_factory=list)


def soft_target_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    teacher_probs: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """ERNIE-Tiny's ``L_soft = -sum_c softmax(z_T/t)_c log softmax(z_S/t)_c`` per sample.

    It differs from ``kd_loss(..., temperature=t) / t^2`` by the teacher's entropy (a constant
    for the student) and has the same gradient, ``(1/t)(softmax(z_S/t) - softmax(z_T/t))``."""
    temp = check_temperature(temperature)
    b = prepare_distill(
        student_logits, teacher_logits, teacher_probs=teacher_probs, reduction=reduction
    )
    loss = -(b.teacher_log_probs(temp).exp() * b.student_log_probs(temp)).sum(dim=1)
    return finish_distill(loss, b, reduction)


class LatentTerm(nn.Module):
    """``L_lat`` as a procedure term: feeds the outputs' hidden states and attentions."""

    def __init__(self, latent: nn.Module) -> None:
        super().__init__()
        self.latent = latent

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> Tensor:
        if student.hidden_states is None or teacher.hidden_states is None:
            raise ValueError("the latent term needs hidden_states from student and teacher")
        return self.latent(
            student.hidden_states, teacher.hidden_states, student.attentions,
            teacher.attentions, attention_mask=batch.get("attention_mask"),
        )  # fmt: skip


class SoftTerm:
    """``L_soft`` on the outputs' logits at temperature ``t``."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = check_temperature(temperature)

    def __call__(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> Tensor:
        return soft_target_cross_entropy(
            student.logits, teacher.logits, temperature=self.temperature
        )


class HardTerm:
    """``L_hard``: cross-entropy of the student's logits with ``batch["labels"]``."""

    needs_teacher = False

    def __call__(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> Tensor:
        return F.cross_entropy(student.logits.float(), batch["labels"])


class ProgressiveDistillation:
    """Run the stages on a student.

    ``teachers`` maps teacher names (``"pretrained"``, ``"finetuned"``) to models, ``data``
    maps data names (``"general"``, ``"task"``) to re-iterables of batches, ``latent`` is the
    ``L_lat`` module (its projections are trained with the student); ``terms`` adds or replaces
    objective terms by name. ``weights`` scales terms (default 1 each).
    """

    def __init__(
        self,
        teachers: Mapping[str, Callable[[Batch], ModelOutput]],
        data: Mapping[str, Iterable[Batch]],
        *,
        latent: nn.Module | None = None,
        terms: Mapping[str, Term] | None = None,
        stages: Sequence[Stage] = PAPER_STAGES,
        temperature: float = 1.0,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        base: dict[str, Term] = {"soft": SoftTerm(temperature), "hard": HardTerm()}
        if latent is not None:
            base["latent"] = LatentTerm(latent)
        self.terms = {**base, **(terms or {})}
        self.teachers, self.data = dict(teachers), dict(data)
        self.stages = tuple(stages)
        if not self.stages or len({s.name for s in self.stages}) != len(self.stages):
            raise ValueError("stages must be a non-empty sequence of Stages with unique names")
        for s in self.stages:
            if s.teacher is not None and s.teacher not in self.teachers:
                raise ValueError(f"teachers has no {s.teacher!r} (stage {s.name})")
            if s.data not in self.data:
                raise ValueError(f"data has no {s.data!r} (stage {s.name})")
            missing = [t for t in s.objective if t not in self.terms]
            if not s.objective or missing:
                raise ValueError(f"stage {s.name} objective names unknown terms {missing}")
            if s.teacher is None and any(self._needs_teacher(t) for t in s.objective):
                raise ValueError(f"stage {s.name} has no teacher but its objective needs one")
        weights = dict(weights or {})
        self.weights = {k: check_number(f"weights[{k}]", v, low=0.0) for k, v in weights.items()}

    def _needs_teacher(self, name: str) -> bool:
        return bool(getattr(self.terms[name], "needs_teacher", True))

    def _term(self, name: str, s_out: ModelOutput, t_out: ModelOutput | None, batch: Batch):
        """One term's value; a term that needs no teacher is handed ``None`` for it."""
        return self.terms[name](s_out, t_out if self._needs_teacher(name) else None, batch)

    def parameters(self) -> list[nn.Parameter]:
        """The parameters of the terms (the latent projections), trained with the student."""
        return [p for t in self.terms.values() if isinstance(t, nn.Module) for p in t.parameters()]

    def select(self, only: Sequence[str] | None) -> tuple[Stage, ...]:
        if only is None:
            return self.stages
        names = [s.name for s in self.stages]
        unknown = [n for n in only if n not in names]
        if unknown or not only:
            raise ValueError(f"only must name stages among {names}, got {list(only)}")
        return tuple(s for s in self.stages if s.name in set(only))

    def run(
        self,
        student: Callable[[Batch], ModelOutput],
        *,
        optimizer_factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
        epochs: int | Mapping[str, int] = 1,
        max_steps: int | Mapping[str, int] | None = None,
        only: Sequence[str] | None = None,
        progress: bool = True,
    ) -> list[StageLog]:
        """Train ``student`` through the selected stages (all, or ``only`` e.g. ``["TSD"]``)
        for ``epochs`` over each stage's data (or at most ``max_steps`` steps); per-stage logs."""
        logs = []
        for stage in self.select(only):
            n_epochs = int(epochs[stage.name] if isinstance(epochs, Mapping) else epochs)
            cap = max_steps.get(stage.name) if isinstance(max_steps, Mapping) else max_steps
            if n_epochs < 1 or (cap is not None and cap < 1):
                raise ValueError(f"epochs and max_steps must be >= 1 (stage {stage.name})")
            optimizer = optimizer_factory([*_params(student), *self.parameters()])
            logs.append(self._run_stage(stage, student, optimizer, n_epochs, cap, progress))
        return logs

    def _run_stage(
        self,
        stage: Stage,
        student: nn.Module,
        optimizer: torch.optim.Optimizer,
        n_epochs: int,
        cap: int | None,
        progress: bool,
    ) -> StageLog:
        """One stage: its teacher (frozen, eval mode) on its data, its objective's terms."""
        from tqdm.auto import tqdm

        teacher = None if stage.teacher is None else self.teachers[stage.teacher]
        call_teacher = any(self._needs_teacher(t) for t in stage.objective)
        if isinstance(teacher, nn.Module):
            teacher.eval()
        for module in (student, *self.terms.values()):
            if isinstance(module, nn.Module):
                module.train()
        log = StageLog(stage.name, stage.teacher, stage.data, stage.objective)
        start = time.perf_counter()
        data = self.data[stage.data]
        total = len(data) * n_epochs if hasattr(data, "__len__") else None
        total = cap if total is None else min(total, cap or total)
        bar = tqdm(desc=stage.name, total=total, disable=not progress, leave=False)
        for _ in range(n_epochs):
            sums, count = dict.fromkeys(stage.objective, 0.0), 0
            for batch in data:
                if cap is not None and log.steps >= cap:
                    break
                t_out = None
                if call_teacher:
                    with torch.no_grad():
                        t_out = teacher(batch)
                s_out = student(batch)
                values = {n: self._term(n, s_out, t_out, batch) for n in stage.objective}
                loss = sum(self.weights.get(n, 1.0) * v for n, v in values.items())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for n, v in values.items():
                    sums[n] += float(v.detach())
                count, log.steps = count + 1, log.steps + 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if not count:
                break
            log.epoch_losses.append({n: v / count for n, v in sums.items()})
        bar.close()
        log.seconds = time.perf_counter() - start
        return log


def _params(model: object) -> list[nn.Parameter]:
    if not isinstance(model, nn.Module):
        raise ValueError("student must be an nn.Module (its parameters are trained)")
    return [p for p in model.parameters() if p.requires_grad]


register(
    "progressive_distillation",
    kind="procedure",
    family="procedures",
    papers=(1,),
    summary="ERNIE-Tiny's four-stage distillation GD -> GED -> TAD -> TSD (teacher, data, loss).",
    defaults={"stages": PAPER_STAGES, "temperature": 1.0},
    module=ProgressiveDistillation,
)
