"""Derived-data cache helpers: content hashes and atomic ``.npy`` writes under ``cache_dir()``.

Several worker processes may load the same dataset at once; every cache file is written to a
private temporary name and renamed into place, so a reader never sees a half-written array.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from losskit.arena.datasets import cache_dir


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_path(*parts: str) -> Path:
    """A path under :func:`~losskit.arena.datasets.cache_dir`; parent folders are created."""
    path = cache_dir().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (``.npy``) through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_npy(path: Path) -> np.ndarray | None:
    """The cached array at ``path``, or ``None`` when absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
