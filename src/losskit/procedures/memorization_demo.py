"""Demonstration of memorization and influence (paper 39) on the long tail of TREC-50.

The data: TREC-50 questions (5,452 train / 500 test, 50 fine classes with 962 down to 4
training questions) as frozen all-MiniLM-L6-v2 embeddings. The model: kernel ridge
regression on one-hot labels with ``k(x, x') = exp((x.x' - 1) / tau)`` (``tau = 1``, unit
vectors) and ridge ``lam = 0.01``. It fits its training set (training accuracy 100 %, like the
networks of the paper) and tests about as well as a logistic-regression probe, and one fit
on a 70 % subset is one Cholesky factorisation (about a second on one core), so that many
models fit the time budget. ``tau`` and ``lam`` were picked on one 70 % subset by the accuracy
on the 30 % left out (within a point for ``tau`` in [0.5, 2] and ``lam`` in [1e-3, 1e-1]).

Per seed (:func:`~losskit.diagnostics.memorization.subsample_models` with fraction 0.7):

1. clean labels, ``models`` subset models: memorization of every training question and
   influence on every test question; memorization by class frequency;
2. 2 % of the training labels flipped to a uniformly drawn other class, ``noisy_models``
   models: memorization of the flipped questions against the others;
3. removal: the top ``q`` of the training set by this seed's memorization score, or as many
   random questions, is removed and the model refitted on the rest; test accuracy on all
   questions, on the tail classes (fewer than 50 training questions) and on the others.

Once (deterministic, no seed): the ridge ``lam`` swept from fitting the training set to not
fitting it. Pooled over the seeds' clean models: the score distribution, the most memorized
questions and the highest-influence (training, test) pairs with their text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.linalg import cho_factor, cho_solve  # loaded before the thread limit is set

from losskit.arena.demos import DemoResult
from losskit.diagnostics.memorization import (
    influence_estimate,
    memorization_estimate,
    subsample_models,
)

NAME = "memorization"
TITLE = "Memorization and influence on a long tail (subsampling estimator)"
TAU, LAM, FRACTION = 1.0, 0.01, 0.7
TAIL = 50  # tail classes: fewer training questions than this
NOISE = 0.02  # share of training labels flipped in the mislabeled runs
BUCKETS = ((1, 20), (20, 50), (50, 150), (150, 10**6))  # class sizes (training questions)


@dataclass(frozen=True)
class Sizes:
    """``n_train``: training questions used (None: all); models per seed, clean and with
    flipped labels; removed fractions; ridge values of the sweep (the first is ``LAM``)."""

    n_train: int | None
    models: int
    noisy_models: int
    removal: tuple[float, ...]
    lambdas: tuple[float, ...]


FULL = Sizes(None, 40, 16, (0.05, 0.1, 0.2, 0.3), (LAM, 0.1, 1.0, 3.0, 10.0))
QUICK = Sizes(1200, 8, 6, (0.1, 0.3), (LAM, 10.0))


@dataclass(frozen=True)
class KernelRidge:
    """Kernel ridge regression on one-hot labels over a precomputed kernel ``[rows, n_train]``
    between every row (training questions, then test questions) and the training questions.
    A fitted model is the predicted label of every row; the rows play the part of ``X``."""

    kernel: np.ndarray
    num_classes: int
    lam: float = LAM

    def fit(self, ids: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
        """Labels of all rows predicted from training rows ``ids`` (deterministic: the seed
        of :func:`subsample_models` is not needed)."""
        gram = self.kernel[np.ix_(ids, ids)]
        gram[np.diag_indices_from(gram)] += self.lam
        factor = cho_factor(gram, lower=True, overwrite_a=True, check_finite=False)
        onehot = np.eye(self.num_classes, dtype=gram.dtype)[y]
        alpha = np.zeros((self.kernel.shape[1], self.num_classes), dtype=gram.dtype)
        alpha[ids] = cho_solve(factor, onehot, check_finite=False)
        return (self.kernel @ alpha).argmax(axis=1)

    @staticmethod
    def predict(model: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return model[ids]


@dataclass
class Data:
    texts: list[str]
    texts_test: list[str]
    y: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    krr: KernelRidge

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=len(self.class_names))

    @property
    def tail_test(self) -> np.ndarray:
        return self.counts[self.y_test] < TAIL


def _load(data_dir: str | None, sizes: Sizes) -> Data:
    from losskit.arena.datasets import load_dataset, missing_files, resolve_data_dir
    from losskit.arena.text import read_trec

    missing = [str(p) for p in missing_files("trec50", data_dir)]
    if missing:
        raise ValueError(f"{NAME} needs missing data files: {', '.join(missing)}")
    ds = load_dataset("trec50", data_dir, progress=True)
    raw = read_trec(resolve_data_dir(data_dir))
    rows = np.arange(len(ds.y_train))
    if sizes.n_train is not None:
        rows = np.sort(np.random.default_rng(0).permutation(rows)[: sizes.n_train])
    x = np.concatenate([ds.x_train[rows], ds.x_test]).astype(np.float32)
    kernel = np.exp((x @ x[: len(rows)].T - 1.0) / TAU)
    return Data(
        [raw["train"][0][i] for i in rows],
        raw["test"][0],
        ds.y_train[rows],
        ds.y_test,
        ds.class_names,
        KernelRidge(kernel, ds.num_classes),
    )


def _runs(data: Data, y: np.ndarray, models: int, seed: int):
    n = len(y)
    ids = np.arange(n)
    test_ids = np.arange(n, n + len(data.y_test))
    return subsample_models(
        data.krr.fit,
        KernelRidge.predict,
        ids,
        y,
        test_ids,
        data.y_test,
        num_models=models,
        fraction=FRACTION,
        seed=seed,
    )


def _accuracy(pred: np.ndarray, data: Data) -> dict[str, float]:
    n = len(data.y)
    right = pred[n:] == data.y_test
    tail = data.tail_test
    return {
        "train": float(np.mean(pred[:n] == data.y)),
        "all": float(right.mean()),
        "tail": float(right[tail].mean()),
        "head": float(right[~tail].mean()),
    }


def _class_means(score: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    ok = ~np.isnan(score)
    total = np.bincount(y[ok], weights=score[ok], minlength=c)
    count = np.bincount(y[ok], minlength=c)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _clean_stats(runs, data: Data) -> dict:
    from scipy.stats import spearmanr

    est = memorization_estimate(runs.membership, runs.train_correct)
    s, size = est.score, data.counts[data.y]
    ok = ~np.isnan(s)
    classes = _class_means(s, data.y, len(data.class_names))
    has = ~np.isnan(classes)
    return {
        "score": s,
        "test_accuracy": float(runs.test_correct.mean()),
        "acc_in": float(np.nanmean(est.acc_in)),
        "acc_out": float(np.nanmean(est.acc_out)),
        "high_share": float(np.mean(s[ok] >= 0.5)),
        "nan_share": float(np.mean(~ok)),
        "buckets": [float(np.nanmean(s[(size >= lo) & (size < hi)])) for lo, hi in BUCKETS],
        "tail": float(np.nanmean(s[size < TAIL])),
        "head": float(np.nanmean(s[size >= TAIL])),
        "spearman": float(spearmanr(data.counts[has], classes[has]).statistic),
    }


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _noisy_stats(data: Data, models: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 3])
    n, c = len(data.y), len(data.class_names)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=int(round(NOISE * n)), replace=False)] = True
    y = data.y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, c, size=int(flipped.sum()))) % c
    runs = _runs(data, y, models, seed + 1000)
    s = memorization_estimate(runs.membership, runs.train_correct).score
    bad, good = s[flipped & ~np.isnan(s)], s[~flipped & ~np.isnan(s)]
    return {
        "flipped": float(bad.mean()),
        "clean": float(good.mean()),
        "auroc": _auroc(bad, good),
        "flipped_high": float(np.mean(bad >= 0.5)),
        "clean_high": float(np.mean(good >= 0.5)),
        "n_flipped": int(flipped.sum()),
        "flipped_scores": bad.tolist(),
    }


def _removal(data: Data, score: np.ndarray, fractions: tuple[float, ...], seed: int) -> dict:
    rng = np.random.default_rng([seed, 2])
    n = len(data.y)
    order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
    out: dict[str, list] = {"top": [], "random": []}
    for q in fractions:
        k = int(round(q * n))
        for arm, drop in (("top", order[:k]), ("random", rng.choice(n, k, replace=False))):
            keep = np.setdiff1d(np.arange(n), drop)
            out[arm].append(_accuracy(data.krr.fit(keep, data.y[keep]), data))
    return out


def _pooled(clean_runs: list, data: Data) -> dict:
    """Estimates from every clean model of every seed, the most memorized questions and
    the highest-influence pairs."""
    membership = np.concatenate([r.membership for r in clean_runs])
    train_pred = np.concatenate([r.train_pred for r in clean_runs])
    est = memorization_estimate(membership, np.concatenate([r.train_correct for r in clean_runs]))
    infl = influence_estimate(membership, np.concatenate([r.test_correct for r in clean_runs]))
    out_pred = [
        int(np.bincount(train_pred[~membership[:, i], i]).argmax()) if est.n_out[i] else -1
        for i in range(len(data.y))
    ]
    return {
        "models": len(membership),
        "score": est.score,
        "n_out_min": int(est.n_out.min()),
        "class_means": _class_means(est.score, data.y, len(data.class_names)),
        "out_pred": np.asarray(out_pred),
        "influence": infl.score,
    }


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Memorization and influence of kernel ridge regression on TREC-50; see the module
    docstring."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from losskit.procedures import memorization_report as report
    from losskit.procedures.memorization_plots import plot
    from losskit.procedures.memorization_verdicts import verdicts

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    start = time.perf_counter()
    sizes = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed = sizes.models + sizes.noisy_models + 2 * len(sizes.removal)
    with threadpool_limits(1):
        data = _load(data_dir, sizes)
        with tqdm(total=seeds * per_seed + len(sizes.lambdas), desc=NAME, unit="fit") as bar:
            sweep = []
            for lam in sizes.lambdas:
                krr = KernelRidge(data.krr.kernel, data.krr.num_classes, lam)
                sweep.append(_accuracy(krr.fit(np.arange(len(data.y)), data.y), data))
                bar.update()
            clean_runs, clean, noisy, removal = [], [], [], []
            for seed in range(seeds):
                clean_runs.append(_runs(data, data.y, sizes.models, seed))
                clean.append(_clean_stats(clean_runs[-1], data))
                bar.update(sizes.models)
                noisy.append(_noisy_stats(data, sizes.noisy_models, seed))
                bar.update(sizes.noisy_models)
                removal.append(_removal(data, clean[-1]["score"], sizes.removal, seed))
                bar.update(2 * len(sizes.removal))
        pooled = _pooled(clean_runs, data)
    results = report.Results(sizes, data, sweep, clean, noisy, removal, pooled, seeds, quick)
    plot_name = f"{NAME}_plot.png"
    plot(results, out_dir / plot_name)
    md = report.markdown(results, plot_name)
    found = verdicts(results)
    return DemoResult(
        NAME, TITLE, (39,), md, found, report.raw(results), time.perf_counter() - start
    )
