"""One arena trial: its configuration, its key, and :func:`run_trial`.

A :class:`Trial` fixes everything that determines a result: dataset, label scenario, objective
and its hyperparameters, model, seed, epochs and optimiser. ``Trial.key()`` is the SHA-256 of a
canonical JSON of those fields plus :data:`SCHEMA_VERSION` (bumped whenever the training
procedure changes), so a store keyed by it never mixes results of different procedures.

**Objective adapter protocol.** ``losskit.get(name).build(**params)`` gives the loss module,
called as ``module(logits, target)`` with ``reduction="mean"``. Objectives that need more than
a batch declare it, and the trial supplies it (see :class:`TrialObjective`):

- a constructor argument named ``class_counts`` (observed training class counts, a
  ``torch.long`` tensor ``[C]``), ``num_samples`` (training set size), ``num_classes`` or
  ``num_epochs`` is filled from the trial when the constructor accepts it by that name and
  ``params`` does not set it (``inspect.signature``; ``**kwargs`` receives nothing);
- ``needs_index = True`` on the module (or a ``forward`` parameter named ``index``):
  ``forward(logits, target, index)`` with ``index`` the position of each sample in the
  training set (``0 .. num_samples - 1``, ``torch.long``);
- a ``set_epoch(epoch)`` method: called before every epoch, ``epoch`` counting from 0;
- learnable parameters of the module are optimised together with the model's.

An entry without a module class is used through its function: ``function(logits, target,
**params)`` (with the same context arguments when its signature names them).

Multi-label datasets (``task == "multilabel"``) go to
:func:`losskit.arena.multilabel_trial.run_multilabel_trial`, which adds the context argument
``label_cooccurrence``, passes the mask of known entries as a third argument when the scenario
gives one and calls a module's ``input_regularizer`` (see :meth:`TrialObjective.forward` and
:meth:`TrialObjective.regularizer`).

Distillation trials (``Trial.teacher`` set) go to
:func:`losskit.arena.distill_trial.run_distill_trial`, whose objectives are adapted by the
declarative table of :mod:`losskit.arena.distill_objectives`.

Retrieval trials (``retrieval:...`` datasets) go to
:func:`losskit.arena.retrieval.run_retrieval_trial` and imbalanced-regression trials
(``regression:...``) to :func:`losskit.arena.imbalanced_regression.run_regression_trial`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import platform
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from losskit.arena.models import MODELS, Standardizer, build_model, is_image
from losskit.arena.scenario_data import multiclass_result, prepare_multiclass

SCHEMA_VERSION = 1
OPTIMIZERS = ("adam", "sgd")
CONTEXT_ARGS = (
    "class_counts", "num_samples", "num_classes", "num_epochs", "label_cooccurrence",
)  # fmt: skip
EVAL_BATCH = 1024


@dataclass(frozen=True)
class Trial:
    """Configuration of one training run; every field enters :meth:`key`.

    ``teacher``: a distillation teacher spec (:mod:`losskit.arena.distill_data`), ``""`` for
    an ordinary trial; left out of :meth:`to_dict` (and so of the key) when empty, so the keys
    of ordinary trials do not depend on it."""

    dataset: str
    scenario: str
    objective: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str = "linear"
    seed: int = 0
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    teacher: str = ""

    def __post_init__(self) -> None:
        for name in ("dataset", "scenario", "objective"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.params, dict):
            raise ValueError(f"params must be a dict, got {type(self.params).__name__}")
        try:
            json.dumps(self.params, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"params must be JSON-serialisable numbers/strings: {err}") from None
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("seed", "epochs", "batch_size"):
            v = getattr(self, name)
            low = 0 if name == "seed" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.teacher, str):
            raise ValueError(f"teacher must be a string spec, got {self.teacher!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what the store keeps as ``config``); ``teacher`` only
        when set."""
        out = dataclasses.asdict(self)
        if not self.teacher:
            del out["teacher"]
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"config has unknown trial fields {unknown}")
        return cls(**config)

    def key(self) -> str:
        """SHA-256 hex digest of the canonical JSON of the fields and the schema version.
        Integers are hashed as floats (``lr=1`` and ``lr=1.0`` are the same trial)."""
        payload = {"schema": SCHEMA_VERSION, **_canonical(self.to_dict())}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _context_kwargs(fn: Callable[..., Any], params: dict[str, Any], context: dict[str, Any]):
    """The context arguments that ``fn`` names explicitly and ``params`` leaves unset."""
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in context.items() if k in names and k not in params}


def _takes_index(forward: Callable[..., Any]) -> bool:
    """Whether ``forward`` has a parameter named ``index`` (the fallback for a module that
    does not declare ``needs_index``)."""
    try:
        return "index" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


