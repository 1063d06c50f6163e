"""What ``losskit doctor`` reads: labels with predicted probabilities or features.

``DATA`` is one of

- an ``.npz`` file with ``labels`` (int ``[N]``) and either ``pred_probs`` (``[N, K]``, rows
  summing to one) or ``features`` (``[N, D]``);
- a ``.csv`` file with a header, a ``label`` column and either ``prob_*`` columns (one per
  class, in the order of their suffix) or numeric feature columns;
- the name of an arena dataset with feature vectors (``digits``, ``trec6``, ... from
  :mod:`losskit.arena.datasets`; its training split).

Features become out-of-sample probabilities by stratified K-fold cross-validation of a linear
softmax head (:func:`~losskit.labels.cross_validation.cross_val_pred_probs_features`).
Everything wrong with the input is a ``ValueError`` saying what and where.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from losskit.labels._issue_inputs import PROB_SUM_ATOL, check_inputs
from losskit.labels.cross_validation import cross_val_pred_probs_features


@dataclass(frozen=True)
class DoctorData:
    """Validated labels ``[N]`` and out-of-sample probabilities ``[N, K]`` (float64)."""

    labels: np.ndarray
    pred_probs: np.ndarray
    source: str
    probs_from: str
    class_names: list[str]
    dataset: str | None = None
    """The arena dataset's name when the data is one."""


def _as_labels(raw: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(raw)
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be one class id per row, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{where}: no examples (labels is empty)")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{where}: labels must be integer class ids, got dtype {y.dtype}")
    if not np.isfinite(y).all():
        raise ValueError(f"{where}: labels contain NaN or Inf")
    if (y != np.round(y)).any():
        raise ValueError(f"{where}: labels must be integer class ids, got non-integer values")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"{where}: label ids must be >= 0, got {int(y.min())}")
    return y


def _as_matrix(raw: np.ndarray, name: str, n: int, where: str) -> np.ndarray:
    x = np.asarray(raw)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{where}: {name} must be a non-empty [N, K] array, got shape {x.shape}")
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{where}: {name} must be numeric, got dtype {x.dtype}")
    if x.shape[0] != n:
        raise ValueError(f"{where}: {n} labels but {x.shape[0]} rows of {name}; they must match")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise ValueError(f"{where}: {name} contains NaN or Inf (first at row {int(rows[0])})")
    return x


def checked_probs(labels: np.ndarray, probs: np.ndarray, where: str) -> np.ndarray:
    """``probs`` validated against ``labels``: in [0, 1], rows summing to 1, ids in range."""
    k = probs.shape[1]
    if labels.max() >= k:
        raise ValueError(
            f"{where}: label id {int(labels.max())} is out of range for {k} probability "
            f"columns (ids must be in [0, {k}))"
        )
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROB_SUM_ATOL)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{where}: probabilities must sum to 1 per row (tolerance {PROB_SUM_ATOL}); row {i} "
            f"sums to {sums[i]:.6g} ({bad.size} such rows)"
        )
    try:
        return check_inputs(labels, probs)[1]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def from_arrays(
    labels: np.ndarray,
    *,
    pred_probs: np.ndarray | None = None,
    features: np.ndarray | None = None,
    where: str = "input",
    n_folds: int = 5,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> DoctorData:
    """:class:`DoctorData` from labels and exactly one of probabilities or features."""
    if (pred_probs is None) == (features is None):
        raise ValueError(f"{where}: give either pred_probs or features (exactly one of them)")
    y = _as_labels(labels, where)
    if pred_probs is not None:
        p = checked_probs(y, _as_matrix(pred_probs, "pred_probs", len(y), where), where)
        probs_from = "given predicted probabilities"
    else:
        x = _as_matrix(features, "features", len(y), where)
        counts = np.bincount(y)
        present = counts[counts > 0]
        if present.size < 2:
            raise ValueError(f"{where}: features need at least 2 classes among the labels")
        if present.min() < n_folds:
            raise ValueError(
                f"{where}: every class needs at least {n_folds} examples for {n_folds}-fold "
                f"cross-validation; the smallest has {int(present.min())}"
            )
        p = cross_val_pred_probs_features(x, y, n_folds=n_folds, seed=seed)
        probs_from = f"{n_folds}-fold cross-validated linear softmax head on {x.shape[1]} features"
    k = p.shape[1]
    names = class_names if class_names is not None else [str(c) for c in range(k)]
    return DoctorData(y, p, where, probs_from, list(names))


def _read_npz(path: Path, n_folds: int, seed: int) -> DoctorData:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "labels" not in keys:
            raise ValueError(f"{path}: no 'labels' array (found {sorted(keys)})")
        arrays = {k: z[k] for k in ("labels", "pred_probs", "features") if k in keys}
    if "pred_probs" not in arrays and "features" not in arrays:
        raise ValueError(f"{path}: needs a 'pred_probs' or a 'features' array besides 'labels'")
    return from_arrays(
        arrays["labels"],
        pred_probs=arrays.get("pred_probs"),
        features=None if "pred_probs" in arrays else arrays["features"],
        where=str(path),
        n_folds=n_folds,
        seed=seed,
    )


def _float(value: str, row: int, column: str, path: Path) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"{path}: row {row}, column {column!r}: {value!r} is not a number"
        ) from None


