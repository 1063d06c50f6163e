"""Named sweeps of the arena and the objective-spec syntax.

An objective spec is a registered name with optional hyperparameters:
``"comp_sum:tau=1.5"``, ``"ldam:drw_start=24"``. A suite is a list of tracks; a track is one
dataset with its model, epochs, scenarios and objectives (and optionally batch size and
learning rate), expanded over the suite's seeds.

Suites ``quick`` and ``standard`` are multiclass; ``multilabel`` runs the multi-label
objectives on GoEmotions, MULAN yeast and scene under partial labels (scenarios of
:mod:`losskit.labels.multilabel`); ``extreme`` and ``extreme_quick`` are the synthetic
extreme-classification track of :mod:`losskit.arena.extreme`, whose "dataset" is a
``synthetic_xc:...`` spec and whose "scenarios" are batching specs (``random:all``,
``random:inbatch``, ``ngame:inbatch``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

NOISE_ROBUST = ("generalized_cross_entropy", "comp_sum:tau=1.5", "ldr_kl")
QUICK_OBJECTIVES = (
    "cross_entropy",
    "focal",
    *NOISE_ROBUST,
    "ldam:drw_start=24",
    "spherical_z_loss",
    "self_adjusting_dice",
)


ML_SCENARIOS = ("clean", "partial:0.3", "partial:0.6")
# Softmax-type losses need a positive per row; partial labels empty many rows (GoEmotions
# has one label per comment mostly), so those rows are skipped. The linear / MLP heads give
# logits, not the cosines that MLCD's angular margin needs: its Eq. 5 on the logits.
ML_OBJECTIVES = (
    "multilabel_bce", "multilabel_focal", "asymmetric", "multilabel_ldam", "comic", "pu_mlc",
    "hybrid_multilabel", "cluster_discrimination:margin=0,scale=1",
    "multilabel_softmax:empty=skip", "decoupled_softmax:empty=skip", "soft_top_k:empty=skip",
)  # fmt: skip
XC_10K = "synthetic_xc:labels=10000,train=20000,test=2000"
XC_100K = "synthetic_xc:labels=100000,train=10000,test=1000"
XC_QUICK = "synthetic_xc:labels=2000,train=3000,test=500"
XC_BATCHING = ("random:all", "random:inbatch", "ngame:inbatch")
XC_OBJECTIVES = ("multilabel_softmax", "decoupled_softmax", "soft_top_k")


@dataclass(frozen=True)
class Track:
    """One dataset of a suite: model, epochs, label scenarios and objectives."""

    dataset: str
    model: str
    epochs: int
    scenarios: tuple[str, ...]
    objectives: tuple[str, ...]
    batch_size: int = 128
    lr: float = 1e-3


@dataclass(frozen=True)
class Suite:
    """A sweep over tracks and seeds. Tracks whose data is missing are skipped with a
    message, except the first, which must be there."""

    name: str
    tracks: tuple[Track, ...]
    seeds: int = 3

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(t.dataset for t in self.tracks)

    def override(self, **fields: Any) -> Suite:
        """A copy with ``datasets``, ``scenarios``, ``objectives``, ``model``, ``epochs`` or
        ``seeds`` replaced (the CLI flags); new datasets get the first track's settings."""
        tracks = list(self.tracks)
        if fields.get("datasets"):
            known = {t.dataset: t for t in tracks}
            tracks = [known.get(d, replace(tracks[0], dataset=d)) for d in fields["datasets"]]
        changes = {k: fields[k] for k in ("scenarios", "objectives", "model", "epochs")
                   if fields.get(k) is not None}  # fmt: skip
        tracks = [replace(t, **changes) for t in tracks]
        seeds = fields.get("seeds")
        return replace(self, tracks=tuple(tracks), seeds=self.seeds if seeds is None else seeds)


_CIFAR = ("cross_entropy", *NOISE_ROBUST)
SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick",
        (
            Track("digits", "mlp", 30, ("clean", "symmetric:0.4", "pairflip:0.4", "longtail:50"),
                  QUICK_OBJECTIVES),
            Track("trec6", "linear", 30, ("clean", "symmetric:0.4", "pairflip:0.4"),
                  QUICK_OBJECTIVES),
        ),
    ),
    "standard": Suite(
        "standard",
        (
            Track("digits", "mlp", 30,
                  ("clean", "symmetric:0.2", "symmetric:0.4", "symmetric:0.6", "pairflip:0.4",
                   "longtail:100"),
                  (*QUICK_OBJECTIVES, "mean_absolute_error", "aldr_kl", "dice")),
            Track("trec50", "linear", 30, ("natural",),
                  ("cross_entropy", "focal", "ldam:drw_start=24", "dice", "self_adjusting_dice",
                   *NOISE_ROBUST)),
            Track("sms_spam", "linear", 30, ("clean",),
                  ("cross_entropy", "focal", "dice", "self_adjusting_dice")),
            Track("cifar10", "cnn", 10,
                  ("subset:0.2+symmetric:0.4", "subset:0.2+cifar10n:worst", "subset:0.2"),
                  _CIFAR),
            Track("cifar10", "cnn", 10, ("longtail:100",), ("cross_entropy", "ldam:drw_start=8")),
            Track("cifar10", "cnn", 10,
                  ("subset:0.2+cifar10n:aggre", "subset:0.2+cifar10n:random1"), _CIFAR),
        ),
    ),
    "multilabel": Suite(
        "multilabel",
        (
            Track("goemotions", "linear", 10, ML_SCENARIOS, ML_OBJECTIVES, 256, 3e-3),
            Track("goemotions", "mlp", 5, ML_SCENARIOS, ML_OBJECTIVES, 256, 1e-3),
            Track("mulan_yeast", "linear", 30, ML_SCENARIOS, ML_OBJECTIVES, 64, 1e-3),
            Track("mulan_yeast", "mlp", 20, ML_SCENARIOS, ML_OBJECTIVES, 64, 1e-3),
            Track("mulan_scene", "linear", 30, ML_SCENARIOS, ML_OBJECTIVES, 64, 1e-3),
            Track("mulan_scene", "mlp", 20, ML_SCENARIOS, ML_OBJECTIVES, 64, 1e-3),
        ),
    ),
    "extreme": Suite(
        "extreme",
        (
            Track(XC_10K, "linear", 5, XC_BATCHING, XC_OBJECTIVES, 256, 1e-2),
            Track(XC_100K, "linear", 3, XC_BATCHING, XC_OBJECTIVES, 256, 1e-2),
        ),
        seeds=2,
    ),
    "extreme_quick": Suite(
        "extreme_quick",
        (Track(XC_QUICK, "linear", 4, XC_BATCHING, XC_OBJECTIVES, 128, 1e-2),),
        seeds=1,
    ),
}  # fmt: skip


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_objective(spec: str) -> tuple[str, dict[str, Any]]:
    """``"comp_sum:tau=1.5,foo=x"`` -> ``("comp_sum", {"tau": 1.5, "foo": "x"})``."""
    name, _, rest = spec.partition(":")
    if not name:
        raise ValueError(f"objective spec must start with a registered name, got {spec!r}")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ValueError(f"objective spec {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = _value(val.strip())
    return name, params


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {name!r}")
    return SUITES[name]
