"""The distillation track's data and teachers: teacher specs, the student's inputs, the
CIFAR-10H split, and teachers trained once and cached.

**Teacher spec** (``Trial.teacher``), in the objective-spec syntax ``kind:key=value,...``:

- ``kind`` an arena model (``"mlp"``, ``"linear"``, ``"cnn"``, ...): a teacher of that model
  trained with cross-entropy (Adam with a cosine decay to 0, no augmentation) on the same
  training samples and labels as the student (the trial's scenario applied to the train
  split), with ``epochs`` (30),
  ``lr`` (1e-3), ``batch_size`` (128) and ``weight_decay`` (0). It sees the dataset's own
  features.
- ``kind = "cifar10h"``: the CIFAR-10H human label distributions as the teacher's
  probabilities (``teacher_probs=True``). They exist for the 10,000 test images only, so the
  student trains on one half of the test images and is evaluated on the other half: a
  stratified 50/50 split of the test labels with seed 0, the same for every trial
  (:func:`cifar10h_split`); the target is the original CIFAR-10 test label. Only the
  ``"clean"`` scenario applies.
- ``student_input`` (``"same"``): what the student sees. ``"bow"`` gives it a hashed binary
  bag of words of the raw text (:func:`hashed_bow`; TREC only), not standardised (the
  standardised columns of rare words would dwarf the rest), while the teacher keeps the
  dataset's MiniLM embeddings.

**Teacher cache.** A trained teacher's outputs on the student's training samples (logits,
penultimate features) and its test metrics are saved under ``cache_dir()/distill/teachers/``
as ``<key>.npz``, where the key is the SHA-256 of the spec, the seed, the scenario and the
exact bytes of the teacher's training inputs, labels and test split. A file lock makes a
second process wait for the first instead of training the same teacher twice. Training is
seeded (``torch.manual_seed(seed)``) and runs inside the trial's deterministic block.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from losskit.arena.cache import cache_path, load_npy, save_npy_atomic
from losskit.arena.metrics import classification_metrics
from losskit.arena.models import MODELS, Standardizer, build_model, is_image

TEACHER_SCHEMA = 1
HUMAN_TEACHERS = ("cifar10h",)
STUDENT_INPUTS = ("same", "bow")
TEACHER_DEFAULTS: dict[str, Any] = {"epochs": 30, "lr": 1e-3, "batch_size": 128,
                                    "weight_decay": 0.0, "student_input": "same"}  # fmt: skip
BOW_DIM = 4096
STATS = {"trained": 0}  # teachers trained by this process (tests check the cache)


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed ``Trial.teacher`` (see the module docstring)."""

    kind: str
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    student_input: str = "same"

    @property
    def human(self) -> bool:
        return self.kind in HUMAN_TEACHERS

    def canonical(self) -> str:
        if self.human:
            return self.kind
        opts = {k: getattr(self, k) for k in TEACHER_DEFAULTS}
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in sorted(opts.items()))


def parse_teacher(spec: str) -> TeacherSpec:
    """``"mlp:epochs=30,student_input=bow"`` -> :class:`TeacherSpec`; bad specs raise."""
    from losskit.arena.suites import parse_objective

    if not isinstance(spec, str) or not spec:
        raise ValueError(f"teacher must be a non-empty spec string, got {spec!r}")
    kind, opts = parse_objective(spec)
    if kind not in (*MODELS, *HUMAN_TEACHERS):
        raise ValueError(f"teacher kind must be one of {(*MODELS, *HUMAN_TEACHERS)}, got {kind!r}")
    unknown = sorted(set(opts) - set(TEACHER_DEFAULTS))
    if unknown or (kind in HUMAN_TEACHERS and opts):
        raise ValueError(f"teacher {spec!r}: unknown options {unknown or sorted(opts)}")
    t = TeacherSpec(kind, **opts)
    for name in ("epochs", "batch_size"):
        v = getattr(t, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"teacher {name} must be an int >= 1, got {v!r}")
    if not (isinstance(t.lr, (int, float)) and t.lr > 0):
        raise ValueError(f"teacher lr must be > 0, got {t.lr!r}")
    if not (isinstance(t.weight_decay, (int, float)) and t.weight_decay >= 0):
        raise ValueError(f"teacher weight_decay must be >= 0, got {t.weight_decay!r}")
    if t.student_input not in STUDENT_INPUTS:
        raise ValueError(f"student_input must be one of {STUDENT_INPUTS}, got {t.student_input!r}")
    return t


# ---------------------------------------------------------------- student inputs, CIFAR-10H


