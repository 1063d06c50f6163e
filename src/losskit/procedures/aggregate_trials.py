"""The experiments of the paper-48 demonstration (:mod:`losskit.procedures.aggregate_demo`):
learning from bag-mean responses with the bag-level loss (``rho = 0``), the instance-level
loss (``rho = 1``) and the interpolating loss with ``rho`` chosen by cross-validation over
bags (held-out size-weighted bag loss, :func:`~losskit.labels.aggregate_linear.
cross_validate_rho`).

- :func:`synthetic_trial`: the paper's linear model, ``x ~ N(0, I_d)``, ``y = x^T w + e`` with
  ``||w|| = 1`` and ``e ~ N(0, sigma^2)``; closed-form fits, exact test risk
  ``sigma^2 + ||w_hat - w||^2 + c_hat^2``, bias and variance over replicate training sets.
- :func:`diabetes_linear_trial` and :func:`diabetes_mlp_trial`: scikit-learn's diabetes data
  (442 patients, 10 features), a random test split, features standardised on the training
  split; linear fits in closed form, one-hidden-layer MLPs trained with the torch losses.

All errors are test mean squared errors divided by ``Var(y)`` (1 - R^2 up to the split).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from losskit.labels.aggregate import aggregate_interpolating_loss, within_bag_scatter
from losskit.labels.aggregate_linear import cross_validate_rho, fit_aggregate_linear
from losskit.labels.bags import bag_folds, bag_responses, random_bags, sorted_bags

RHOS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
ARMS = ("bag", "instance", "interpolating")


def load_diabetes_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled diabetes regression set, unscaled (``load_diabetes(scaled=
    False)``), read from its package files without importing scikit-learn (no download)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the diabetes data needs scikit-learn, which is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    files = [folder / "diabetes_data_raw.csv.gz", folder / "diabetes_target.csv.gz"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"the diabetes data files are missing: {', '.join(missing)}")
    return np.loadtxt(files[0]), np.loadtxt(files[1])


def _three_fits(x, ids, ybar, rhos, folds, rng):
    rho, _ = cross_validate_rho(x, ids, ybar, rhos, folds=folds, seed=rng)
    fits = {
        arm: fit_aggregate_linear(x, ids, ybar, rho=r)
        for arm, r in zip(ARMS, (0, 1, rho), strict=True)
    }
    return fits, rho


def synthetic_trial(
    seed: int, *, n: int, d: int, sigma: float, bag_sizes, replicates: int, rhos, folds: int
) -> dict:
    """Per bag size: mean risk / Var(y) of each arm over ``replicates`` training sets, their
    bias^2 and variance (same units, bias^2 corrected by ``- variance / replicates``), the
    risk of every fixed ``rho`` and the mean chosen ``rho``; ``w`` is drawn once per seed."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    var_y = 1.0 + sigma**2
    errors = {k: {arm: [] for arm in ARMS} for k in bag_sizes}
    curve = {k: np.zeros(len(rhos)) for k in bag_sizes}
    chosen = {k: [] for k in bag_sizes}
    for _ in range(replicates):
        x = rng.normal(size=(n, d))
        y = x @ w + sigma * rng.normal(size=n)
        for k in bag_sizes:
            ids = random_bags(n, k, seed=rng)
            ybar = bag_responses(y, ids)
            fits, rho = _three_fits(x, ids, ybar, rhos, folds, rng)
            chosen[k].append(rho)
            for arm, fit in fits.items():
                errors[k][arm].append(np.r_[fit.coef - w, fit.intercept])
            for j, r in enumerate(rhos):
                fit = fit_aggregate_linear(x, ids, ybar, rho=r)
                curve[k][j] += (sigma**2 + np.sum((fit.coef - w) ** 2) + fit.intercept**2) / var_y
    out = {}
    for k in bag_sizes:
        row = {"rho": float(np.mean(chosen[k])), "curve": (curve[k] / replicates).tolist()}
        for arm in ARMS:
            e = np.array(errors[k][arm])
            var = float(np.sum((e - e.mean(0)) ** 2) / (replicates - 1))
            row[arm] = float((sigma**2 + np.mean(np.sum(e**2, axis=1))) / var_y)
            row[f"{arm}_bias2"] = (float(np.sum(e.mean(0) ** 2)) - var / replicates) / var_y
            row[f"{arm}_var"] = var / var_y
        out[k] = row
    return out


