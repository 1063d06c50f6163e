"""Demonstration of confident learning (paper 34): finding label errors on real data.

:func:`run` (the arena's demo interface) has three parts:

1. **CIFAR-10 test set** with the paper's released cross-validated probabilities and its
   Mechanical Turk review (275 flagged images, 5 workers each; an error is *validated* when
   fewer than 3 workers chose the given label, 54 images): per filter of
   :func:`~losskit.labels.label_issues.find_label_issues`, the validated errors found, recall
   and precision; and the paper's own rule (the lowest normalized margins, as many as the
   calibrated joint's off-diagonal estimate). Deterministic: no seed enters.
2. **CIFAR-10N** (:mod:`~losskit.procedures.label_errors_cifar10n`): the human noisy labels
   (aggre 9 %, random1 17 %, worst 40 %) found from cross-validated probabilities of a cheap
   model, unsupervised k-means patch features with a softmax head, over seeds.
3. **digits** (the reference map's sanity check): 5 % of labels flipped to another class,
   5-fold cross-validated softmax head on the pixels, precision and recall of the flips.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from losskit.arena.datasets import resolve_data_dir
from losskit.arena.demos import DemoResult
from losskit.labels.confident_learning import estimate_noise_matrices
from losskit.labels.cross_validation import cross_val_pred_probs_features
from losskit.labels.label_issues import FILTERS, find_label_issues
from losskit.labels.quality_scores import METHODS, label_quality_scores
from losskit.procedures import label_errors_cifar10n as c10n
from losskit.procedures.label_errors_report import markdown, plot, verdicts

NAME = "label_errors"
TITLE = "Label errors: confident learning on CIFAR-10, CIFAR-10N and digits"
FILES = (
    "cifar10/cifar10_test_set_pyx.npy",
    "cifar10/cifar10_test_set_original_labels.npy",
    "cifar10/cifar10_mturk.json",
    "cifar10/cifar10_jpeg.bin",
    "cifar10/cifar10_jpeg_offsets.npy",
    "cifar10/cifar10n_labels.npz",
)
PAPER_RULE = "paper's rule (lowest margin)"


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of ranking by increasing score (most likely error first) for ``positive``."""
    hits = positive[np.argsort(scores, kind="stable")]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks)) if len(ranks) else float("nan")


def cifar10_test(root: Path) -> dict:
    """Part 1: the released probabilities against the human review (module docstring)."""
    folder = root / "cifar10"
    p = np.load(folder / "cifar10_test_set_pyx.npy", allow_pickle=False)
    y = np.load(folder / "cifar10_test_set_original_labels.npy", allow_pickle=False).astype(
        np.int64
    )
    review = json.loads((folder / "cifar10_mturk.json").read_text())
    ids = np.array([r["id"] for r in review])
    votes = {k: np.array([r["mturk"][k] for r in review]) for k in ("given", "guessed", "neither")}
    reviewed = np.zeros(len(y), dtype=bool)
    reviewed[ids] = True
    confirmed = np.zeros(len(y), dtype=bool)
    confirmed[ids[votes["given"] < 3]] = True
    masks = {f: find_label_issues(y, p, filter_by=f) for f in FILTERS}
    same_low_memory = all(
        np.array_equal(m, find_label_issues(y, p, filter_by=f, low_memory=True, batch_size=1000))
        for f, m in masks.items()
    )
    noise = estimate_noise_matrices(y, p)
    margin = label_quality_scores(y, p, method="normalized_margin")
    paper = np.zeros(len(y), dtype=bool)
    paper[np.argsort(margin, kind="stable")[: noise.num_issues]] = True
    masks[PAPER_RULE] = paper
    rows = {}
    for name, m in masks.items():
        found = int((m & confirmed).sum())
        rows[name] = {
            "flagged": int(m.sum()),
            "reviewed": int((m & reviewed).sum()),
            "found": found,
            "recall": found / int(confirmed.sum()),
            "precision_reviewed": found / max(int((m & reviewed).sum()), 1),
            "precision": found / max(int(m.sum()), 1),
        }
    ap = {
        method: _average_precision(
            label_quality_scores(y, p, method=method)[reviewed], confirmed[reviewed]
        )
        for method in METHODS
    }
    return {
        "n": len(y),
        "accuracy": float((p.argmax(1) == y).mean()),
        "reviewed": int(reviewed.sum()),
        "confirmed": int(confirmed.sum()),
        "majority": {k: int((v >= 3).sum()) for k, v in votes.items()},
        "noise_rate": noise.noise_rate,
        "num_issues": noise.num_issues,
        "rows": rows,
        "average_precision": ap,
        "low_memory_identical": same_low_memory,
    }


def digits_check(seeds: int, quick: bool, bar) -> dict:
    """Part 3: 5 % flipped digits labels found from a cross-validated softmax head (module
    docstring); ``folds`` and, per key, lists over seeds."""
    from losskit.arena.datasets import load_dataset

    ds = load_dataset("digits")
    x = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    y = np.concatenate([ds.y_train, ds.y_test])
    folds = 3 if quick else 5
    out: dict[str, Any] = {"folds": folds}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(y), 600, replace=False)) if quick else np.arange(len(y))
        xs, ys = x[rows], y[rows]
        flip = rng.random(len(ys)) < 0.05
        noisy = ys.copy()
        noisy[flip] = (ys[flip] + rng.integers(1, 10, int(flip.sum()))) % 10
        probs = cross_val_pred_probs_features(
            xs, noisy, num_classes=10, n_folds=folds, seed=seed, l2=1e-3,
            max_iter=30 if quick else 100,
        )  # fmt: skip
        out.setdefault("acc_clean", []).append(float((probs.argmax(1) == ys).mean()))
        out.setdefault("noise_true", []).append(float(flip.mean()))
        out.setdefault("noise_est", []).append(estimate_noise_matrices(noisy, probs).noise_rate)
        for f in FILTERS:
            scores = c10n.detection_scores(find_label_issues(noisy, probs, filter_by=f), flip)
            for k, v in scores.items():
                out.setdefault(f"{f}/{k}", []).append(v)
        bar.update(1)
    return out


def _check_data(root: Path) -> None:
    missing = [str(root / f) for f in FILES if not (root / f).is_file()]
    if missing:
        raise ValueError(
            f"label_errors demo needs {', '.join(missing)}; point data_dir or $LOSSKIT_DATA at "
            "the shared data folder"
        )


def run(out_dir: Path, *, seeds: int, quick: bool, data_dir: str | None) -> DemoResult:
    """Run the three parts (module docstring) and return their tables, plot and verdicts."""
    from tqdm.auto import tqdm

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    root = resolve_data_dir(data_dir)
    _check_data(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setting = c10n.QUICK if quick else c10n.FULL
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        part1 = cifar10_test(root)
        total = seeds * (len(c10n.LABEL_SETS) + 1)
        with tqdm(total=total, desc="label_errors", unit="cv", leave=False) as bar:
            part2 = c10n.run_cifar10n(root, setting, seeds, bar)
            part3 = digits_check(seeds, quick, bar)
    finally:
        torch.set_num_threads(threads)
    data = {
        "cifar10_test": part1,
        "cifar10n": part2,
        "digits": part3,
        "setting": {"seeds": seeds, "quick": quick, **asdict(setting)},
        "seconds": time.perf_counter() - start,
    }
    plot(out_dir / f"{NAME}_plot.png", data)
    return DemoResult(
        name=NAME,
        title=TITLE,
        papers=(34,),
        markdown=markdown(data, f"{NAME}_plot.png"),
        verdicts=verdicts(data),
        data=data,
    )
