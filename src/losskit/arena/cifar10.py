"""CIFAR-10 with CIFAR-10N (human noisy train labels) and CIFAR-10H (human soft test labels).

The data folder holds the 60,000 images as JPEG records laid end to end
(``cifar10/cifar10_jpeg.bin`` + ``cifar10_jpeg_offsets.npy``), in original CIFAR-10 order:
records 0-49,999 are the train images, 50,000-59,999 the test images. The first load decodes
them with Pillow into one uint8 array ``[60000, 32, 32, 3]`` cached under
``cache_dir()/cifar10/``, keyed by the size and sha256 of the ``.bin``; later loads read it.

``extras`` (all in original order):

=================================== ===========================================================
``cifar10n/clean``                  the original train labels (int64 [50000])
``cifar10n/aggre``                  majority vote of three workers (9.01 % noise)
``cifar10n/random1`` .. ``random3`` one worker each (17.23 / 18.12 / 17.64 %)
``cifar10n/worst``                  a wrong label whenever any worker gave one (40.21 %);
                                    the source file calls it ``worse_label``
``cifar10h/probs``                  float32 [10000, 10] human label distribution (test order)
``cifar10h/counts``                 int64 [10000, 10] human votes (test order)
=================================== ===========================================================
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from losskit.arena.cache import cache_path, file_sha256, load_npy, save_npy_atomic
from losskit.arena.datasets import Dataset

CLASS_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
N_TRAIN = 50_000
N_TEST = 10_000
IMAGE_SHAPE = (32, 32, 3)
# extras key -> key in cifar10n_labels.npz
CIFAR10N_KEYS = {
    "clean": "clean_label",
    "aggre": "aggre_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
    "worst": "worse_label",
}
DECODE_STATS = {"images": 0}  # images decoded by this process (tests check cache reuse)


def read_offsets(root: Path) -> np.ndarray:
    """The record offsets, checked against the ``.bin`` size (int64 [60001])."""
    offsets = np.load(root / "cifar10" / "cifar10_jpeg_offsets.npy", allow_pickle=False)
    size = (root / "cifar10" / "cifar10_jpeg.bin").stat().st_size
    if offsets.shape != (N_TRAIN + N_TEST + 1,) or offsets[0] != 0 or offsets[-1] != size:
        raise ValueError(
            f"cifar10_jpeg_offsets.npy must hold {N_TRAIN + N_TEST + 1} offsets from 0 to the "
            f".bin size {size}, got shape {offsets.shape} ending at {offsets[-1]}"
        )
    return offsets.astype(np.int64)


def decode_records(
    blob: bytes, offsets: np.ndarray, indices: np.ndarray | None = None, *, progress: bool = False
) -> np.ndarray:
    """Decode JPEG records ``indices`` (default: all) into uint8 ``[n, 32, 32, 3]`` RGB."""
    from PIL import Image

    indices = np.arange(len(offsets) - 1) if indices is None else np.asarray(indices)
    out = np.empty((len(indices), *IMAGE_SHAPE), dtype=np.uint8)
    view = memoryview(blob)
    rows = enumerate(indices)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, total=len(indices), desc="decoding cifar10", unit="img")
    for i, r in rows:
        with Image.open(io.BytesIO(view[offsets[r] : offsets[r + 1]])) as im:
            pixels = np.asarray(im.convert("RGB"))
        if pixels.shape != IMAGE_SHAPE:
            raise ValueError(f"record {r} decodes to shape {pixels.shape}, expected {IMAGE_SHAPE}")
        out[i] = pixels
    DECODE_STATS["images"] += len(indices)
    return out


def decoded_images(root: Path, *, progress: bool = True) -> np.ndarray:
    """All 60,000 images as uint8 ``[60000, 32, 32, 3]``, decoded once and cached."""
    bin_path = root / "cifar10" / "cifar10_jpeg.bin"
    offsets = read_offsets(root)
    key = f"images-{bin_path.stat().st_size}-{file_sha256(bin_path)[:16]}.npy"
    path = cache_path("cifar10", key)
    images = load_npy(path)
    if images is not None and images.shape == (len(offsets) - 1, *IMAGE_SHAPE):
        return images
    images = decode_records(bin_path.read_bytes(), offsets, progress=progress)
    save_npy_atomic(path, images)
    return images


def _labels(y: np.ndarray, what: str, n: int) -> np.ndarray:
    y = np.asarray(y).astype(np.int64)
    if y.shape != (n,) or y.min() < 0 or y.max() >= len(CLASS_NAMES):
        raise ValueError(f"{what} must hold {n} labels in [0, 10), got shape {y.shape}")
    return y


def read_cifar10_labels(root: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Train labels, test labels and the CIFAR-10N / CIFAR-10H ``extras`` (no images)."""
    folder = root / "cifar10"
    y_train = _labels(np.load(folder / "train_labels.npy"), "train_labels.npy", N_TRAIN)
    y_test = _labels(np.load(folder / "test_labels.npy"), "test_labels.npy", N_TEST)
    extras: dict[str, np.ndarray] = {}
    with np.load(folder / "cifar10n_labels.npz", allow_pickle=False) as npz:
        for key, source in CIFAR10N_KEYS.items():
            extras[f"cifar10n/{key}"] = _labels(
                npz[source], f"cifar10n_labels.npz[{source!r}]", N_TRAIN
            )
    probs = np.load(folder / "cifar10h_probs.npy", allow_pickle=False)
    counts = np.load(folder / "cifar10h_counts.npy", allow_pickle=False)
    if probs.shape != (N_TEST, 10) or counts.shape != (N_TEST, 10):
        raise ValueError(f"CIFAR-10H arrays must be [{N_TEST}, 10], got {probs.shape}")
    extras["cifar10h/probs"] = probs.astype(np.float32)
    extras["cifar10h/counts"] = counts.astype(np.int64)
    return y_train, y_test, extras


def load_cifar10(root: Path, *, progress: bool = True) -> Dataset:
    """CIFAR-10 as uint8 images with CIFAR-10N / CIFAR-10H extras (see the module docstring)."""
    y_train, y_test, extras = read_cifar10_labels(root)
    images = decoded_images(root, progress=progress)
    return Dataset(
        name="cifar10",
        task="multiclass",
        x_train=images[:N_TRAIN],
        y_train=y_train,
        x_test=images[N_TRAIN:],
        y_test=y_test,
        num_classes=len(CLASS_NAMES),
        class_names=list(CLASS_NAMES),
        extras=extras,
    )
