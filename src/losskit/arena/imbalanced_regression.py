"""The imbalanced-regression track of the retrieval suite: ConR (paper 53) on a long tail.

A trial is a plain :class:`~losskit.arena.trial.Trial` whose ``dataset`` is
``regression:housing`` and whose ``scenario`` is ``longtail:R``; ``run_trial`` sends it to
:func:`run_regression_trial`.

**Data** (:func:`make_housing`, a function of nothing but its seed, 0): a synthetic,
California-housing-style table (scikit-learn's ``fetch_california_housing`` downloads, so it
is not used), 40,000 districts with 8 features (median income, house age, rooms, bedrooms,
population, occupancy, latitude, longitude); districts cluster around two "cities" or spread
over the state, and the value grows with income and with closeness to a city, plus
interactions and noise. The target is that value mapped through its empirical CDF to
``[0, 5]`` (uniform over the pool), so every one of the 20 bins of width 0.25 holds 2,000
pool rows. ``longtail:R``: the training set keeps ``round(500 * R^(-b/19))`` rows of bin
``b`` (500 of the cheapest bin down to ``500 / R`` of the dearest: about 2,300 rows at
``R = 100``); the test set is balanced, 50 rows of every bin (1,000), disjoint from training
(seed 0 for both). Test bins are grouped by their training count as in the DIR benchmarks
(Yang et al. 2021): many-shot (more than 100), medium-shot (20 to 100), few-shot (under 20).

**Model**: an MLP like the arena's ``mlp``: 8 -> 256 -> 256 (ReLU) features and a linear
prediction head; inputs standardised with the training statistics; shuffled batches of the
trial's batch size, Adam (or SGD) with a cosine decay to 0 over the epochs. Every batch is
seen as **two views**, the standardised inputs plus independent Gaussian noise of standard
deviation :data:`VIEW_NOISE` (the augmentation ConR's positives come from), for every
objective alike.

**Objectives**: ``l1`` and ``mse`` (the regression loss averaged over both views); a
registered ``regression`` loss of the feature form ``loss(features, predictions, targets)``
(ConR) is a regulariser: ``base_loss + reg_weight * loss(features of both views,
predictions, targets)`` with ``base_loss`` in ``l1`` / ``mse`` (default ``l1``) and
``reg_weight`` (default 1; ConR's AgeDB setting is 4); a registered regression loss of the
form ``loss(predictions, targets)`` is trained directly (plus ``base_loss`` when given).

**Results** (final epoch, balanced test set, target units): ``mae``, ``mse``, ``gm`` (the
geometric mean of the absolute errors) and ``mae_many`` / ``mae_medium`` / ``mae_few``;
``task = "regression"``; curves ``train_loss`` and ``test_mae``.
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit.arena.models import MLP_HIDDEN, Standardizer
from losskit.arena.trial import Trial, deterministic, make_optimizer, take_step, versions

PREFIX = "regression"
DATASETS = ("housing",)
POOL = 40_000
BINS = 20
TOP = 5.0
HEAD_COUNT = 500  # training rows of the most populated bin
TEST_PER_BIN = 50
VIEW_NOISE = 0.1
BUILTIN = {"l1": F.l1_loss, "mse": F.mse_loss}
GROUP_EDGES = (20, 100)  # few < 20 <= medium <= 100 < many training rows per bin
METRIC_NAMES = ("mae", "mse", "gm", "mae_many", "mae_medium", "mae_few")


def is_regression_dataset(name: str) -> bool:
    return name.partition(":")[0].strip() == PREFIX


def canonical_regression_dataset(spec: str) -> str:
    head, _, rest = (t.strip() for t in spec.partition(":"))
    if head != PREFIX or rest not in DATASETS:
        raise ValueError(f"dataset spec must be one of "
                         f"{[f'{PREFIX}:{d}' for d in DATASETS]}, got {spec!r}")  # fmt: skip
    return f"{PREFIX}:{rest}"


def canonical_regression_scenario(spec: str) -> str:
    head, _, rest = (t.strip() for t in spec.partition(":"))
    try:
        ratio = float(rest)
    except ValueError:
        ratio = math.nan
    if head != "longtail" or not 1.0 <= ratio <= HEAD_COUNT:
        raise ValueError(f"scenario must be 'longtail:R' with R in [1, {HEAD_COUNT}] for a "
                         f"regression track, got {spec!r}")  # fmt: skip
    return f"longtail:{int(ratio) if ratio.is_integer() else ratio}"


def make_housing(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32 [40000, 8], y float64 [40000] in [0, 5])`` (module docstring)."""
    rng = np.random.default_rng(seed)
    n = POOL
    centres = np.array([[34.05, -118.25], [37.77, -122.42]])
    where = rng.choice(3, size=n, p=[0.4, 0.35, 0.25])  # city 0, city 1, rural
    loc = np.column_stack([rng.uniform(32.5, 42.0, n), rng.uniform(-124.3, -114.3, n)])
    city = where < 2
    loc[city] = centres[where[city]] + 0.3 * rng.standard_normal((int(city.sum()), 2))
    dist = np.sqrt(((loc[:, None, :] - centres[None]) ** 2).sum(-1)).min(axis=1)
    income = rng.lognormal(1.3 - 0.12 * np.minimum(dist, 4.0), 0.45)
    age = rng.integers(1, 53, n).astype(float)
    rooms = rng.lognormal(np.log(4.5) + 0.04 * income, 0.25)
    bedrooms = rooms * np.clip(0.2 + 0.03 * rng.standard_normal(n), 0.1, None)
    population = rng.lognormal(np.log(1200.0) - 0.2 * np.minimum(dist, 4.0), 0.7)
    occupancy = rng.lognormal(np.log(2.9), 0.3, n)
    value = (0.45 * income + 1.5 * np.exp(-dist / 0.6) + 0.015 * age * np.exp(-dist)
             + 0.3 * np.log(rooms) - 0.25 * np.log(occupancy) + 0.2 * np.sin(2 * loc[:, 0])
             + 0.1 * income * np.exp(-dist) + 0.2 * rng.standard_normal(n))  # fmt: skip
    y = TOP * (np.argsort(np.argsort(value)) + 0.5) / n
    x = np.column_stack([income, age, rooms, bedrooms, population, occupancy, loc])
    return x.astype(np.float32), y


