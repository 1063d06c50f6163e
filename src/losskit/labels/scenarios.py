"""Label scenarios: spec strings, the registry entries and :func:`apply_scenario`.

A spec is one step or several joined by ``+``, applied left to right with one
``np.random.default_rng(seed)`` stream. A step is ``name[:arg[:arg...]]``; an argument is a
value for the next positional parameter or ``key=value``:

===================  =====================================================================
``clean``            labels as they are
``symmetric:r``      each label, with prob. r, to a uniform *other* class (achieved rate
                     ~ r); ``symmetric:r:any`` draws from all C classes (rate r (C-1)/C)
``pairflip:r``       class i -> (i + 1) mod C with prob. r
``matrix:t``         labels drawn from a random valid noise matrix with trace t
                     (``matrix:trace=7``); ``matrix:diag=0.7`` gives the mean diagonal
                     instead (trace = 0.7 C). T is the first draw of the step's stream.
``cifar10n:set``     CIFAR-10N human labels, set in aggre / worst / random1-3, read from
                     ``extras["cifar10n/<set>"]`` (int [n], aligned with ``y``)
``longtail:rho``     subsample to n_i = floor(n_max rho^(-i/(C-1))), class 0 the head
``subset:f``         stratified random subsample: floor(f n_c) samples of every class c
``natural``          as ``clean``; marks a naturally long-tailed set (TREC-50) so that
                     :func:`is_long_tailed` is true and head/medium/tail are reported
``partial:r``        multi-label: each positive dropped to 0 with prob. r (a sample may lose
                     them all); ``partial:r:keep_one`` keeps one positive per sample
===================  =====================================================================

Each step sees the previous step's *observed* labels, so put subsampling first
(``longtail:100+symmetric:0.2``) for a tail defined by the true classes. ``clean`` in the
result always holds the true labels of the kept samples.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from losskit._core.registry import catalog, register
from losskit.labels.imbalance import check_fraction, check_rho, longtail_scenario, subset_scenario
from losskit.labels.noise import (
    CIFAR10N_SETS,
    SYMMETRIC_TARGETS,
    check_class_labels,
    check_rate,
    cifar10n_scenario,
    matrix_scenario,
    pairflip_scenario,
    symmetric_scenario,
)
from losskit.labels.partial import PARTIAL_MODES, check_multilabel, partial_scenario

LONG_TAILED = ("longtail", "natural")


@dataclass(frozen=True, eq=False)
class Corrupted:
    """The training samples kept by a scenario, their observed and their true labels."""

    index: np.ndarray  # int64 indices of the training samples kept (long tail subsamples)
    labels: np.ndarray  # observed labels for those samples (int64 [n], or {0,1} int64 [n, C])
    clean: np.ndarray  # true labels for those samples

    def __post_init__(self) -> None:
        for name in ("index", "labels", "clean"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        if self.index.ndim != 1:
            raise ValueError(f"index must have shape [n], got {self.index.shape}")
        if self.labels.shape != self.clean.shape or self.labels.shape[:1] != self.index.shape:
            raise ValueError(
                f"labels {self.labels.shape} and clean {self.clean.shape} must have "
                f"{self.index.shape[0]} rows like index"
            )

    @property
    def noise_rate(self) -> float:
        """Fraction of kept samples whose observed label (row, for multi-label) differs."""
        if self.index.size == 0:
            return 0.0
        differ = self.labels != self.clean
        if differ.ndim == 2:
            differ = differ.any(axis=1)
        return float(differ.mean())


# ---------------------------------------------------------------- the registered steps
def _targets(y: np.ndarray, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    return check_multilabel(y, num_classes) if y.ndim == 2 else check_class_labels(y, num_classes)


def clean_scenario(
    y: np.ndarray, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Every sample, labels unchanged (single- or multi-label); also the ``natural`` step."""
    y = _targets(y, num_classes)
    return np.arange(y.shape[0]), y.copy()


# ---------------------------------------------------------------- spec grammar
_REQUIRED = object()


@dataclass(frozen=True)
class _Param:
    name: str
    kind: type
    default: Any = _REQUIRED  # None: optional, absent unless given
    positional: bool = True


