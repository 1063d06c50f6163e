"""The synthetic extreme-classification track: dual encoders over 10^4-10^5 labels.

A trial of this track is a plain :class:`~losskit.arena.trial.Trial` whose ``dataset`` is a
``synthetic_xc:...`` spec and whose ``scenario`` is a batching spec (grammar in
:mod:`losskit.arena.extreme_specs`); ``run_trial`` sends it to :func:`run_extreme_trial`, so
the store, the runner and resume work as for the other tracks.

**Data** (:func:`make_extreme_data`, a function of the dataset spec alone, the same for every
objective and seed): ``L`` true label embeddings, random unit vectors in ``R^D``; label
popularity Zipf-like, ``p_l ∝ (l + 1)^-zipf`` (``zipf = 0`` is uniform); each query draws
``|P|`` uniform in 1..10 distinct positives (successive sampling by popularity) and
``x = normalize(sum_{l in P} e_l + sigma sqrt(|P|) g / sqrt(D))`` (``g`` standard normal: the
noise is ``sigma`` times the signal's typical norm), then a fixed random distortion, a random
rotation with per-axis scales log-uniform in [1/4, 4], so that cosine similarity on the raw
input is poor and the query tower has to learn.

**Model**: a query tower (``model="linear"``: ``D x D`` without bias; ``"mlp"``: one hidden
layer of 256 ReLU units) and a trainable label-embedding table ``[L, D]`` initialised from
``N(0, 1)`` (not at the truth); scores ``cos(f(x), v_l) / tau`` with ``tau = 0.05`` (DEXML,
paper 3).

**Batching**: ``random`` (a fresh permutation per epoch) or ``ngame``
(:class:`losskit.mining.ngame.NGAMEBatchSampler`: batches made of clusters of training
queries embedded by the current tower, re-clustered on a compressed
:class:`~losskit.mining.ngame.NGAMESchedule`, paper 56); negatives ``all`` (scores against
every label, target ``[B, L]``) or ``inbatch`` (scores against the shortlist formed by the
union of the batch's positives, target ``[B, S]``). The objective is any registered
multi-label loss taking ``(scores, target)``, built through
:class:`~losskit.arena.trial.TrialObjective` (context: ``class_counts`` from the training
positives, ``num_samples``, ``num_classes = L``, ``num_epochs``). The library's value checks
are off during training (:func:`losskit.set_checks`; scores and targets are built here and
valid by construction, and the checks cost about a fifth of an all-label step).

**Results**: P@1, P@5 and nDCG@5 on the held-out queries against all ``L`` labels
(:func:`evaluate`), per-epoch curves (``train_loss``, ``test_p@1``), and ``epoch_time``
(beside the metrics and curves, which stay deterministic), the mean training time per epoch
in seconds (batches, and for NGAME the re-clustering; evaluation excluded; per epoch in
``epoch_times``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import checks_enabled, set_checks
from losskit.arena.extreme_specs import (
    MAX_POSITIVES,
    canonical_batching,
    canonical_extreme_dataset,
    is_extreme_dataset,
    parse_batching,
    parse_extreme_dataset,
)
from losskit.arena.trial import (
    Trial,
    TrialObjective,
    deterministic,
    make_optimizer,
    take_step,
    versions,
)

__all__ = [
    "DualEncoder",
    "ExtremeData",
    "canonical_batching",
    "canonical_extreme_dataset",
    "evaluate",
    "is_extreme_dataset",
    "make_extreme_data",
    "parse_batching",
    "parse_extreme_dataset",
    "run_extreme_trial",
]

TAU = 0.05  # DEXML's temperature (paper 3)
HIDDEN = 256
EVAL_CHUNK = 256
TOWERS = ("linear", "mlp")


@dataclass
class ExtremeData:
    """``x_*`` float32 ``[n, D]`` (distorted inputs); ``pos_*`` int64 ``[n, 10]`` positive
    label ids padded with -1; ``label_emb`` the true unit embeddings ``[L, D]``."""

    x_train: Tensor
    pos_train: Tensor
    x_test: Tensor
    pos_test: Tensor
    label_emb: Tensor

    @property
    def num_labels(self) -> int:
        return self.label_emb.shape[0]


def _positives(rng: np.random.Generator, n: int, num_labels: int, zipf: float) -> np.ndarray:
    """``[n, 10]`` distinct positives per row (count uniform in 1..10), padded with -1."""
    p = np.arange(1, num_labels + 1, dtype=np.float64) ** -zipf
    p /= p.sum()
    sizes = rng.integers(1, MAX_POSITIVES + 1, size=n)
    draws = rng.choice(num_labels, size=(n, 4 * MAX_POSITIVES), p=p)
    out = np.full((n, MAX_POSITIVES), -1, dtype=np.int64)
    for i in range(n):
        row = list(dict.fromkeys(draws[i].tolist()))  # first distinct draws, in order
        while len(row) < sizes[i]:  # rare: too many repeats of the head labels
            row = list(dict.fromkeys([*row, *rng.choice(num_labels, size=8, p=p).tolist()]))
        out[i, : sizes[i]] = row[: sizes[i]]
    return out


def make_extreme_data(spec: str) -> ExtremeData:
    """The synthetic data of dataset ``spec`` (a function of the spec alone)."""
    f = parse_extreme_dataset(spec)
    num_labels, d, t = f["labels"], f["dim"], f["train"]
    n = t + f["test"]
    rng = np.random.default_rng([f["seed"], num_labels, d])
    emb = rng.standard_normal((num_labels, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pos = _positives(rng, n, num_labels, f["zipf"])
    signal = np.zeros((n, d))
    for j in range(MAX_POSITIVES):  # sum of the positives' embeddings
        valid = pos[:, j] >= 0
        signal[valid] += emb[pos[valid, j]]
    sizes = (pos >= 0).sum(axis=1, keepdims=True)
    x = signal + f["sigma"] * np.sqrt(sizes / d) * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.exp(rng.uniform(np.log(0.25), np.log(4.0), size=d))
    x = ((x @ rotation) * scales).astype(np.float32)
    return ExtremeData(
        torch.from_numpy(x[:t].copy()),
        torch.from_numpy(pos[:t].copy()),
        torch.from_numpy(x[t:].copy()),
        torch.from_numpy(pos[t:].copy()),
        torch.from_numpy(emb.astype(np.float32)),
    )


class DualEncoder(nn.Module):
    """Query tower and free label embeddings; ``scores(x, labels)`` = cosine / ``tau``."""

    def __init__(self, tower: str, dim: int, num_labels: int, tau: float) -> None:
        super().__init__()
        if tower == "linear":
            self.tower: nn.Module = nn.Linear(dim, dim, bias=False)
        else:
            self.tower = nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, dim))
        self.labels = nn.Parameter(torch.randn(num_labels, dim))
        self.tau = tau

    def queries(self, x: Tensor) -> Tensor:
        return F.normalize(self.tower(x), dim=-1)

    def scores(self, q: Tensor, labels: Tensor | None = None) -> Tensor:
        """``q`` normalised queries ``[B, D]`` against every label or the ``labels`` ids."""
        v = self.labels if labels is None else self.labels[labels]
        return q @ F.normalize(v, dim=-1).T / self.tau


def batch_target(pos: Tensor, num_labels: int) -> Tensor:
    """Dense 0/1 float target ``[B, L]`` from padded positives ``[B, 10]``."""
    target = torch.zeros(pos.shape[0], num_labels)
    rows, cols = torch.nonzero(pos >= 0, as_tuple=True)
    target[rows, pos[rows, cols]] = 1.0
    return target


def shortlist(pos: Tensor) -> tuple[Tensor, Tensor]:
    """The union ``S`` of the batch's positives (sorted ids) and the target ``[B, |S|]``."""
    valid = pos >= 0
    labels, inverse = torch.unique(pos[valid], return_inverse=True)
    target = torch.zeros(pos.shape[0], labels.numel())
    rows = torch.nonzero(valid, as_tuple=True)[0]
    target[rows, inverse] = 1.0
    return labels, target