def hashed_bow(
    train: list[str], test: list[str], dim: int = BOW_DIM
) -> tuple[np.ndarray, np.ndarray]:
    """Binary bag of words: the lower-cased words (``[a-z0-9]+`` with an optional
    apostrophe suffix) of each text hashed with CRC-32 into ``dim`` buckets, 1.0 where a
    bucket occurs; float32 ``[n, dim]`` for each list. Deterministic across processes (no
    Python ``hash``). Binary unigrams beat TF-IDF (which down-weights the question words that
    carry TREC's classes) and bigrams (too sparse for 5,452 questions) for a small MLP."""
    out = []
    for texts in (train, test):
        m = np.zeros((len(texts), dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()):
                m[i, zlib.crc32(word.encode()) % dim] = 1.0
        out.append(m)
    return out[0], out[1]


def bow_inputs(dataset: str, data_dir: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Hashed bag-of-words of TREC's raw questions (train, test), in the dataset's order,
    cached under ``cache_dir()/distill/``."""
    from losskit.arena.datasets import check_files
    from losskit.arena.text import read_trec

    if dataset not in ("trec6", "trec50"):
        raise ValueError(f"student_input='bow' needs raw texts (trec6, trec50), got {dataset!r}")
    splits = read_trec(check_files(dataset, data_dir))
    texts = [splits[s][0] for s in ("train", "test")]
    digest = hashlib.sha256(json.dumps([BOW_DIM, *texts]).encode()).hexdigest()[:16]
    path = cache_path("distill", f"trec-bow-{digest}.npy")
    both = load_npy(path)
    n = len(texts[0])
    if both is None or both.shape != (n + len(texts[1]), BOW_DIM):
        both = np.concatenate(hashed_bow(texts[0], texts[1]))
        save_npy_atomic(path, both)
    return both[:n], both[n:]


def cifar10h_split(y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed CIFAR-10H halves of the test set: (student train, student evaluation)
    indices, a stratified 50/50 split with seed 0."""
    from losskit.arena.splits import stratified_split

    return stratified_split(np.asarray(y_test), test_size=0.5, seed=0)


# ---------------------------------------------------------------- teachers


@dataclass
class TeacherOutputs:
    """A teacher on the student's training samples: ``outputs`` float32 ``[n, C]`` (logits, or
    probabilities when ``probs``), ``features`` ``[n, D]`` (``None`` for a human teacher),
    test ``metrics`` (accuracy, macro-F1, balanced accuracy, ECE), ``num_params``, cache
    ``key``, whether it was ``trained`` by this call and the seconds it took."""

    outputs: np.ndarray
    probs: bool
    features: np.ndarray | None
    metrics: dict[str, float]
    num_params: int
    key: str
    trained: bool = False
    train_time: float = 0.0


def human_teacher(probs: np.ndarray, train: np.ndarray, evaluation: np.ndarray,
                  y_eval: np.ndarray) -> TeacherOutputs:  # fmt: skip
    """CIFAR-10H as a teacher: its probabilities on the student's half, scored on the other
    half against the CIFAR-10 labels (log-probabilities as logits; ties by class id)."""
    p = np.asarray(probs, dtype=np.float64)
    scores = np.log(np.maximum(p[evaluation], 1e-12))
    metrics = classification_metrics(scores, y_eval, p.shape[1])["metrics"]
    return TeacherOutputs(p[train].astype(np.float32), True, None, metrics, 0, "cifar10h")


def teacher_key(spec: TeacherSpec, seed: int, scenario: str, arrays: list[np.ndarray]) -> str:
    """SHA-256 of the spec, seed, scenario, schema and the exact bytes of ``arrays``."""
    h = hashlib.sha256()
    head = {"schema": TEACHER_SCHEMA, "spec": spec.canonical(), "seed": seed, "scenario": scenario}
    h.update(json.dumps(head, sort_keys=True).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock next to ``path`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load(path: Path) -> TeacherOutputs | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return TeacherOutputs(z["outputs"], False, z["features"], meta["metrics"],
                                  meta["num_params"], path.stem)  # fmt: skip
    except (OSError, ValueError, KeyError):
        return None


def _save(path: Path, t: TeacherOutputs) -> None:
    buf = io.BytesIO()
    meta = json.dumps({"metrics": t.metrics, "num_params": t.num_params})
    np.savez(buf, outputs=t.outputs, features=t.features, meta=np.array(meta))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def trained_teacher(
    spec: TeacherSpec,
    *,
    seed: int,
    scenario: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
) -> TeacherOutputs:
    """The teacher of ``spec`` trained on ``(x_train, y_train)``: loaded from the cache, or
    trained (seeded with ``seed``), scored on the test split and cached. Run it inside
    :func:`~losskit.arena.trial.deterministic`."""
    key = teacher_key(spec, seed, scenario, [x_train, y_train, x_test, y_test])
    path = cache_path("distill", "teachers", f"{key}.npz")
    with _locked(path):
        cached = _load(path)
        if cached is not None:
            return cached
        start = time.perf_counter()
        t = _train(spec, seed, x_train, y_train, x_test, y_test, num_classes)
        t.key, t.trained, t.train_time = key, True, time.perf_counter() - start
        _save(path, t)
        STATS["trained"] += 1
        return t


def _train(spec: TeacherSpec, seed: int, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
           y_test: np.ndarray, num_classes: int) -> TeacherOutputs:  # fmt: skip
    from losskit.arena.distill_objectives import split_model
    from losskit.arena.trial import EVAL_BATCH, predict

    torch.manual_seed(seed)
    std = Standardizer.fit(x)
    model = build_model(spec.kind, x[:1], num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs)
    x_pre = None if is_image(x) else std(x)
    target = torch.from_numpy(np.asarray(y, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(spec.epochs):
        model.train()
        for idx in torch.randperm(len(target), generator=gen).split(spec.batch_size):
            xb = x_pre[idx] if x_pre is not None else std(x[idx.numpy()])
            loss = F.cross_entropy(model(xb), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    metrics = classification_metrics(predict(model, std, x_test), y_test, num_classes)["metrics"]
    backbone, head = split_model(model)
    feats, logits = [], []
    with torch.no_grad():  # predict() left the model in eval mode
        for i in range(0, len(x), EVAL_BATCH):
            f = backbone(std(x[i : i + EVAL_BATCH]))
            feats.append(f)
            logits.append(head(f))
    n_params = sum(p.numel() for p in model.parameters())
    return TeacherOutputs(torch.cat(logits).numpy(), False, torch.cat(feats).numpy(), metrics,
                          n_params, "")  # fmt: skip
