"""Named sweeps of the arena and the objective-spec syntax.

An objective spec is a registered name with optional hyperparameters:
``"comp_sum:tau=1.5"``, ``"ldam:drw_start=24"``. A suite is a list of tracks; a track is one
dataset with its model, epochs, scenarios and objectives (and optionally batch size and
learning rate), expanded over the suite's seeds.

Suites ``quick`` and ``standard`` are multiclass; ``noisy`` sets the training recipes of
:mod:`losskit.arena.recipes` (named like objectives) against the noise-robust objectives in
noisy and long-tail scenarios; ``multilabel`` runs the multi-label
objectives on GoEmotions, MULAN yeast and scene under partial labels (scenarios of
:mod:`losskit.labels.multilabel`); ``extreme`` and ``extreme_quick`` are the synthetic
extreme-classification track of :mod:`losskit.arena.extreme`, whose "dataset" is a
``synthetic_xc:...`` spec and whose "scenarios" are batching specs (``random:all``,
``random:inbatch``, ``ngame:inbatch``).

``retrieval`` trains embedding networks (:mod:`losskit.arena.retrieval`: datasets
``retrieval:<base>[:dim=D,train=N,query=M]``, scenarios ``all`` or ``disjoint:K`` held-out
classes) with embedding losses and a cross-entropy classifier baseline, scored by Recall@1/5,
MAP@R and NMI; one track is the imbalanced-regression track of
:mod:`losskit.arena.imbalanced_regression` (dataset ``regression:housing``, scenario
``longtail:R``), an MLP regressor with L1 / MSE, with and without ConR (paper 53).

``distill`` is the distillation track (:mod:`losskit.arena.distill_trial`): tracks with a
``teacher`` spec train a teacher once per seed and students of the track's model against it
with each objective; how each objective is combined with cross-entropy is the table of
:mod:`losskit.arena.distill_objectives`.
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
    teacher: str = ""  # a distillation teacher spec (losskit.arena.distill_data); "" for none


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

# Distillation (losskit.arena.distill_objectives has the CE combinations): the CE-only
# student, Hinton KD (0.9 KD + 0.1 CE, T = 4), DKD, NKD and USKD (44), ND / KD++ (21),
# dual-head KD (23), FerKD (27) and paper 58's soft labels alone (T = 20, no T^2).
DISTILL_OBJECTIVES = ("cross_entropy", "kd:alpha=0.9", "dkd", "nkd", "uskd", "nd",
                      "dual_head_kd", "ferkd", "soft_label_protocol")  # fmt: skip
# CIFAR-10H gives probabilities only: ND and dual-head KD need a teacher's features / logits;
# USKD uses no teacher (it runs in the CNN track). A temperature T turns human probabilities
# into p^(1/T) renormalised, which flattens them, so KD and soft labels also run at T = 1.
HUMAN_OBJECTIVES = ("cross_entropy", "kd:alpha=0.9", "kd:alpha=0.9,temperature=1", "dkd",
                    "nkd", "ferkd", "soft_label_protocol",
                    "soft_label_protocol:temperature=1")  # fmt: skip
# Retrieval (losskit.arena.retrieval): label-form embedding losses, a softmax classifier
# baseline (retrieval on its penultimate features), TCM alone and on top of multi-similarity
# (paper 50's setting). The pair-form focal InfoNCE (paper 9) gets one (query, key) pair per
# class and batch, so it only runs where a batch holds many classes.
# The papers' label-form losses follow: Proxy-Anchor (Metrix's proxy base), Metrix (11,
# embedding mixing; top_k=5 hardest negatives per anchor bound the positive-negative mixes,
# which otherwise grow as N |P| |N|), hyperspherical softmax (25), UNPG on ArcFace (18),
# GroCo (33), proto-triplet and ICNN (31); UniME (42) is pair-form like focal InfoNCE.
RETRIEVAL_BASE = ("cross_entropy", "supcon", "triplet_margin", "multi_similarity", "tcm",
                  "tcm:base_loss=multi_similarity")  # fmt: skip
RETRIEVAL_OBJECTIVES = (*RETRIEVAL_BASE, "proxy_anchor", "metrix:top_k=5",
                        "hyperspherical_softmax", "unpg", "groco", "proto_triplet",
                        "icnn")  # fmt: skip
RETRIEVAL_MANY = (*RETRIEVAL_OBJECTIVES, "focal_info_nce", "unime")
# CIFAR-10 trials cost about a minute of CPU each: the classifier baseline, SupCon,
# multi-similarity and Metrix.
RETRIEVAL_CIFAR = ("cross_entropy", "supcon", "multi_similarity", "metrix:top_k=5")
# ConR (paper 53) on a 20-bin target in [0, 5]: label and prediction windows of one bin
# (0.25, as one year on AgeDB), pushing weight exp(0.2 |dy|) (at most e, as AgeDB's 0.01 over
# ~100 years), the AgeDB weight 4 and a lighter 1.
_CONR = "conr:label_similarity_threshold=0.25,prediction_threshold=0.25,beta=0.2"
REGRESSION_OBJECTIVES = (
    "l1",
    "mse",
    f"{_CONR},base_loss=l1,reg_weight=4",
    f"{_CONR},base_loss=l1,reg_weight=1",
    f"{_CONR},base_loss=mse,reg_weight=1",
)
# Training recipes (losskit.arena.recipes) against the noise-robust objectives: confident
# learning's cleaned set (34), co-teaching, nested dropout and both (12), RCAL (32); in the
# long tails pseudo-labels and self-supervised pre-training (15) and RSS (41), whose
# unlabeled data are the training samples the long-tail scenario dropped.
NOISY_RECIPES = ("cleaned", "co_teaching", "nested_dropout", "co_teaching_nested", "rcal")
LONG_TAIL_RECIPES = ("semi_supervised", "ssp", "rss")
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
    "noisy": Suite(
        "noisy",
        (
            Track("digits", "mlp", 30,
                  ("symmetric:0.2", "symmetric:0.4", "symmetric:0.6", "pairflip:0.4",
                   "longtail:10+symmetric:0.2"),
                  (*_CIFAR, *NOISY_RECIPES)),
            Track("digits", "mlp", 30, ("longtail:100",),
                  ("cross_entropy", "ldam:drw_start=24", *LONG_TAIL_RECIPES)),
            Track("trec6", "mlp", 20, ("symmetric:0.4", "pairflip:0.4"),
                  (*_CIFAR, *NOISY_RECIPES)),
            Track("cifar10", "cnn", 10, ("subset:0.2+cifar10n:worst",), (*_CIFAR, *NOISY_RECIPES)),
            # RSS with one ascent step and a pool as large as the labelled set: five steps on
            # every labelled and pool image would cost about twenty CE trials.
            Track("cifar10", "cnn", 10, ("longtail:100",),
                  ("cross_entropy", "ldam:drw_start=8", "semi_supervised", "ssp",
                   "rss:pool_ratio=1,steps=1")),
            # Confident learning on the CNN's own 4-fold probabilities, CIFAR-10N aggregate.
            Track("cifar10", "cnn", 10, ("subset:0.2+cifar10n:aggre",),
                  ("cross_entropy", "cleaned")),
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
    "distill": Suite(
        "distill",
        (
            # MLP 2x256 teacher -> MLP 1x32 student on the 8x8 digits.
            Track("digits", "mlp_small", 40, ("clean",), DISTILL_OBJECTIVES, 64, 3e-3,
                  teacher="mlp:epochs=30"),
            # MLP on MiniLM embeddings -> MLP 1x32 on a hashed bag of words of the questions.
            Track("trec6", "mlp_small", 20, ("clean",), DISTILL_OBJECTIVES, 64, 3e-3,
                  teacher="mlp:epochs=30,student_input=bow"),
            # The arena CNN -> a CNN with half its widths, on a 10 % subset (5,000 images).
            Track("cifar10", "cnn_small", 12, ("subset:0.1",), DISTILL_OBJECTIVES, 128, 2e-3,
                  teacher="cnn:epochs=15,lr=0.002"),
            # CIFAR-10H human label distributions: train on one half of the test images,
            # evaluate on the other (losskit.arena.distill_data.cifar10h_split).
            Track("cifar10", "cnn_small", 12, ("clean",), HUMAN_OBJECTIVES, 128, 2e-3,
                  teacher="cifar10h"),
        ),
    ),
    "retrieval": Suite(
        "retrieval",
        (
            # 28 training identities, retrieval among the 120 faces of 12 unseen ones.
            Track("retrieval:olivetti", "mlp", 40, ("disjoint:12",), RETRIEVAL_MANY, 128, 1e-3),
            # MLP projection heads (384 -> 256 -> 256 -> 128) on frozen MiniLM embeddings.
            Track("retrieval:trec6", "mlp", 15, ("all",), RETRIEVAL_OBJECTIVES, 128, 1e-3),
            Track("retrieval:trec50", "mlp", 15, ("all",), RETRIEVAL_MANY, 128, 1e-3),
            # Single-label comments only; 12,000 of the ~36,000 for training.
            Track("retrieval:goemotions:train=12000", "mlp", 8, ("all",), RETRIEVAL_MANY,
                  128, 1e-3),
            Track("regression:housing", "mlp", 60, ("longtail:100",), REGRESSION_OBJECTIVES,
                  128, 1e-3),
            # The arena CNN with a 128-d embedding layer, 5,000 training images, all 10,000
            # test images as queries (last: the costliest track).
            Track("retrieval:cifar10:train=5000", "cnn", 12, ("all",), RETRIEVAL_CIFAR,
                  128, 2e-3),
        ),
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
