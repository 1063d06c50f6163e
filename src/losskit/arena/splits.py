"""Fixed, seeded train/test splits for datasets that ship without one."""

from __future__ import annotations

import numpy as np


def stratified_split(
    y: np.ndarray, *, test_size: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices of a stratified split of labels ``y`` (1-D)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    return np.sort(train), np.sort(test)


def grouped_stratified_split(
    groups: list[str], y: np.ndarray, *, test_size: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`stratified_split`, but rows with equal ``groups`` land on the same side.

    Each distinct group takes the label of its first row, the distinct groups are split
    stratified, and every row follows its group (so duplicated texts never straddle the split).
    """
    if len(groups) != len(y):
        raise ValueError(f"groups and y differ in length: {len(groups)} vs {len(y)}")
    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    reps = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    _, test_reps = stratified_split(y[reps], test_size=test_size, seed=seed)
    test_groups = {groups[reps[i]] for i in test_reps}
    in_test = np.array([g in test_groups for g in groups], dtype=bool)
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def per_class_split(y: np.ndarray, *, n_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices: ``n_train`` random rows of every class for train, the rest for test."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) <= n_train:
            raise ValueError(f"n_train must be below the size {len(rows)} of class {c}")
        train.append(rng.permutation(rows)[:n_train])
    train_idx = np.sort(np.concatenate(train))
    return train_idx, np.setdiff1d(np.arange(len(y)), train_idx)