class TrialObjective(nn.Module):
    """A registered objective adapted to the training loop (see the module docstring)."""

    def __init__(self, name: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__()
        import losskit

        entry = losskit.get(name)
        if entry.module is not None:
            extra = _context_kwargs(entry.module, params, context)
            self.loss: nn.Module | None = entry.build(**params, **extra)
            self.function = None
            self.needs_index = bool(getattr(self.loss, "needs_index", False)) or _takes_index(
                self.loss.forward
            )
        else:
            extra = _context_kwargs(entry.function, params, context)
            self.loss, self.function = None, entry.function
            self.kwargs = {**entry.defaults, **params, **extra}
            self.needs_index = False

    def set_epoch(self, epoch: int) -> None:
        if self.loss is not None and callable(getattr(self.loss, "set_epoch", None)):
            self.loss.set_epoch(epoch)

    def forward(
        self, logits: Tensor, target: Tensor, index: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """The loss of a batch. Without ``mask``: ``loss(logits, target[, index])``. With a
        mask of known entries (multi-label): ``loss(logits, target, mask[, index=index])``,
        or ``function(logits, target, mask=mask, **kwargs)``."""
        if self.loss is None:
            extra = {} if mask is None else {"mask": mask}
            return self.function(logits, target, **extra, **self.kwargs)
        if mask is not None:
            return self.loss(logits, target, mask, **({"index": index} if self.needs_index else {}))
        if self.needs_index:
            return self.loss(logits, target, index)
        return self.loss(logits, target)

    def regularizer(
        self,
        model: nn.Module,
        inputs: Tensor,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
    ) -> Tensor | None:
        """``loss.input_regularizer(model, inputs, logits, target, mask)`` when the module
        defines it (a scalar added to the loss), else ``None``."""
        hook = getattr(self.loss, "input_regularizer", None)
        return hook(model, inputs, logits, target, mask) if callable(hook) else None


_DATASETS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def load_cached(
    name: str,
    data_dir: Any = None,
    dataset_loader: Callable[..., Any] | None = None,
    *,
    progress: bool = False,
) -> Any:
    """``dataset_loader(name, data_dir, progress=...)`` (default
    :func:`losskit.arena.datasets.load_dataset`), cached per process (last two datasets)."""
    if dataset_loader is None:
        from losskit.arena.datasets import load_dataset as dataset_loader
    key = (dataset_loader, name, None if data_dir is None else str(data_dir))
    if key not in _DATASETS:
        _DATASETS[key] = dataset_loader(name, data_dir, progress=progress)
        while len(_DATASETS) > 2:
            _DATASETS.popitem(last=False)
    _DATASETS.move_to_end(key)
    return _DATASETS[key]


def versions() -> dict[str, str]:
    """Versions that a result depends on."""
    import losskit

    return {
        "losskit": losskit.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def deterministic(threads: int | None) -> Iterator[None]:
    """Deterministic torch algorithms on ``threads`` threads (default 1) inside the block; the
    caller's settings are restored afterwards."""
    old_det, old_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1 if threads is None else threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def take_step(opt: torch.optim.Optimizer, loss: Tensor) -> bool:
    """One optimiser step on ``loss``; ``False``, without a step, when the loss is not finite
    (the trainers then stop and record the epoch as diverged)."""
    if not torch.isfinite(loss):
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return True


def make_optimizer(trial: Trial, weights: list[Tensor]) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum 0.9, with the trial's learning rate and weight decay."""
    if trial.optimizer == "adam":
        return torch.optim.Adam(weights, lr=trial.lr, weight_decay=trial.weight_decay)
    return torch.optim.SGD(weights, lr=trial.lr, momentum=0.9, weight_decay=trial.weight_decay)


def predict(model: nn.Module, std: Standardizer, x: np.ndarray) -> np.ndarray:
    """The model's outputs on ``x`` (standardised, in batches, eval mode) as float64."""
    model.eval()
    with torch.no_grad():
        out = [model(std(x[i : i + EVAL_BATCH])) for i in range(0, len(x), EVAL_BATCH)]
    return torch.cat(out).double().numpy()


def run_trial(
    trial: Trial,
    *,
    data_dir: Any = None,
    dataset_loader: Callable[..., Any] | None = None,
    scenario_fn: Callable[..., Any] | None = None,
    groups_fn: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    long_tail: bool | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``trial``; returns the JSON-ready result dict.

    The scenario corrupts the training split only; features are standardised with the
    statistics of the kept training samples; the model is evaluated on the clean test split
    after every epoch (curves ``train_loss``, ``test_accuracy``) and the reported metrics are
    those of the final epoch. Group (head/medium/tail) accuracies are added when ``long_tail``
    is true, or, when it is ``None``, when the observed class counts have a max/min ratio of at
    least :data:`~losskit.arena.scenario_data.LONG_TAIL_RATIO`. ``dataset_loader``,
    ``scenario_fn`` and ``groups_fn`` default to ``losskit.arena.datasets.load_dataset``,
    ``losskit.labels.apply_scenario`` and ``losskit.labels.class_groups``. A non-finite loss
    stops training (``"diverged": true``). Training recipes (:mod:`losskit.arena.recipes`) run
    in place of the objective loop, on the same scenario data and with the same record.
    ``threads``: torch threads during the trial, default 1: CPU kernels can round differently
    with other thread counts, and one thread makes the result a function of the trial alone,
    the same sequentially, in a pool or on Ray (parallelism comes from ``workers``). The
    caller's setting is restored afterwards.

    Multi-label datasets go to :func:`~losskit.arena.multilabel_trial.run_multilabel_trial`
    (``scenario_fn`` then defaults to ``losskit.labels.apply_multilabel_scenario``;
    ``groups_fn`` and ``long_tail`` do not apply) and ``synthetic_xc:...`` datasets to
    :func:`~losskit.arena.extreme.run_extreme_trial`; trials with a ``teacher`` to
    :func:`~losskit.arena.distill_trial.run_distill_trial`.
    """
    start = time.perf_counter()
    from losskit.arena.extreme import is_extreme_dataset, run_extreme_trial

    if is_extreme_dataset(trial.dataset):
        return run_extreme_trial(trial, threads=threads)
    from losskit.arena.retrieval_specs import is_special_track, run_special_trial

    if is_special_track(trial.dataset):
        return run_special_trial(
            trial, data_dir=data_dir, dataset_loader=dataset_loader, threads=threads
        )
    if trial.teacher:
        from losskit.arena.distill_trial import run_distill_trial

        return run_distill_trial(trial, data_dir=data_dir, dataset_loader=dataset_loader,
                                 scenario_fn=scenario_fn, threads=threads)  # fmt: skip
    ds = load_cached(trial.dataset, data_dir, dataset_loader)
    if ds.task == "multilabel":
        from losskit.arena.multilabel_trial import run_multilabel_trial

        return run_multilabel_trial(
            trial,
            data_dir=data_dir,
            dataset_loader=dataset_loader,
            scenario_fn=scenario_fn,
            threads=threads,
        )
    if ds.task != "multiclass":
        raise ValueError(
            f"run_trial supports multiclass and multilabel datasets; {ds.name!r} is {ds.task!r}"
        )
    from losskit.arena.recipes import is_recipe, run_recipe

    data = prepare_multiclass(trial, ds, scenario_fn, start=start)
    finish = dict(start=start, groups_fn=groups_fn, long_tail=long_tail)
    if is_recipe(trial.objective):
        with deterministic(threads):
            torch.manual_seed(trial.seed)
            logits, curves, extra = run_recipe(trial, data)
        return multiclass_result(data, logits, curves, versions=versions(), extra=extra, **finish)
    x_train, labels = data.x_train, data.labels
    with deterministic(threads):
        torch.manual_seed(trial.seed)
        std = data.std
        model = build_model(trial.model, x_train[:1], ds.num_classes)
        context = {
            "class_counts": torch.as_tensor(data.counts, dtype=torch.long),
            "num_samples": len(labels),
            "num_classes": ds.num_classes,
            "num_epochs": trial.epochs,
        }
        objective = TrialObjective(trial.objective, dict(trial.params), context)
        opt = make_optimizer(trial, [*model.parameters(), *objective.parameters()])
        x_pre = None if is_image(x_train) else std(x_train)
        y = torch.from_numpy(labels)
        gen = torch.Generator().manual_seed(trial.seed)
        curves: dict[str, list[float | None]] = {"train_loss": [], "test_accuracy": []}
        diverged_at: int | None = None
        for epoch in range(trial.epochs):
            objective.set_epoch(epoch)
            model.train()
            total = 0.0
            for idx in torch.randperm(len(y), generator=gen).split(trial.batch_size):
                xb = x_pre[idx] if x_pre is not None else std(x_train[idx.numpy()])
                loss = objective(model(xb), y[idx], idx)
                if not take_step(opt, loss):
                    diverged_at = epoch
                    break
                total += float(loss.detach()) * len(idx)
            logits = predict(model, std, ds.x_test)
            acc = float(np.mean(logits.argmax(axis=1) == ds.y_test))
            curves["train_loss"].append(total / len(y) if diverged_at is None else None)
            curves["test_accuracy"].append(acc)
            if diverged_at is not None:
                break
    return multiclass_result(
        data, logits, curves, versions=versions(), diverged_at=diverged_at, **finish
    )