def evaluate(model: DualEncoder, x: Tensor, pos: Tensor, k: int = 5) -> dict[str, float]:
    """P@1, P@k and nDCG@k of the held-out queries against all labels.

    Exact, without an ``[N, L]`` matrix: per query, the columns kept are its top ``k``
    labels and its positives (``k + 10`` columns, duplicates and padding given a score below
    the row's minimum), which fixes both the top ``k`` and ``|y|``; the compact matrices go
    to :mod:`losskit.diagnostics.multilabel`."""
    from losskit.diagnostics.multilabel import ndcg_at_k, precision_at_k

    model.eval()
    parts_s, parts_t = [], []
    with torch.no_grad():
        for start in range(0, len(x), EVAL_CHUNK):
            s = model.scores(model.queries(x[start : start + EVAL_CHUNK]))
            p = pos[start : start + EVAL_CHUNK]
            top = s.topk(k, dim=1).indices
            in_top = (p[:, :, None] == top[:, None, :]).any(dim=2)
            extra = (p >= 0) & ~in_top  # positives outside the top k
            cols = torch.cat([top, p.clamp_min(0)], dim=1)
            low = s.min(dim=1, keepdim=True).values - 1.0
            vals = s.gather(1, cols)
            vals[:, k:] = torch.where(extra, vals[:, k:], low)
            hit = (top[:, :, None] == p[:, None, :]).any(dim=2)
            parts_s.append(vals)
            parts_t.append(torch.cat([hit, extra], dim=1).float())
    s_all, t_all = torch.cat(parts_s).numpy(), torch.cat(parts_t).numpy()
    return {
        "p@1": precision_at_k(s_all, t_all, 1),
        f"p@{k}": precision_at_k(s_all, t_all, k),
        f"ndcg@{k}": ndcg_at_k(s_all, t_all, k),
    }