def _read_csv(path: Path, n_folds: int, seed: int) -> DoctorData:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty")
        header = [h.strip() for h in header]
        if "label" not in header:
            raise ValueError(f"{path}: no 'label' column (columns: {header})")
        rows = [r for r in reader if r]
    if not rows:
        raise ValueError(f"{path}: no examples (only a header)")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i} has {len(r)} fields, the header {len(header)}")
    values = np.array(
        [[_float(v, i, header[j], path) for j, v in enumerate(r)] for i, r in enumerate(rows)]
    )
    labels = values[:, header.index("label")]
    prob_cols = sorted(
        (j for j, h in enumerate(header) if h.startswith("prob_")),
        key=lambda j: (len(header[j]), header[j]),
    )
    if prob_cols:
        names = [header[j][len("prob_") :] for j in prob_cols]
        return from_arrays(
            labels, pred_probs=values[:, prob_cols], where=str(path), class_names=names
        )
    feats = [j for j, h in enumerate(header) if h != "label"]
    if not feats:
        raise ValueError(f"{path}: needs prob_* columns or feature columns besides 'label'")
    return from_arrays(
        labels, features=values[:, feats], where=str(path), n_folds=n_folds, seed=seed
    )


def _read_arena(name: str, data_dir: str | None, n_folds: int, seed: int) -> DoctorData:
    from losskit.arena.datasets import MissingDataError, dataset_task, load_dataset

    if dataset_task(name) != "multiclass":
        raise ValueError(f"dataset {name!r} is {dataset_task(name)}; the doctor needs multiclass")
    try:
        ds = load_dataset(name, data_dir, progress=False)
    except MissingDataError as err:
        raise ValueError(str(err)) from None
    if ds.x_train.ndim != 2:
        raise ValueError(
            f"dataset {name!r} holds images, not feature vectors; pass an .npz with its "
            "labels and pred_probs instead"
        )
    data = from_arrays(
        ds.y_train,
        features=ds.x_train,
        where=f"arena dataset {name}",
        n_folds=n_folds,
        seed=seed,
        class_names=ds.class_names,
    )
    return replace(data, dataset=name)


def load_data(
    data: str | Path, *, data_dir: str | None = None, n_folds: int = 5, seed: int = 0
) -> DoctorData:
    """Read ``data`` (an ``.npz`` / ``.csv`` path or an arena dataset name; module docstring)."""
    from losskit.arena.datasets import list_datasets

    path = Path(data)
    if path.suffix.lower() in (".npz", ".csv"):
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        if path.suffix.lower() == ".npz":
            return _read_npz(path, n_folds, seed)
        return _read_csv(path, n_folds, seed)
    if str(data) in list_datasets():
        return _read_arena(str(data), data_dir, n_folds, seed)
    raise ValueError(
        f"{data!r} is neither an .npz / .csv file nor an arena dataset "
        f"(one of {', '.join(list_datasets())})"
    )
