"""Spec strings and objective rules of the retrieval suite (:mod:`losskit.arena.retrieval`,
:mod:`losskit.arena.imbalanced_regression`), and the dispatch that ``build_trials`` and
``run_trial`` use for both tracks.

Dataset: ``retrieval:<base>[:dim=D,train=N,query=M]`` with base in :data:`BASES` (every
option spelled out in the canonical spec, so a changed default never changes what a stored key
means); scenario: ``all`` or ``disjoint:K``. Objectives: an ``embedding`` loss (label form
``loss(embeddings, labels)`` or pair form ``loss(query, keys)``) or a ``classification`` loss
(trained through a linear classifier head), with the reserved parameters ``base_loss=<name>``
and ``reg_weight=<w>`` for a regulariser on top of another objective.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from losskit.arena.trial import Trial

PREFIX = "retrieval"
BASES = ("olivetti", "cifar10", "trec6", "trec50", "goemotions")
OPTIONS = {"dim": 128, "query": 0, "train": 0}


def is_retrieval_dataset(name: str) -> bool:
    """Whether ``name`` is a ``retrieval:...`` spec."""
    return name.partition(":")[0].strip() == PREFIX


def parse_retrieval_dataset(spec: str) -> tuple[str, dict[str, int]]:
    """``"retrieval:cifar10:train=5000"`` -> ``("cifar10", {"dim": 128, "query": 0,
    "train": 5000})``; ``ValueError`` on a bad spec."""
    parts = [p.strip() for p in spec.split(":")]
    if parts[0] != PREFIX or len(parts) not in (2, 3) or parts[1] not in BASES:
        raise ValueError(
            f"dataset spec must be 'retrieval:<base>[:dim=D,train=N,query=M]' with base in "
            f"{BASES}, got {spec!r}"
        )
    opts = dict(OPTIONS)
    for item in filter(None, (t.strip() for t in (parts[2] if len(parts) == 3 else "").split(","))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if not eq or key not in OPTIONS or not value.isdigit():
            raise ValueError(f"dataset spec {spec!r}: expected key=<int >= 0> with key in "
                             f"{list(OPTIONS)}, got {item!r}")  # fmt: skip
        opts[key] = int(value)
    if opts["dim"] < 2:
        raise ValueError(f"dataset spec {spec!r}: dim must be >= 2")
    return parts[1], opts


def canonical_retrieval_dataset(spec: str) -> str:
    """The spec with every option spelled out, in a fixed order (what a trial stores)."""
    base, opts = parse_retrieval_dataset(spec)
    return f"{PREFIX}:{base}:" + ",".join(f"{k}={v}" for k, v in opts.items())


def canonical_retrieval_split(spec: str) -> str:
    """``"all"`` or ``"disjoint:K"`` (``K >= 2`` held-out classes)."""
    head, _, rest = (t.strip() for t in spec.partition(":"))
    if head == "all" and not rest:
        return "all"
    if head == "disjoint" and rest.isdigit() and int(rest) >= 2:
        return f"disjoint:{int(rest)}"
    raise ValueError(f"scenario must be 'all' or 'disjoint:K' (K >= 2 held-out classes) for a "
                     f"retrieval track, got {spec!r}")  # fmt: skip


def missing_retrieval_files(spec: str, data_dir: Any = None) -> list:
    from losskit.arena.datasets import missing_files

    return missing_files(parse_retrieval_dataset(spec)[0], data_dir)


def objective_form(name: str) -> str:
    """``"labels"``, ``"pairs"`` or ``"classifier"`` (see the module docstring)."""
    import losskit

    entry = losskit.get(name)
    if entry.kind == "loss" and entry.family == "classification":
        return "classifier"
    if entry.kind != "loss" or entry.family != "embedding":
        raise ValueError(f"objective {name!r} is a {entry.family!r} {entry.kind}; a retrieval "
                         "track takes embedding losses or classification losses (through a "
                         "linear classifier head)")  # fmt: skip
    fn = entry.function if entry.function is not None else entry.module.forward
    names = [p for p in inspect.signature(fn).parameters if p != "self"]
    return "pairs" if names and names[0] == "query" else "labels"


def check_retrieval_objective(name: str, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``name`` (with ``params``) can train a retrieval track."""
    objective_form(name)
    base = params.get("base_loss")
    if base is not None:
        if not isinstance(base, str):
            raise ValueError(f"base_loss must be a registered objective name, got {base!r}")
        objective_form(base)
    weight = params.get("reg_weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ValueError(f"reg_weight must be a number >= 0, got {weight!r}")


def is_special_track(name: str) -> bool:
    """Whether ``name`` is a ``retrieval:...`` or ``regression:...`` dataset spec."""
    from losskit.arena.imbalanced_regression import is_regression_dataset

    return is_retrieval_dataset(name) or is_regression_dataset(name)


def special_track(spec: str, data_dir: Any = None) -> tuple[str, Callable, Callable, list]:
    """``(canonical dataset, canonical scenario function, objective checker, missing data
    files)`` of a retrieval or regression track, for ``build_trials``."""
    from losskit.arena import imbalanced_regression as reg

    if reg.is_regression_dataset(spec):
        return (reg.canonical_regression_dataset(spec), reg.canonical_regression_scenario,
                reg.check_regression_objective, [])  # fmt: skip
    return (canonical_retrieval_dataset(spec), canonical_retrieval_split,
            check_retrieval_objective, missing_retrieval_files(spec, data_dir))  # fmt: skip


def run_special_trial(
    trial: Trial,
    *,
    data_dir: Any = None,
    dataset_loader: Callable[..., Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """:func:`~losskit.arena.retrieval.run_retrieval_trial` or, for ``regression:...``,
    :func:`~losskit.arena.imbalanced_regression.run_regression_trial`."""
    from losskit.arena.imbalanced_regression import is_regression_dataset, run_regression_trial
    from losskit.arena.retrieval import run_retrieval_trial

    if is_regression_dataset(trial.dataset):
        return run_regression_trial(trial, threads=threads)
    return run_retrieval_trial(
        trial, data_dir=data_dir, dataset_loader=dataset_loader, threads=threads
    )
