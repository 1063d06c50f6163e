"""Small dense datasets: sklearn digits, the MULAN multi-label sets and the Olivetti faces.

* ``digits``: sklearn's 1,797 8x8 digits, pixels divided by 16 (so in [0, 1]), a stratified
  70/30 split with seed 0. Ships with scikit-learn, so it is always available.
* ``mulan_yeast`` / ``mulan_scene`` / ``mulan_emotions``: the standard MULAN train/test ARFF
  files; label columns are the attributes named in ``<name>.xml``, kept in ARFF header order;
  the other columns are the features, float32 and unscaled (as in the files).
* ``olivetti``: 400 faces of 64x64 pixels, identity ``index // 10``; 7 random images of each of
  the 40 people for train, 3 for test (seed 0). Features are the upright images flattened
  row-major and divided by 255; the task is retrieval (``y`` = identity).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from losskit.arena.datasets import Dataset
from losskit.arena.splits import per_class_split, stratified_split


def load_digits(root: Path | None = None, *, progress: bool = True) -> Dataset:
    """sklearn digits, [0, 1] pixels, stratified 70/30 split (seed 0); needs no data folder."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y, test_size=0.3, seed=0)
    return Dataset(
        name="digits",
        task="multiclass",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=10,
        class_names=[str(d) for d in range(10)],
    )


def read_arff(path: Path) -> tuple[list[str], np.ndarray]:
    """Attribute names and the float64 data matrix of a dense, numeric ARFF file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    names: list[str] = []
    start = None
    for i, line in enumerate(lines):
        text = line.strip()
        head = text.lower()
        if head.startswith("@attribute"):
            parts = text.split(None, 2)
            if len(parts) < 3:
                raise ValueError(f"{path}:{i + 1}: malformed @attribute line {line!r}")
            names.append(parts[1].strip("'\""))
        elif head.startswith("@data"):
            start = i + 1
            break
    if start is None or not names:
        raise ValueError(f"{path}: no @attribute lines or no @data section")
    rows = [r for r in lines[start:] if r.strip() and not r.lstrip().startswith("%")]
    if any(r.lstrip().startswith("{") for r in rows):
        raise ValueError(f"{path}: sparse ARFF rows are not supported")
    data = np.loadtxt(rows, delimiter=",", dtype=np.float64, ndmin=2)
    if data.shape[1] != len(names) or not np.isfinite(data).all():
        raise ValueError(
            f"{path}: expected {len(names)} finite values per row, got shape {data.shape}"
        )
    return names, data


def read_mulan_labels(path: Path) -> list[str]:
    """Label names listed in a MULAN ``<name>.xml`` file (``<label name=...>`` elements)."""
    tree = ET.parse(path)
    names = [el.get("name", "") for el in tree.iter() if el.tag.rsplit("}", 1)[-1] == "label"]
    if not names or not all(names):
        raise ValueError(f"{path}: expected <label name=...> elements")
    return names


def load_mulan(root: Path, name: str) -> Dataset:
    """MULAN set ``name`` (yeast, scene or emotions) with its standard train/test split."""
    folder = root / "mulan"
    label_names = set(read_mulan_labels(folder / f"{name}.xml"))
    parts = {}
    for split in ("train", "test"):
        attrs, data = read_arff(folder / f"{name}-{split}.arff")
        missing = label_names - set(attrs)
        if missing:
            raise ValueError(f"{name}-{split}.arff lacks label attributes {sorted(missing)}")
        is_label = np.array([a in label_names for a in attrs])
        y = data[:, is_label]
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"{name}-{split}.arff: label columns must hold 0 or 1")
        parts[split] = (data[:, ~is_label].astype(np.float32), y.astype(np.int64))
        classes = [a for a in attrs if a in label_names]
    return Dataset(
        name=f"mulan_{name}",
        task="multilabel",
        x_train=parts["train"][0],
        y_train=parts["train"][1],
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        num_classes=len(classes),
        class_names=classes,
    )


def load_mulan_yeast(root: Path, *, progress: bool = True) -> Dataset:
    """MULAN yeast: 103 features, 14 labels, 1,500 / 917."""
    return load_mulan(root, "yeast")


def load_mulan_scene(root: Path, *, progress: bool = True) -> Dataset:
    """MULAN scene: 294 features, 6 labels, 1,211 / 1,196."""
    return load_mulan(root, "scene")


def load_mulan_emotions(root: Path, *, progress: bool = True) -> Dataset:
    """MULAN emotions: 72 features, 6 labels, 391 / 202."""
    return load_mulan(root, "emotions")


OLIVETTI_SIDE = 64


def read_olivetti(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Upright uint8 faces ``[400, 64, 64]`` and identities ``index // 10`` (int64)."""
    from scipy.io import loadmat

    faces = loadmat(root / "olivetti" / "olivettifaces.mat")["faces"]
    side = OLIVETTI_SIDE
    if faces.shape[0] != side * side or faces.shape[1] % 10:
        raise ValueError(f"olivettifaces.mat 'faces' must be [4096, 10*k], got {faces.shape}")
    # Columns are images flattened column-major: transpose, reshape, swap the image axes.
    images = np.ascontiguousarray(faces.T.reshape(-1, side, side).transpose(0, 2, 1))
    return images, np.arange(images.shape[0], dtype=np.int64) // 10


def load_olivetti(root: Path, *, progress: bool = True) -> Dataset:
    """Olivetti faces for retrieval, 7 train / 3 test images per person (seed 0)."""
    images, y = read_olivetti(root)
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    train, test = per_class_split(y, n_train=7, seed=0)
    people = int(y.max()) + 1
    return Dataset(
        name="olivetti",
        task="retrieval",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=people,
        class_names=[f"person{i:02d}" for i in range(people)],
    )
