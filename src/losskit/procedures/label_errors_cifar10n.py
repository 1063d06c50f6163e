"""CIFAR-10N part of the label-error demo: find the human label noise from cross-validated
probabilities of a cheap model.

Per setting (:data:`FULL`, :data:`QUICK`): a pool of training images drawn once (seed 0),
unsupervised k-means patch features of the pool
(:mod:`~losskit.procedures.label_errors_features`), and per seed a random subset of the pool
whose noisy CIFAR-10N labels get out-of-fold probabilities from a softmax head
(:func:`~losskit.labels.cross_validation.cross_val_pred_probs_features`, stratified folds).
The truth is ``noisy label != clean label``. Features and probabilities are cached under
``cache_dir()/label_errors/``, keyed by the setting and the data files' fingerprints.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from losskit.arena.cache import cache_path, load_npy, save_npy_atomic
from losskit.arena.cifar10 import CIFAR10N_KEYS, decode_records, read_offsets
from losskit.labels.confident_learning import estimate_noise_matrices
from losskit.labels.cross_validation import cross_val_pred_probs_features
from losskit.labels.label_issues import FILTERS, find_label_issues
from losskit.procedures.label_errors_features import fit_patch_kmeans

LABEL_SETS = ("aggre", "random1", "worst")


@dataclass(frozen=True)
class Setting:
    """Sizes of the CIFAR-10N experiment."""

    pool: int  # training images with features
    subset: int  # images per seed (drawn from the pool)
    centroids: int  # k-means centroids (features = 4 x centroids)
    stride: int  # patch stride of the feature extractor
    patches: int  # patches for whitening and k-means
    folds: int  # cross-validation folds
    l2: float  # softmax head's weight penalty
    max_iter: int  # L-BFGS iterations per fold


FULL = Setting(
    pool=15_000,
    subset=10_000,
    centroids=100,
    stride=2,
    patches=20_000,
    folds=3,
    l2=1e-2,
    max_iter=60,
)
QUICK = Setting(
    pool=400, subset=300, centroids=16, stride=2, patches=3_000, folds=2, l2=1e-2, max_iter=20
)


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _fingerprint(root: Path) -> tuple[int, int]:
    folder = root / "cifar10"
    return (folder / "cifar10_jpeg.bin").stat().st_size, (
        folder / "cifar10n_labels.npz"
    ).stat().st_size


def pool_features(root: Path, s: Setting) -> tuple[np.ndarray, np.ndarray]:
    """Pool indices (into the training set) and their features, cached."""
    pool = np.sort(np.random.default_rng(0).choice(50_000, s.pool, replace=False))
    path = cache_path("label_errors", f"features-{_key(asdict(s), _fingerprint(root))}.npy")
    features = load_npy(path)
    if features is None or features.shape != (s.pool, 4 * s.centroids):
        blob = (root / "cifar10" / "cifar10_jpeg.bin").read_bytes()
        images = decode_records(blob, read_offsets(root), pool)
        km = fit_patch_kmeans(images, n_centroids=s.centroids, n_patches=s.patches, seed=0)
        features = km.transform(images, stride=s.stride)
        save_npy_atomic(path, features)
    return pool, features


def noisy_labels(root: Path) -> dict[str, np.ndarray]:
    """``clean`` and the CIFAR-10N label sets (train order)."""
    with np.load(root / "cifar10" / "cifar10n_labels.npz", allow_pickle=False) as npz:
        return {k: npz[CIFAR10N_KEYS[k]].astype(np.int64) for k in ("clean", *LABEL_SETS)}


def cv_probs(
    root: Path, s: Setting, features: np.ndarray, labels: np.ndarray, name: str, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities of the softmax head on ``labels``, cached."""
    key = _key(asdict(s), _fingerprint(root), name, seed)
    path = cache_path("label_errors", f"probs-{key}.npy")
    probs = load_npy(path)
    if probs is None or probs.shape != (len(labels), 10):
        probs = cross_val_pred_probs_features(
            features,
            labels,
            num_classes=10,
            n_folds=s.folds,
            seed=seed,
            l2=s.l2,
            max_iter=s.max_iter,
        )
        save_npy_atomic(path, probs)
    return probs


def detection_scores(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Flagged count, precision, recall and F1 of ``flagged`` against ``truth`` (bool masks)."""
    hit = int((flagged & truth).sum())
    precision = hit / max(int(flagged.sum()), 1)
    recall = hit / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    return {"flagged": int(flagged.sum()), "precision": precision, "recall": recall, "f1": f1}


def run_cifar10n(root: Path, s: Setting, seeds: int, bar) -> dict[str, dict[str, list]]:
    """Per label set, lists over seeds of: accuracy against the clean / noisy labels, true and
    estimated noise rate, and per filter its detection scores."""
    pool, features = pool_features(root, s)
    labels = noisy_labels(root)
    out: dict[str, dict[str, list]] = {n: {} for n in LABEL_SETS}
    for seed in range(seeds):
        pick = np.sort(np.random.default_rng(1000 + seed).choice(s.pool, s.subset, replace=False))
        clean = labels["clean"][pool[pick]]
        for name in LABEL_SETS:
            noisy = labels[name][pool[pick]]
            probs = cv_probs(root, s, features[pick], noisy, name, seed)
            truth = noisy != clean
            rec = out[name]
            rec.setdefault("acc_clean", []).append(float((probs.argmax(1) == clean).mean()))
            rec.setdefault("acc_noisy", []).append(float((probs.argmax(1) == noisy).mean()))
            rec.setdefault("noise_true", []).append(float(truth.mean()))
            rec.setdefault("noise_est", []).append(estimate_noise_matrices(noisy, probs).noise_rate)
            for f in FILTERS:
                scores = detection_scores(find_label_issues(noisy, probs, filter_by=f), truth)
                for k, v in scores.items():
                    rec.setdefault(f"{f}/{k}", []).append(v)
            bar.update(1)
    return out
