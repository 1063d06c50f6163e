"""Sentence-embedding cache of the arena text datasets (few sentences; full sets are slow tests
in ``test_datasets.py``). Loading the real encoder costs several seconds, so it lives here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from losskit.arena import embeddings


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOSSKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_embedding_cache_reuse(tmp_cache, monkeypatch):
    calls = []

    def fake_encode(texts, **kwargs):
        calls.append(list(texts))
        return np.random.default_rng(len(calls)).random((len(texts), 384), dtype=np.float32)

    monkeypatch.setattr(embeddings, "encode_texts", fake_encode)
    first = embeddings.embed_texts(["a b", "c"], key="unit", progress=False)
    (path,) = (tmp_cache / "embeddings").glob("unit-*.npy")
    mtime = path.stat().st_mtime_ns
    second = embeddings.embed_texts(["a b", "c"], key="unit", progress=False)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    embeddings.embed_texts(["a", "b c"], key="unit", progress=False)  # new content, new file
    assert len(calls) == 2 and len(list((tmp_cache / "embeddings").glob("unit-*.npy"))) == 2
    with pytest.raises(ValueError, match="key"):
        embeddings.embed_texts(["x"], key="a/b")


def test_real_encoder_offline(tmp_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sentences = [
        "How far is it from Denver to Aspen ?",
        "What is the distance between Denver and Aspen ?",
        "Who wrote the novel Moby Dick ?",
    ]
    before = embeddings.ENCODE_STATS["texts"]
    x = embeddings.embed_texts(sentences, key="real", progress=False)
    assert x.shape == (3, embeddings.EMBED_DIM) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2  # paraphrases are closer than unrelated questions
    again = embeddings.embed_texts(sentences, key="real", progress=False)
    np.testing.assert_array_equal(x, again)
    assert embeddings.ENCODE_STATS["texts"] == before + 3