def _split(n: int, test_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return perm[test_size:], perm[:test_size]


def _standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    return (x - x[train].mean(0)) / x[train].std(0)


def diabetes_linear_trial(
    seed: int, x: np.ndarray, y: np.ndarray, *, bag_sizes, repeats: int, rhos, folds: int,
    test_size: int,
) -> dict:  # fmt: skip
    """Per bag size: test error of each arm with random bags and with bags sorted by the first
    principal component of the features (``sorted_*``), averaged over ``repeats`` baggings of
    one split; ``"individual"``: least squares on the individual responses."""
    rng = np.random.default_rng(seed)
    train, test = _split(len(y), test_size, rng)
    z = _standardise(x, train)
    var_y = float(y.var())
    score = z[train] @ np.linalg.svd(z[train], full_matrices=False)[2][0]
    single = fit_aggregate_linear(z[train], np.arange(len(train)), y[train], rho=0.0)
    out: dict = {"individual": float(np.mean((single.predict(z[test]) - y[test]) ** 2) / var_y)}
    for k in bag_sizes:
        baggings = [("", random_bags(len(train), k, seed=rng)) for _ in range(repeats)]
        baggings.append(("sorted_", sorted_bags(score, k)))
        row: dict = {}
        for prefix, ids in baggings:
            ybar = bag_responses(y[train], ids)
            fits, rho = _three_fits(z[train], ids, ybar, rhos, folds, rng)
            row.setdefault(f"{prefix}rho", []).append(rho)
            for arm, fit in fits.items():
                mse = np.mean((fit.predict(z[test]) - y[test]) ** 2) / var_y
                row.setdefault(prefix + arm, []).append(float(mse))
        out[k] = {key: float(np.mean(v)) for key, v in row.items()}
    return out


class BatchedMLP(nn.Module):
    """``models`` independent one-hidden-layer ReLU MLPs evaluated together, ``[M, N]``."""

    def __init__(self, models: int, d: int, hidden: int) -> None:
        super().__init__()

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:
            return nn.Parameter((torch.rand(*shape) * 2 - 1) / fan_in**0.5)

        self.w1 = uniform(models, d, hidden, fan_in=d)
        self.b1 = uniform(models, 1, hidden, fan_in=d)
        self.w2 = uniform(models, hidden, 1, fan_in=hidden)
        self.b2 = uniform(models, 1, 1, fan_in=hidden)

    def forward(self, x: Tensor) -> Tensor:
        return (torch.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2)[..., 0]


class Job(NamedTuple):
    """One model of the batch: ``rho`` trained on the bags outside ``fold`` (-1: all bags);
    ``rows`` index the training split, ``bags`` are renumbered ids, ``responses`` theirs."""

    fold: int
    rho: float
    rows: np.ndarray
    bags: np.ndarray
    responses: np.ndarray


def _jobs(ids: np.ndarray, ybar: np.ndarray, rhos, folds: int, rng) -> tuple[list[Job], np.ndarray]:
    """Every ``rho`` on all bags and (with more than one ``rho``) on every fold's training
    bags; and the fold of each bag."""
    fold = bag_folds(len(ybar), min(folds, len(ybar)), seed=rng)
    out = []
    for f in [-1, *range(int(fold.max()) + 1)] if len(rhos) > 1 else [-1]:
        keep = fold != f
        rows = np.flatnonzero(keep[ids])
        renum = np.cumsum(keep) - 1
        out += [Job(f, r, rows, renum[ids[rows]], ybar[keep]) for r in rhos]
    return out, fold


class BatchObjective:
    """The sum over jobs of each model's interpolating loss (``"mean"`` over its own training
    instances) from the batch predictions ``[M, N]`` (``N`` = all instances; job rows index
    ``train``), computed in two calls on all models' bags at once."""

    def __init__(self, jobs: list[Job], train: np.ndarray, n: int) -> None:
        sizes = [len(job.responses) for job in jobs]
        offsets = np.cumsum([0, *sizes[:-1]])
        rows = [j * n + train[job.rows] for j, job in enumerate(jobs)]
        self.index = torch.as_tensor(np.concatenate(rows))
        bags = [o + job.bags for o, job in zip(offsets, jobs, strict=True)]
        self.bags = torch.as_tensor(np.concatenate(bags))
        self.responses = torch.as_tensor(np.concatenate([job.responses for job in jobs]))
        self.rho = torch.as_tensor(np.repeat([job.rho for job in jobs], sizes))
        self.weight = torch.as_tensor(np.repeat([1.0 / len(job.rows) for job in jobs], sizes))

    def __call__(self, predictions: Tensor) -> Tensor:
        dtype = predictions.dtype
        pred = predictions.reshape(-1)[self.index]
        ybar = self.responses.to(dtype)
        fit = aggregate_interpolating_loss(pred, self.bags, ybar, rho=0.0, reduction="none")
        scatter = within_bag_scatter(pred, self.bags, len(ybar))
        return (self.weight.to(dtype) * (fit + self.rho.to(dtype) * scatter)).sum()


def _mlp_bagging(
    z: Tensor, y: np.ndarray, train: np.ndarray, test: np.ndarray, k: int, rhos, folds: int,
    rng: np.random.Generator, *, hidden: int, steps: int, lr: float, weight_decay: float,
) -> dict:  # fmt: skip
    """One random bagging of the training split: every ``rho`` x fold model trained as one
    batch; test errors of both ends and of the ``rho`` with the lowest held-out bag loss."""
    ids = random_bags(len(train), k, seed=rng)
    ybar = bag_responses(y[train], ids)
    counts = np.bincount(ids)
    mu = float(counts @ ybar / len(train))  # = mean(y); scale: E|B|(ybar-mu)^2 = Var(y)
    scale = float(np.sqrt(counts @ (ybar - mu) ** 2 / len(train))) or 1.0
    jobs, fold = _jobs(ids, (ybar - mu) / scale, rhos, folds, rng)
    torch.manual_seed(int(rng.integers(2**31)))
    model = BatchedMLP(len(jobs), z.shape[1], hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    objective = BatchObjective(jobs, train, len(y))
    for _ in range(steps):
        loss = objective(model(z))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(z).numpy().astype(np.float64) * scale + mu
    mse = {(job.fold, job.rho): float(np.mean((pred[j, test] - y[test]) ** 2) / y.var())
           for j, job in enumerate(jobs)}  # fmt: skip
    cv = np.zeros(len(rhos))
    for j, job in enumerate(jobs):
        if job.fold >= 0:
            held = np.flatnonzero(fold == job.fold)
            fbar = np.array([pred[j, train[ids == b]].mean() for b in held])
            cv[list(rhos).index(job.rho)] += float(counts[held] @ (ybar[held] - fbar) ** 2)
    best = rhos[int(np.argmin(cv))]
    return {"bag": mse[(-1, rhos[0])], "instance": mse[(-1, rhos[-1])],
            "interpolating": mse[(-1, best)], "rho": best}  # fmt: skip


def diabetes_mlp_trial(
    seed: int, x: np.ndarray, y: np.ndarray, *, bag_sizes, repeats: int, rhos, folds: int,
    test_size: int, hidden: int, steps: int, lr: float, weight_decay: float,
) -> dict:  # fmt: skip
    """Per bag size: test error of MLPs trained with the bag-level (``rhos[0] = 0``),
    instance-level (``rhos[-1] = 1``) and cross-validated interpolating losses (AdamW, full
    batch), averaged over ``repeats`` baggings of one split; ``"individual"``: bags of size 1
    (the individual responses, where every ``rho`` gives the same objective)."""
    if rhos[0] != 0.0 or rhos[-1] != 1.0:
        raise ValueError(f"rhos must run from 0 to 1, got {rhos}")
    rng = np.random.default_rng(seed)
    train, test = _split(len(y), test_size, rng)
    z = torch.as_tensor(_standardise(x, train), dtype=torch.float32)
    kw = {"hidden": hidden, "steps": steps, "lr": lr, "weight_decay": weight_decay}
    single = _mlp_bagging(z, y, train, test, 1, (0.0, 1.0), 2, rng, **kw)
    out: dict = {"individual": single["bag"]}
    for k in bag_sizes:
        runs = [_mlp_bagging(z, y, train, test, k, rhos, folds, rng, **kw) for _ in range(repeats)]
        out[k] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    return out