def _choice(name: str, options: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in options:
            raise ValueError(f"{name} must be one of {options}, got {value!r}")
        return value

    return check


def _check_trace_value(trace: float) -> float:
    if not 1.0 < trace < float("inf"):
        raise ValueError(f"trace must be > 1 (and at most the number of classes), got {trace}")
    return trace


def _check_diag(diag: float) -> float:
    if not 0.0 < diag <= 1.0:
        raise ValueError(f"diag (mean diagonal of the noise matrix) must be in (0, 1], got {diag}")
    return diag


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "rate": check_rate,
    "rho": check_rho,
    "fraction": check_fraction,
    "trace": _check_trace_value,
    "diag": _check_diag,
    "target": _choice("target", SYMMETRIC_TARGETS),
    "mode": _choice("mode", PARTIAL_MODES),
    "label_set": _choice("label_set", CIFAR10N_SETS),
}

_StepFunction = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Scenario:
    """A step function maps (y, num_classes, rng, **params) to (kept indices into y, their
    observed labels); ``params`` is the spec grammar, positional ones in order."""

    function: _StepFunction
    params: tuple[_Param, ...]
    summary: str
    papers: tuple[int, ...] = ()


_RATE = _Param("rate", float)
_SCENARIOS: dict[str, _Scenario] = {
    "clean": _Scenario(clean_scenario, (), "Labels as they are."),
    "symmetric": _Scenario(
        symmetric_scenario,
        (_RATE, _Param("target", str, "other")),
        "Symmetric noise: with prob. rate a label goes to a uniform other class.",
    ),
    "pairflip": _Scenario(
        pairflip_scenario, (_RATE,), "Pair-flip noise: with prob. rate class i becomes i + 1."
    ),
    "matrix": _Scenario(
        matrix_scenario,
        (_Param("trace", float, None), _Param("diag", float, None, positional=False)),
        "Noise sampled from a random valid noise matrix with a given trace.",
    ),
    "cifar10n": _Scenario(
        cifar10n_scenario,
        (_Param("label_set", str),),
        "CIFAR-10N human labels (aggre, worst, random1-3) replace the clean ones.",
    ),
    "longtail": _Scenario(
        longtail_scenario,
        (_Param("rho", float),),
        "Long-tail subsample: n_i = floor(n_max * rho^(-i/(C-1))), class 0 the head.",
        (15,),
    ),
    "subset": _Scenario(
        subset_scenario,
        (_Param("fraction", float),),
        "Stratified random subsample of a fraction of every class (class profile kept).",
    ),
    "natural": _Scenario(
        clean_scenario, (), "A naturally long-tailed set (TREC-50) as it is, reported by group."
    ),
    "partial": _Scenario(
        partial_scenario,
        (_RATE, _Param("mode", str, "independent")),
        "Partial multi-label: each positive independently dropped to 0 with prob. rate.",
        (19, 43),
    ),
}


def _convert(param: _Param, text: str, spec: str) -> float | str:
    try:
        value: float | str = float(text) if param.kind is float else text
    except ValueError:
        raise ValueError(
            f"malformed scenario spec {spec!r}: {param.name} must be a number, got {text!r}"
        ) from None
    try:
        return _CHECKS[param.name](value)
    except ValueError as error:
        raise ValueError(f"scenario spec {spec!r}: {error}") from None


def _parse_step(text: str, spec: str) -> tuple[str, dict[str, float | str]]:
    fields = [f.strip() for f in text.split(":")]
    name = fields[0]
    if name not in _SCENARIOS:
        near = difflib.get_close_matches(name, list(_SCENARIOS), n=2)
        hint = f"; did you mean {near}?" if near else ""
        raise ValueError(
            f"unknown scenario {name!r} in spec {spec!r}{hint}; known: {list_scenarios()}"
        )
    schema = _SCENARIOS[name].params
    by_name = {p.name: p for p in schema}
    positional = [p for p in schema if p.positional]
    given: dict[str, Any] = {}
    keywords = False  # no positional argument after a key=value one
    for i, field in enumerate(fields[1:]):
        key, eq, value = field.partition("=")
        if eq:
            keywords = True
        elif keywords or i >= len(positional):
            raise ValueError(
                f"malformed scenario spec {spec!r}: unexpected argument {field!r} for {name} "
                f"(positional parameters: {[p.name for p in positional]})"
            )
        else:
            key, value = positional[i].name, field
        key, value = key.strip(), value.strip()
        if key not in by_name or key in given or not value:
            raise ValueError(
                f"malformed scenario spec {spec!r}: bad or repeated argument {field!r} for "
                f"{name} (parameters: {list(by_name)})"
            )
        given[key] = _convert(by_name[key], value, spec)
    params: dict[str, float | str] = {}
    for p in schema:
        if p.name in given:
            params[p.name] = given[p.name]
        elif p.default is _REQUIRED:
            raise ValueError(f"malformed scenario spec {spec!r}: {name} needs {p.name!r}")
        elif p.default is not None:
            params[p.name] = p.default
    if name == "matrix" and len(params) != 1:
        raise ValueError(
            f"malformed scenario spec {spec!r}: matrix needs exactly one of trace or diag"
        )
    return name, params