def longtail_split(y: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train rows, test rows, training count per bin)`` for ``longtail:ratio``."""
    rng = np.random.default_rng(0)
    bins = np.minimum((y / (TOP / BINS)).astype(int), BINS - 1)
    counts = np.round(HEAD_COUNT * ratio ** (-np.arange(BINS) / (BINS - 1))).astype(int)
    train, test = [], []
    for b in range(BINS):
        rows = rng.permutation(np.flatnonzero(bins == b))
        test.append(rows[:TEST_PER_BIN])
        train.append(rows[TEST_PER_BIN : TEST_PER_BIN + counts[b]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test)), counts


def _form(name: str) -> str:
    import losskit

    if name in BUILTIN:
        return "builtin"
    entry = losskit.get(name)
    if entry.kind != "loss" or entry.family != "regression":
        raise ValueError(f"objective {name!r} is a {entry.family!r} {entry.kind}; a regression "
                         f"track takes {sorted(BUILTIN)} or a 'regression' loss")  # fmt: skip
    fn = entry.function if entry.function is not None else entry.module.forward
    names = [p for p in inspect.signature(fn).parameters if p != "self"]
    return "features" if names and names[0] == "features" else "predictions"


def check_regression_objective(name: str, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``name`` with ``params`` can train the regression track."""
    form = _form(name)
    base = params.get("base_loss", "l1" if form == "features" else None)
    if base is not None and base not in BUILTIN:
        raise ValueError(f"base_loss must be one of {sorted(BUILTIN)}, got {base!r}")
    if form == "builtin" and params:
        raise ValueError(f"objective {name!r} takes no parameters, got {sorted(params)}")
    w = params.get("reg_weight", 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
        raise ValueError(f"reg_weight must be a number >= 0, got {w!r}")


class RegressionObjective(nn.Module):
    """``base_loss(pred, y) + reg_weight * loss(...)``, or a built-in loss alone."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__()
        import losskit

        check_regression_objective(name, params)
        params = dict(params)
        self.form = _form(name)
        base = params.pop("base_loss", "l1" if self.form == "features" else None)
        self.base = BUILTIN[name] if self.form == "builtin" else BUILTIN.get(base)
        self.reg_weight = float(params.pop("reg_weight", 1.0))
        self.loss = None if self.form == "builtin" else losskit.get(name).build(**params)

    def forward(self, features: Tensor, pred: Tensor, target: Tensor) -> Tensor:
        out = pred.new_zeros(()) if self.base is None else self.base(pred, target)
        if self.form == "features":
            out = out + self.reg_weight * self.loss(features, pred, target)
        elif self.form == "predictions":
            out = out + self.reg_weight * self.loss(pred, target)
        return out


class Regressor(nn.Module):
    """8 -> 256 -> 256 ReLU features and a linear head; ``forward`` gives both."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_features, MLP_HIDDEN), nn.ReLU(),
                                     nn.Linear(MLP_HIDDEN, MLP_HIDDEN), nn.ReLU())  # fmt: skip
        self.head = nn.Linear(MLP_HIDDEN, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return z, self.head(z).squeeze(1)


def regression_metrics(pred: np.ndarray, y: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """MAE, MSE, GM overall and the MAE of the many / medium / few-shot bins."""
    err = np.abs(pred - y)
    if not np.isfinite(err).all():
        return {m: math.nan for m in METRIC_NAMES}
    shots = counts[np.minimum((y / (TOP / BINS)).astype(int), BINS - 1)]
    groups = {"many": shots > GROUP_EDGES[1], "few": shots < GROUP_EDGES[0]}
    groups["medium"] = ~groups["many"] & ~groups["few"]
    out = {"mae": float(err.mean()), "mse": float((err**2).mean()),
           "gm": float(np.exp(np.log(np.maximum(err, 1e-12)).mean()))}  # fmt: skip
    for g, mask in groups.items():
        out[f"mae_{g}"] = float(err[mask].mean()) if mask.any() else math.nan
    return out


def run_regression_trial(trial: Trial, *, threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one regression trial; the JSON-ready result (module docstring)."""
    start = time.perf_counter()
    canonical_regression_dataset(trial.dataset)
    ratio = float(canonical_regression_scenario(trial.scenario).split(":")[1])
    if trial.model != "mlp":
        raise ValueError(f"the regression track trains model 'mlp', got {trial.model!r}")
    x, y_all = make_housing()
    train, test, counts = longtail_split(y_all, ratio)
    data_time = time.perf_counter() - start
    with deterministic(threads):
        torch.manual_seed(trial.seed)
        std = Standardizer.fit(x[train])
        x_tr, x_te = std(x[train]), std(x[test])
        y_tr = torch.from_numpy(y_all[train]).float()
        model = Regressor(x.shape[1])
        objective = RegressionObjective(trial.objective, dict(trial.params))
        opt = make_optimizer(trial, [*model.parameters(), *objective.parameters()])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=trial.epochs)
        gen = torch.Generator().manual_seed(trial.seed)
        curves: dict[str, list[float | None]] = {"train_loss": [], "test_mae": []}
        diverged_at: int | None = None
        for epoch in range(trial.epochs):
            model.train()
            total = 0.0
            for idx in torch.randperm(len(y_tr), generator=gen).split(trial.batch_size):
                xb = x_tr[idx]
                noise = torch.randn((2, *xb.shape), generator=gen) * VIEW_NOISE
                z, pred = model(torch.cat([xb + noise[0], xb + noise[1]]))
                loss = objective(z, pred, y_tr[idx].repeat(2))
                if not take_step(opt, loss):
                    diverged_at = epoch
                    break
                total += float(loss.detach()) * len(idx)
            sched.step()
            model.eval()
            with torch.no_grad():
                pred_te = model(x_te)[1].double().numpy()
            curves["train_loss"].append(total / len(y_tr) if diverged_at is None else None)
            curves["test_mae"].append(float(np.abs(pred_te - y_all[test]).mean()))
            if diverged_at is not None:
                break
    return {
        "task": "regression",
        "metrics": regression_metrics(pred_te, y_all[test], counts),
        "num_train": int(len(train)),
        "num_test": int(len(test)),
        "bin_counts": counts.tolist(),
        "noise_rate": 0.0,
        "diverged": diverged_at is not None,
        "diverged_epoch": diverged_at,
        "curves": curves,
        "data_time": data_time,
        "wall_time": time.perf_counter() - start,
        "versions": versions(),
    }