def _schedule(ngame: dict[str, int]) -> Any:
    """NGAME's curriculum compressed to a short run: ``warmup`` epochs of random batches,
    then clusters of ``cluster // 4`` doubling on each of the next two epochs up to
    ``cluster``, re-clustered every ``refresh`` epochs."""
    from losskit.mining.ngame import NGAMESchedule

    w = ngame["warmup"]
    return NGAMESchedule(
        refresh_interval=ngame["refresh"],
        cluster_size_start=max(1, ngame["cluster"] // 4),
        doubling_epochs=(w + 1, w + 2),
        max_cluster_size=ngame["cluster"],
        warmup=w,
    )


def run_extreme_trial(trial: Trial, *, threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one extreme-track trial (``trial.dataset`` a ``synthetic_xc``
    spec, ``trial.scenario`` a batching spec, ``trial.model`` the query tower); returns the
    JSON-ready result dict (see the module docstring). A non-finite loss stops training
    (``"diverged": true``)."""
    start = time.perf_counter()
    if trial.model not in TOWERS:
        raise ValueError(f"model must be one of {TOWERS} for the query tower, got {trial.model!r}")
    batching, negatives, ngame = parse_batching(trial.scenario)
    data = make_extreme_data(trial.dataset)
    data_time = time.perf_counter() - start
    num_labels, (n, dim) = data.num_labels, data.x_train.shape
    checks = checks_enabled()
    with deterministic(threads):
        set_checks(False)
        try:
            torch.manual_seed(trial.seed)
            model = DualEncoder(trial.model, dim, num_labels, TAU)
            counts = batch_target(data.pos_train, num_labels).sum(dim=0).long()
            context = {"class_counts": counts, "num_samples": n, "num_classes": num_labels,
                       "num_epochs": trial.epochs}  # fmt: skip
            objective = TrialObjective(trial.objective, dict(trial.params), context)
            opt = make_optimizer(trial, [*model.parameters(), *objective.parameters()])
            sampler = schedule = None
            if batching == "ngame":
                from losskit.mining.ngame import NGAMEBatchSampler

                schedule = _schedule(ngame)
                sampler = NGAMEBatchSampler(n, trial.batch_size, seed=trial.seed)
            gen = torch.Generator().manual_seed(trial.seed)
            curves: dict[str, list] = {"train_loss": [], "test_p@1": []}
            times: list[float] = []
            diverged_at: int | None = None
            for epoch in range(trial.epochs):
                tick = time.perf_counter()
                objective.set_epoch(epoch)
                if sampler is None:
                    batches = list(torch.randperm(n, generator=gen).split(trial.batch_size))
                else:
                    schedule.on_epoch_start(epoch, sampler, lambda: _embed(model, data.x_train))
                    batches = [torch.as_tensor(b, dtype=torch.long) for b in sampler]
                total = _epoch(model, objective, opt, data, batches, negatives == "all")
                times.append(time.perf_counter() - tick)
                curves["train_loss"].append(None if total is None else total / n)
                final = evaluate(model, data.x_test, data.pos_test)
                curves["test_p@1"].append(final["p@1"])
                if total is None:
                    diverged_at = epoch
                    break
        finally:
            set_checks(checks)
    return {
        "task": "extreme",
        "metrics": final,
        "epoch_time": float(np.mean(times)),
        "epoch_times": times,
        "num_train": n,
        "num_labels": num_labels,
        "train_labels_seen": int((counts > 0).sum()),
        "diverged": diverged_at is not None,
        "diverged_epoch": diverged_at,
        "curves": curves,
        "data_time": data_time,
        "wall_time": time.perf_counter() - start,
        "versions": versions(),
    }


def _epoch(model: DualEncoder, objective: TrialObjective, opt: torch.optim.Optimizer,
           data: ExtremeData, batches: list[Tensor], all_labels: bool) -> float | None:  # fmt: skip
    """One pass over ``batches``; the summed loss, or ``None`` at a non-finite loss."""
    model.train()
    total = 0.0
    for idx in batches:
        q, pos = model.queries(data.x_train[idx]), data.pos_train[idx]
        if all_labels:
            scores, target = model.scores(q), batch_target(pos, data.num_labels)
        else:
            labels, target = shortlist(pos)
            scores = model.scores(q, labels)
        loss = objective(scores, target, idx)
        if not take_step(opt, loss):
            return None
        total += float(loss.detach()) * len(idx)
    return total


def _embed(model: DualEncoder, x: Tensor) -> Tensor:
    """The current normalised query embeddings of ``x`` (no gradient), for clustering."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.queries(chunk) for chunk in x.split(4096)])
