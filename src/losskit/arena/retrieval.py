"""The retrieval track: embedding networks trained with each objective, scored by retrieval.

A trial of this track is a plain :class:`~losskit.arena.trial.Trial` whose ``dataset`` is a
``retrieval:<base>[:options]`` spec and whose ``scenario`` is the class protocol;
``run_trial`` sends it to :func:`run_retrieval_trial`, so the store, the runner and resume
work as for the other tracks. Spec parsing, the objective rules and that dispatch are in
:mod:`losskit.arena.retrieval_specs`.

**Data** (``<base>``, from :func:`losskit.arena.datasets.load_dataset`): ``olivetti`` (64x64
faces, 40 people x 10), ``cifar10`` (uint8 images), ``trec6`` / ``trec50`` (frozen MiniLM
sentence embeddings, 384-d) and ``goemotions`` (MiniLM embeddings; only the comments with
exactly one label are kept, in train and test, about 84 % of them: a retrieval label must be
a single class). Options (``dim=D,train=N,query=M``, every one spelled out in the canonical
spec): ``dim`` the embedding width (default 128), ``train`` / ``query`` a fixed random subset
(seed 0, the same for every seed and objective) of that many training / query rows, ``0`` for
all.

**Class protocol** (the ``scenario``): ``all``: train on the train split, retrieve within the
test split (the same classes, closed set); ``disjoint:K``: the train and test rows are pooled,
``K`` classes chosen by a fixed permutation (seed 0) are held out, the network trains on the
other classes and retrieval runs among the held-out ones only (classes never seen in
training: the deep-metric-learning protocol, Musgrave et al. 2020). The suite uses
``disjoint:12`` on Olivetti (28 training identities, 12 unseen identities, 120 faces) and
``all`` elsewhere (CIFAR-10 and TREC-6 have too few classes to split).

**Model**: ``losskit.arena.models.build_model(model, x, dim)``: the arena's network with its
last layer as the ``dim``-wide embedding layer (``cnn``: the arena CNN, whose head becomes a
64 -> ``dim`` embedding layer; ``mlp``: two hidden layers of 256 then ``dim``, the projection
head on frozen sentence embeddings or on Olivetti's standardised pixels; ``linear``).

**Batches**: class-balanced ``P x K`` batches (the m-per-class sampling of deep metric
learning): ``P = min(C, B // 4)`` classes drawn uniformly without replacement, ``K = B // P``
rows of each (without replacement, with it for a class smaller than ``K``), laid out class
by class; ``ceil(N / B)`` batches per epoch, from a generator seeded by the trial's seed, the
same batches for every objective. Adam (or SGD) at the trial's rate with a cosine decay to 0
over the epochs (one step per epoch), as in the distillation track.

**Objectives** (:class:`RetrievalObjective`, by registered name):

- an ``embedding`` loss of the label form ``loss(embeddings, labels)`` on the batch;
- an ``embedding`` loss of the pair form ``loss(query, keys)`` (first argument ``query``):
  ``query`` and ``keys`` are the first and the second row of every class group, so each query
  has exactly one positive key and the other ``P - 1`` keys are true negatives;
- a ``classification`` loss (``cross_entropy``, ...): a linear classifier head ``dim -> C`` on
  the embedding, trained with the loss on its logits; retrieval uses the embedding, i.e. the
  classifier's penultimate features;
- a module that needs its own parameters (proxies, class centres, margin heads) gets the
  constructor arguments ``num_classes``, ``in_features`` / ``embedding_dim`` (= ``dim``),
  ``class_counts``, ``num_samples``, ``num_epochs`` by name
  (:class:`~losskit.arena.trial.TrialObjective`), and its parameters are trained;
- the reserved parameters ``base_loss=<name>`` and ``reg_weight=<w>`` (default 1) make the
  objective a regulariser: ``loss = base_loss + w * objective`` (``tcm:base_loss=
  multi_similarity`` is paper 50's setting, TCM on top of a metric loss).

**Results** (final epoch): ``metrics`` = Recall@1, Recall@5, MAP@R, NMI
(:func:`losskit.diagnostics.retrieval.retrieval_metrics`; cosine similarity,
leave-one-out among the query rows) and, for feature inputs, ``input_metrics``, the same
metrics of the standardised input features (no training, a reference row); ``task =
"retrieval"``; curves ``train_loss``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from losskit.arena.models import Standardizer, build_model, is_image
from losskit.arena.retrieval_specs import (
    canonical_retrieval_split,
    check_retrieval_objective,
    objective_form,
    parse_retrieval_dataset,
)
from losskit.arena.trial import (
    Trial,
    TrialObjective,
    deterministic,
    load_cached,
    make_optimizer,
    predict,
    take_step,
    versions,
)
from losskit.diagnostics.retrieval import retrieval_metrics

PER_CLASS = 4  # K when the classes are many: P = B // 4
INPUT_METRICS_MAX = 50_000_000  # query rows x input width up to which input_metrics is computed
METRIC_NAMES = ("recall@1", "recall@5", "map@r", "nmi")


@dataclass
class RetrievalData:
    """Training rows with labels ``0 .. num_classes - 1`` and the query rows (own labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    num_classes: int


def _subset(n: int, size: int) -> np.ndarray:
    if size == 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:size])