def parse_steps(spec: str) -> list[tuple[str, dict[str, float | str]]]:
    """The steps of ``spec`` (``+``-joined), each ``(name, params)`` with defaults filled."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be a non-empty scenario string, got {spec!r}")
    parts = [p.strip() for p in spec.split("+")]
    if not all(parts):
        raise ValueError(f"malformed scenario spec {spec!r}: empty step around '+'")
    steps = [_parse_step(p, spec) for p in parts]
    names = [n for n, _ in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"malformed scenario spec {spec!r}: a scenario appears twice")
    return steps


def parse_scenario(spec: str) -> tuple[str, dict[str, float | str]]:
    """``(name, params)`` of a one-step spec, e.g. ``("symmetric", {"rate": 0.4, ...})``.

    A composite spec gives the ``+``-joined names and parameters keyed ``"<step>.<param>"``:
    ``longtail:100+symmetric:0.2`` -> ``("longtail+symmetric", {"longtail.rho": 100.0,
    "symmetric.rate": 0.2, "symmetric.target": "other"})``.
    """
    steps = parse_steps(spec)
    if len(steps) == 1:
        return steps[0]
    params = {f"{n}.{k}": v for n, p in steps for k, v in p.items()}
    return "+".join(n for n, _ in steps), params


def _format_value(value: float | str) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


def canonical_scenario(spec: str) -> str:
    """One spelling per scenario (``symmetric:0.40:other`` -> ``symmetric:0.4``), to hash."""
    out = []
    for name, params in parse_steps(spec):
        fields, in_order = [name], True
        for p in _SCENARIOS[name].params:
            if p.name not in params or params[p.name] == p.default:
                in_order = False
                continue
            value = _format_value(params[p.name])
            fields.append(value if in_order and p.positional else f"{p.name}={value}")
        out.append(":".join(fields))
    return "+".join(out)


def is_long_tailed(spec: str) -> bool:
    """Whether ``spec`` makes a long-tailed training set (``longtail`` or ``natural``)."""
    return any(name in LONG_TAILED for name, _ in parse_steps(spec))


def list_scenarios() -> list[str]:
    """Registered label scenario names."""
    return [e.name for e in catalog(kind="scenario", family="labels")]


def _human_labels(extras: Mapping[str, np.ndarray] | None, label_set: str, n: int) -> np.ndarray:
    key = f"cifar10n/{label_set}"
    if extras is None or key not in extras:
        raise ValueError(
            f"scenario cifar10n:{label_set} needs extras[{key!r}], the human labels aligned "
            "with y (the CIFAR-10 loader reads them from cifar10n_labels.npz)"
        )
    noisy = np.asarray(extras[key])
    if noisy.shape != (n,):
        raise ValueError(f"extras[{key!r}] must have shape ({n},) like y, got {noisy.shape}")
    return noisy


def apply_scenario(
    spec: str,
    y: np.ndarray,
    num_classes: int,
    *,
    seed: int,
    extras: Mapping[str, np.ndarray] | None = None,
) -> Corrupted:
    """Apply ``spec`` to training labels ``y`` (int ``[n]`` or {0,1} ``[n, C]``), seeded.

    The same ``(spec, y, num_classes, seed, extras)`` always gives the same result.
    """
    steps = parse_steps(spec)
    y = _targets(y, num_classes)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    calls = []
    for name, params in steps:
        kwargs: dict[str, Any] = dict(params)
        if name == "cifar10n":
            kwargs["noisy"] = _human_labels(extras, str(params["label_set"]), y.shape[0])
        calls.append((_SCENARIOS[name].function, kwargs))
    rng = np.random.default_rng(int(seed))
    current = Corrupted(np.arange(y.shape[0]), y, y)
    for function, kwargs in calls:
        if "noisy" in kwargs:
            kwargs["noisy"] = kwargs["noisy"][current.index]
        index, observed = function(current.labels, num_classes, rng, **kwargs)
        current = Corrupted(current.index[index], observed, current.clean[index])
    return current


for _name, _s in _SCENARIOS.items():
    register(
        _name,
        kind="scenario",
        family="labels",
        papers=_s.papers,
        summary=_s.summary,
        defaults={p.name: p.default for p in _s.params if p.default not in (_REQUIRED, None)},
        function=_s.function,
    )
