"""Spec strings of the synthetic extreme track (:mod:`losskit.arena.extreme`).

Dataset: ``synthetic_xc:labels=L,train=N,test=M,dim=D,zipf=a,sigma=s,seed=k`` (every field
optional, defaults in :data:`DATA_FIELDS`; :func:`canonical_extreme_dataset` spells all of
them out, in a fixed order, so a changed default never changes what a stored key means).

Batching (the trial's ``scenario``): ``<batching>[:<negatives>[:options]]`` with batching
``random`` or ``ngame`` and negatives ``all`` or ``inbatch`` (default ``all`` for random,
``inbatch`` for ngame); NGAME options ``cluster=C,refresh=R,warmup=W`` (:data:`NGAME_FIELDS`):
largest cluster size, epochs between re-clusterings, random epochs before the first one.
"""

from __future__ import annotations

from typing import Any

DATASET = "synthetic_xc"
MAX_POSITIVES = 10
BATCHINGS = ("random", "ngame")
NEGATIVES = ("all", "inbatch")
# the dataset spec's fields (spec key, default); every one enters the canonical spec
DATA_FIELDS = {"labels": 10_000, "train": 20_000, "test": 2_000, "dim": 64, "zipf": 1.0,
               "sigma": 0.5, "seed": 0}  # fmt: skip
NGAME_FIELDS = {"cluster": 32, "refresh": 1, "warmup": 1}


def _fields(spec: str, text: str, defaults: dict[str, Any], what: str) -> dict[str, Any]:
    out = dict(defaults)
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = (p.strip() for p in item.partition("="))
        if not eq or key not in defaults:
            raise ValueError(f"{what} spec {spec!r}: expected key=value with key in "
                             f"{list(defaults)}, got {item!r}")  # fmt: skip
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"{what} spec {spec!r}: {key} must be a number, got {value!r}"
            ) from None
        if isinstance(defaults[key], int):
            if not number.is_integer() or number < 0:
                raise ValueError(f"{what} spec {spec!r}: {key} must be an int >= 0, got {value!r}")
            number = int(number)
        out[key] = number
    return out


def _spell(name: str, fields: dict[str, Any]) -> str:
    text = ",".join(f"{k}={int(v) if float(v).is_integer() else v!r}" for k, v in fields.items())
    return f"{name}:{text}"


def parse_extreme_dataset(spec: str) -> dict[str, Any]:
    """``"synthetic_xc:labels=100000,train=30000"`` -> every field of :data:`DATA_FIELDS`
    (defaults filled). Raises ``ValueError`` on a bad spec."""
    name, _, rest = spec.partition(":")
    if name.strip() != DATASET:
        raise ValueError(f"dataset spec must start with {DATASET!r}, got {spec!r}")
    f = _fields(spec, rest, DATA_FIELDS, "dataset")
    if f["labels"] < 2 * MAX_POSITIVES or f["train"] < 1 or f["test"] < 1 or f["dim"] < 2:
        raise ValueError(f"dataset spec {spec!r}: need labels >= {2 * MAX_POSITIVES}, train "
                         "and test >= 1, dim >= 2")  # fmt: skip
    if not (0 <= f["zipf"] < 10 and 0 <= f["sigma"] < 100):
        raise ValueError(f"dataset spec {spec!r}: zipf must be in [0, 10), sigma in [0, 100)")
    return f


def is_extreme_dataset(name: str) -> bool:
    """Whether ``name`` names the synthetic extreme data (``synthetic_xc[:...]``)."""
    return name.partition(":")[0].strip() == DATASET


def canonical_extreme_dataset(spec: str) -> str:
    """The spec with every field spelled out, in a fixed order (what a trial stores)."""
    return _spell(DATASET, parse_extreme_dataset(spec))


def parse_batching(spec: str) -> tuple[str, str, dict[str, int]]:
    """``"ngame:inbatch:cluster=16"`` -> ``("ngame", "inbatch", {cluster, refresh, warmup})``.

    Negatives default to ``all`` for ``random`` and ``inbatch`` for ``ngame``; the NGAME
    fields (``cluster``: the largest cluster size, ``refresh``: epochs between
    re-clusterings, ``warmup``: random epochs first) apply to ``ngame`` only."""
    batching, _, rest = (p.strip() for p in spec.partition(":"))
    negatives, _, options = (p.strip() for p in rest.partition(":"))
    negatives = negatives or ("inbatch" if batching == "ngame" else "all")
    if batching not in BATCHINGS or negatives not in NEGATIVES:
        raise ValueError(
            f"scenario must be '<batching>[:<negatives>[:options]]' with batching in "
            f"{BATCHINGS} and negatives in {NEGATIVES}, got {spec!r}"
        )
    if batching == "random":
        if options:
            raise ValueError(f"scenario {spec!r}: random batching takes no options")
        return batching, negatives, {}
    ngame = _fields(spec, options, NGAME_FIELDS, "scenario")
    if ngame["cluster"] < 1 or ngame["refresh"] < 1:
        raise ValueError(f"scenario {spec!r}: cluster and refresh must be >= 1")
    return batching, negatives, ngame


def canonical_batching(spec: str) -> str:
    """One spelling per batching scenario (NGAME fields spelled out)."""
    batching, negatives, ngame = parse_batching(spec)
    return f"{batching}:{negatives}" + (_spell("", ngame) if ngame else "")