def retrieval_data(
    spec: str, scenario: str, data_dir: Any = None, dataset_loader: Callable | None = None
) -> RetrievalData:
    """The training and query rows of dataset ``spec`` under class protocol ``scenario``."""
    base, opts = parse_retrieval_dataset(spec)
    ds = load_cached(base, data_dir, dataset_loader)
    parts = {}
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if y.ndim == 2:  # multi-label: the rows with exactly one label
            single = y.sum(axis=1) == 1
            x, y = x[single], y[single].argmax(axis=1).astype(np.int64)
        parts[split] = (x, y)
    scenario = canonical_retrieval_split(scenario)
    if scenario == "all":
        (x_tr, y_tr), (x_q, y_q) = parts["train"], parts["test"]
    else:
        k = int(scenario.split(":")[1])
        x_all = np.concatenate([parts["train"][0], parts["test"][0]])
        y_all = np.concatenate([parts["train"][1], parts["test"][1]])
        classes = np.unique(y_all)
        if k >= len(classes) - 1:
            raise ValueError(f"scenario {scenario!r}: {base} has {len(classes)} classes; hold "
                             "out at most all but two")  # fmt: skip
        held = np.isin(y_all, np.random.default_rng(0).permutation(classes)[:k])
        x_tr, y_tr, x_q, y_q = x_all[~held], y_all[~held], x_all[held], y_all[held]
    tr, q = _subset(len(y_tr), opts["train"]), _subset(len(y_q), opts["query"])
    classes, y_train = np.unique(y_tr[tr], return_inverse=True)
    return RetrievalData(x_tr[tr], y_train.astype(np.int64), x_q[q], y_q[q], len(classes))


