"""Text datasets (TREC, SMS Spam, GoEmotions) as frozen all-MiniLM-L6-v2 embeddings.

Features are float32 ``[N, 384]`` unit vectors from :mod:`losskit.arena.embeddings`, cached
per split. The ``read_*`` functions parse the raw files without embedding anything.

* ``trec6`` / ``trec50``: ``trec/TREC.train`` (5,452) and ``TREC.test`` (500), coarse (6) or
  fine (50) classes; fine names keep their coarse prefix (``NUM:dist``). Class ids follow the
  sorted class names. Both share one embedding cache.
* ``sms_spam``: ham (0) / spam (1), a stratified 80/20 split with seed 0 in which repeated
  messages stay on one side (the file repeats 403 texts).
* ``goemotions``: 28 labels, multi-hot; ``train.tsv`` is the train split, ``test.tsv`` the test
  split, and ``dev.tsv`` is kept apart in ``extras["dev/x"]`` / ``extras["dev/y"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from losskit.arena.datasets import Dataset
from losskit.arena.embeddings import embed_texts
from losskit.arena.splits import grouped_stratified_split

TrecSplit = tuple[list[str], list[str], list[str]]  # texts, coarse labels, fine labels


def read_trec(root: Path) -> dict[str, TrecSplit]:
    """``{"train": ..., "test": ...}`` of (texts, coarse labels, fine labels ``COARSE:fine``)."""
    out: dict[str, TrecSplit] = {}
    for split, fname in (("train", "TREC.train"), ("test", "TREC.test")):
        texts: list[str] = []
        coarse: list[str] = []
        fine: list[str] = []
        path = root / "trec" / fname
        # Latin-1: TREC.train holds one byte (0xF0) that is not valid UTF-8.
        for n, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
            label, sep, text = line.partition(" ")
            if not sep or ":" not in label:
                raise ValueError(f"{path}:{n}: expected 'COARSE:fine question', got {line!r}")
            texts.append(text)
            coarse.append(label.split(":", 1)[0])
            fine.append(label)
        out[split] = (texts, coarse, fine)
    return out


def _class_names(train: list[str], test: list[str], what: str) -> list[str]:
    names = sorted(set(train))
    unseen = sorted(set(test) - set(names))
    if unseen:
        raise ValueError(f"{what} test labels {unseen} never occur in train")
    return names


def _load_trec(root: Path, level: str, progress: bool) -> Dataset:
    splits = read_trec(root)
    col = 1 if level == "coarse" else 2
    names = _class_names(splits["train"][col], splits["test"][col], f"TREC {level}")
    index = {name: i for i, name in enumerate(names)}
    arrays = {}
    for split, parts in splits.items():
        x = embed_texts(parts[0], key=f"trec-{split}", progress=progress)
        arrays[split] = (x, np.array([index[lab] for lab in parts[col]], dtype=np.int64))
    return Dataset(
        name="trec6" if level == "coarse" else "trec50",
        task="multiclass",
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        num_classes=len(names),
        class_names=list(names),
    )


def load_trec6(root: Path, *, progress: bool = True) -> Dataset:
    """TREC with its 6 coarse classes."""
    return _load_trec(root, "coarse", progress)


def load_trec50(root: Path, *, progress: bool = True) -> Dataset:
    """TREC with its 50 fine classes (a natural long tail, 962 down to 4 train questions)."""
    return _load_trec(root, "fine", progress)


SMS_CLASSES = ["ham", "spam"]


def read_sms(root: Path) -> tuple[list[str], np.ndarray]:
    """All messages and their labels (0 ham, 1 spam), header line dropped."""
    path = root / "sms_spam" / "SMSSpamCollection"
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].split("\t")[0] == "Label":
        lines = lines[1:]
    texts, labels = [], []
    for n, line in enumerate(lines, 2):
        label, sep, text = line.partition("\t")
        if not sep or label not in SMS_CLASSES:
            raise ValueError(f"{path}:{n}: expected 'ham|spam<TAB>text', got {line!r}")
        texts.append(text)
        labels.append(SMS_CLASSES.index(label))
    return texts, np.array(labels, dtype=np.int64)


def load_sms_spam(root: Path, *, progress: bool = True) -> Dataset:
    """SMS Spam Collection, stratified 80/20 (seed 0), duplicates kept on one side."""
    texts, y = read_sms(root)
    train, test = grouped_stratified_split(texts, y, test_size=0.2, seed=0)
    x = embed_texts(texts, key="sms_spam", progress=progress)
    return Dataset(
        name="sms_spam",
        task="multiclass",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=2,
        class_names=list(SMS_CLASSES),
    )


def read_goemotions(root: Path) -> tuple[dict[str, tuple[list[str], np.ndarray]], list[str]]:
    """``({"train"|"dev"|"test": (texts, multi-hot int64 [N, 28])}, label names)``."""
    folder = root / "goemotions"
    names = folder.joinpath("labels.txt").read_text(encoding="utf-8").split()
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for split in ("train", "dev", "test"):
        path = folder / f"{split}.tsv"
        texts: list[str] = []
        rows: list[list[int]] = []
        # Tab-separated, no quoting; texts are kept verbatim (some end in spaces).
        for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated fields, got {len(fields)}")
            texts.append(fields[0])
            ids = [int(i) for i in fields[1].split(",")]
            if min(ids) < 0 or max(ids) >= len(names):
                raise ValueError(f"{path}:{n}: label ids must lie in [0, {len(names)})")
            rows.append(ids)
        y = np.zeros((len(texts), len(names)), dtype=np.int64)
        for i, ids in enumerate(rows):
            y[i, ids] = 1
        out[split] = (texts, y)
    return out, names


def load_goemotions(root: Path, *, progress: bool = True) -> Dataset:
    """GoEmotions, 28 labels; train.tsv / test.tsv, with dev.tsv in ``extras``."""
    splits, names = read_goemotions(root)
    x = {
        s: embed_texts(t, key=f"goemotions-{s}", progress=progress) for s, (t, _) in splits.items()
    }
    return Dataset(
        name="goemotions",
        task="multilabel",
        x_train=x["train"],
        y_train=splits["train"][1],
        x_test=x["test"],
        y_test=splits["test"][1],
        num_classes=len(names),
        class_names=names,
        extras={"dev/x": x["dev"], "dev/y": splits["dev"][1]},
    )