def class_batches(
    labels: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, int]]:
    """One epoch of ``P x K`` batches: ``(indices laid out class by class, K)``."""
    rows = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    p = min(len(rows), max(1, batch_size // PER_CLASS))
    k = max(2, batch_size // p)
    for _ in range(math.ceil(len(labels) / batch_size)):
        picked = rng.choice(len(rows), size=p, replace=False)
        yield np.concatenate([rng.choice(rows[c], size=k, replace=len(rows[c]) < k)
                              for c in picked]), k  # fmt: skip


class RetrievalObjective(nn.Module):
    """A registered objective on embeddings ``[B, dim]`` of a ``P x K`` batch."""

    def __init__(self, name: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__()
        check_retrieval_objective(name, params)
        params = dict(params)
        base = params.pop("base_loss", None)
        self.reg_weight = float(params.pop("reg_weight", 1.0))
        self.form = objective_form(name)
        self.loss = TrialObjective(name, params, context)
        self.head = None
        if self.form == "classifier":
            self.head = nn.Linear(context["in_features"], context["num_classes"])
        self.base = None if base is None else RetrievalObjective(base, {}, context)

    def set_epoch(self, epoch: int) -> None:
        self.loss.set_epoch(epoch)
        if self.base is not None:
            self.base.set_epoch(epoch)

    def forward(self, emb: Tensor, labels: Tensor, index: Tensor, k: int) -> Tensor:
        if self.form == "pairs":
            groups = emb.view(-1, k, emb.shape[1])
            out = self.loss(groups[:, 0], groups[:, 1], index[::k])
        elif self.head is not None:
            out = self.loss(self.head(emb), labels, index)
        else:
            out = self.loss(emb, labels, index)
        if self.base is None:
            return out
        return self.base(emb, labels, index, k) + self.reg_weight * out


def _metrics(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The retrieval metrics in float32 (NaN when an embedding is not finite or zero)."""
    emb = np.asarray(emb, dtype=np.float32)
    if not np.isfinite(emb).all() or (np.linalg.norm(emb, axis=1) == 0).any():
        return {m: math.nan for m in METRIC_NAMES}
    return retrieval_metrics(emb, labels, ks=(1, 5), seed=0)


def run_retrieval_trial(
    trial: Trial,
    *,
    data_dir: Any = None,
    dataset_loader: Callable[..., Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train the embedding network of ``trial`` and score retrieval on its query rows; the
    JSON-ready result (module docstring). A non-finite loss stops training (``"diverged":
    true``, metrics of the network as it stands, NaN where its embeddings are not finite)."""
    start = time.perf_counter()
    _, opts = parse_retrieval_dataset(trial.dataset)
    data = retrieval_data(trial.dataset, trial.scenario, data_dir, dataset_loader)
    y = torch.from_numpy(data.y_train)
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    data_time = time.perf_counter() - start
    with deterministic(threads):
        torch.manual_seed(trial.seed)
        std = Standardizer.fit(data.x_train)
        model = build_model(trial.model, data.x_train[:1], opts["dim"])
        context = {
            "num_classes": data.num_classes,
            "in_features": opts["dim"],
            "embedding_dim": opts["dim"],
            "class_counts": torch.as_tensor(counts, dtype=torch.long),
            "num_samples": len(y),
            "num_epochs": trial.epochs,
        }
        objective = RetrievalObjective(trial.objective, dict(trial.params), context)
        opt = make_optimizer(trial, [*model.parameters(), *objective.parameters()])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=trial.epochs)
        image = is_image(data.x_train)
        x_pre = None if image else std(data.x_train)
        rng = np.random.default_rng(trial.seed)
        curves: dict[str, list[float | None]] = {"train_loss": []}
        diverged_at: int | None = None
        for epoch in range(trial.epochs):
            objective.set_epoch(epoch)
            model.train()
            objective.train()
            total, seen = 0.0, 0
            for rows, k in class_batches(data.y_train, trial.batch_size, rng):
                idx = torch.from_numpy(rows)
                xb = x_pre[idx] if x_pre is not None else std(data.x_train[rows])
                loss = objective(model(xb), y[idx], idx, k)
                if not take_step(opt, loss):
                    diverged_at = epoch
                    break
                total, seen = total + float(loss.detach()) * len(rows), seen + len(rows)
            sched.step()
            curves["train_loss"].append(total / seen if diverged_at is None else None)
            if diverged_at is not None:
                break
        emb = predict(model, std, data.x_query)
    reference = None
    if not image and data.x_query.size <= INPUT_METRICS_MAX:
        reference = _metrics(std(data.x_query).numpy(), data.y_query)
    return {
        "task": "retrieval",
        "metrics": _metrics(emb, data.y_query),
        "input_metrics": reference,
        "num_train": int(len(y)),
        "num_query": int(len(data.y_query)),
        "train_classes": int(data.num_classes),
        "query_classes": int(len(np.unique(data.y_query))),
        "train_class_counts": counts.tolist(),
        "noise_rate": 0.0,
        "diverged": diverged_at is not None,
        "diverged_epoch": diverged_at,
        "curves": curves,
        "data_time": data_time,
        "wall_time": time.perf_counter() - start,
        "versions": versions(),
    }
