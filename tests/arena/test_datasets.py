"""Arena dataset loaders: registry, folders, parsing against the data README, caches.

Tests that read ``/work/shared/data`` find it through ``$LOSSKIT_DATA`` and skip without it.
Loads that embed whole text sets or decode all of CIFAR-10 are marked slow; the fast tests parse
the raw files and run the cached paths on a few records.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from losskit.arena import cifar10, embeddings, text
from losskit.arena.datasets import (
    Dataset,
    MissingDataError,
    cache_dir,
    dataset_available,
    list_datasets,
    load_dataset,
    resolve_data_dir,
)
from losskit.arena.tabular import read_olivetti

ALL = {"digits", "cifar10", "trec6", "trec50", "sms_spam", "goemotions", "olivetti"}
ALL |= {"mulan_yeast", "mulan_scene", "mulan_emotions"}


@pytest.fixture
def data_dir() -> Path:
    env = os.environ.get("LOSSKIT_DATA", "")
    if not env or not Path(env).is_dir():
        pytest.skip("LOSSKIT_DATA is not set to the shared data folder")
    return Path(env)


def test_registry_lists_every_dataset():
    assert set(list_datasets()) == ALL
    with pytest.raises(ValueError, match="name must be one of"):
        load_dataset("imagenet")


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOSSKIT_DATA", "")  # the Makefile exports it empty when data is absent
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "losskit" / "data"
    monkeypatch.setenv("LOSSKIT_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("LOSSKIT_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "losskit"
    monkeypatch.setenv("LOSSKIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_missing_file_names_file_and_folder(tmp_path):
    assert dataset_available("digits", tmp_path)
    assert not dataset_available("trec6", tmp_path)
    with pytest.raises(MissingDataError) as info:
        load_dataset("trec6", tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "trec" / "TREC.train") in message
    assert str(tmp_path / "trec" / "TREC.test") in message
    assert "LOSSKIT_DATA" in message and "--data-dir" in message


def test_dataset_validates_shapes():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="task"):
        Dataset("d", "regression", x, np.zeros(3, np.int64), x, np.zeros(3, np.int64), 1, ["a"])
    with pytest.raises(ValueError, match="y_train"):
        Dataset("d", "multiclass", x, np.zeros(2, np.int64), x, np.zeros(3, np.int64), 1, ["a"])


def test_digits_always_available():
    d = load_dataset("digits", progress=False)
    n = len(d.y_train) + len(d.y_test)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.x_train.shape[1] == 64 and d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    assert abs(len(d.y_test) / n - 0.3) < 0.01
    full = np.bincount(np.concatenate([d.y_train, d.y_test])) / n
    np.testing.assert_allclose(np.bincount(d.y_train) / len(d.y_train), full, atol=0.01)
    again = load_dataset("digits", progress=False)
    np.testing.assert_array_equal(again.y_test, d.y_test)


def test_trec_parse_matches_readme(data_dir):
    splits = text.read_trec(data_dir)
    texts, coarse, fine = splits["train"]
    assert len(texts) == 5452 and len(splits["test"][0]) == 500
    counts = {c: coarse.count(c) for c in set(coarse)}
    assert counts == {"ENTY": 1250, "HUM": 1223, "DESC": 1162, "NUM": 896, "LOC": 835, "ABBR": 86}
    fine_counts = sorted((fine.count(f) for f in set(fine)), reverse=True)
    assert len(fine_counts) == 50 and fine_counts[0] == 962 and fine_counts[-1] == 4
    assert len(set(splits["test"][2])) == 42 and set(splits["test"][2]) <= set(fine)
    assert "sister\xf0city" in " ".join(texts)  # the one Latin-1 byte


def test_sms_parse_and_split(data_dir):
    texts, y = text.read_sms(data_dir)
    assert len(texts) == 5574 and int(y.sum()) == 747
    from losskit.arena.splits import grouped_stratified_split

    train, test = grouped_stratified_split(texts, y, test_size=0.2, seed=0)
    assert len(train) + len(test) == len(texts) and abs(len(test) / len(texts) - 0.2) < 0.01
    assert not {texts[i] for i in train} & {texts[i] for i in test}
    assert abs(y[test].mean() - y.mean()) < 0.01


def test_goemotions_parse_matches_readme(data_dir):
    splits, names = text.read_goemotions(data_dir)
    assert len(names) == 28 and names[0] == "admiration" and names[-1] == "neutral"
    sizes = {s: len(t) for s, (t, _) in splits.items()}
    assert sizes == {"train": 43410, "dev": 5426, "test": 5427}
    y = splits["train"][1]
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert round(y.sum(1).mean(), 3) == 1.177
    assert round(float((y.sum(1) > 1).mean()) * 100, 1) == 16.4


@pytest.mark.parametrize(
    ("name", "shape", "n_test", "per_row", "freq"),
    [
        ("mulan_yeast", (1500, 103), 917, (4.228, 4.252), (21, 1128)),
        ("mulan_emotions", (391, 72), 202, (1.813, 1.975), (89, 168)),
        ("mulan_scene", (1211, 294), 1196, (1.062, 1.086), (165, 277)),
    ],
)
def test_mulan_matches_readme(data_dir, name, shape, n_test, per_row, freq):
    d = load_dataset(name, data_dir, progress=False)
    assert d.task == "multilabel" and d.x_train.shape == shape and len(d.x_test) == n_test
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.y_train.shape == (shape[0], d.num_classes) and len(d.class_names) == d.num_classes
    assert tuple(round(float(y.sum(1).mean()), 3) for y in (d.y_train, d.y_test)) == per_row
    counts = d.y_train.sum(0)
    assert (counts.min(), counts.max()) == freq and d.y_train.sum(1).min() > 0


def test_mulan_labels_matched_by_name(data_dir):
    d = load_dataset("mulan_yeast", data_dir, progress=False)
    assert d.class_names == [f"Class{i}" for i in range(1, 15)]  # .xml lists them out of order


def test_olivetti_retrieval_split(data_dir):
    d = load_dataset("olivetti", data_dir, progress=False)
    assert d.task == "retrieval" and d.num_classes == 40
    assert d.x_train.shape == (280, 4096) and d.x_test.shape == (120, 4096)
    assert (np.bincount(d.y_train) == 7).all() and (np.bincount(d.y_test) == 3).all()
    # 1-NN from test queries to the train gallery finds the person far above chance (1/40).
    q = d.x_test - d.x_test.mean(1, keepdims=True)
    g = d.x_train - d.x_train.mean(1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    assert (d.y_train[(q @ g.T).argmax(1)] == d.y_test).mean() > 0.8
    images, _ = read_olivetti(data_dir)  # upright: more symmetric left-right than top-bottom
    f = images.astype(np.float64)
    assert np.abs(f - f[:, :, ::-1]).mean() < np.abs(f - f[:, ::-1, :]).mean()


def test_cifar10_label_sets_match_published_rates(data_dir):
    y_train, y_test, extras = cifar10.read_cifar10_labels(data_dir)
    assert np.bincount(y_train).tolist() == [5000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    np.testing.assert_array_equal(extras["cifar10n/clean"], y_train)
    published = {"aggre": 9.01, "random1": 17.23, "random2": 18.12, "random3": 17.64}
    published["worst"] = 40.21
    for key, rate in published.items():
        noise = (extras[f"cifar10n/{key}"] != y_train).mean() * 100
        assert round(float(noise), 2) == rate, key
    probs = extras["cifar10h/probs"]
    assert probs.shape == (10000, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert round(float((probs.argmax(1) != y_test).mean()) * 100, 2) == 0.79


def test_cifar10_decodes_records(data_dir):
    offsets = cifar10.read_offsets(data_dir)
    with open(data_dir / "cifar10" / "cifar10_jpeg.bin", "rb") as f:
        blob = f.read(int(offsets[4]))
    images = cifar10.decode_records(blob, offsets, np.arange(4))
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 10  # real pictures, not blank records


def _label_signal(d: Dataset) -> bool:
    """Nearest-centroid test accuracy beats the majority class by 5 points (multiclass), or
    test rows sit closer to the centroids of their own labels than to others (multilabel)."""
    if d.task == "multilabel":
        centroids = (d.y_train.T @ d.x_train) / d.y_train.sum(0)[:, None]
        sim = d.x_test @ centroids.T
        return sim[d.y_test == 1].mean() > sim[d.y_test == 0].mean() + 0.01
    centroids = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(d.num_classes)])
    pred = (d.x_test @ centroids.T - 0.5 * (centroids**2).sum(1)).argmax(1)
    majority = np.bincount(d.y_test).max() / len(d.y_test)
    return (pred == d.y_test).mean() > majority + 0.05


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "sizes", "classes"),
    [
        ("trec6", (5452, 500), 6),
        ("trec50", (5452, 500), 50),
        ("sms_spam", None, 2),
        ("goemotions", (43410, 5427), 28),
    ],
)
def test_text_datasets_full(data_dir, name, sizes, classes):
    d = load_dataset(name, data_dir, progress=False)
    assert d.num_classes == classes and d.x_train.dtype == np.float32
    assert d.x_train.shape[1] == embeddings.EMBED_DIM
    if sizes is not None:
        assert (len(d.x_train), len(d.x_test)) == sizes
    assert _label_signal(d)  # embeddings line up with their labels
    before = embeddings.ENCODE_STATS["texts"]
    load_dataset(name, data_dir, progress=False)
    assert embeddings.ENCODE_STATS["texts"] == before  # second load reads the cache


@pytest.mark.slow
def test_cifar10_full_load_and_cache(data_dir):
    d = load_dataset("cifar10", data_dir, progress=False)
    assert d.x_train.shape == (50000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
    assert d.x_train.dtype == np.uint8 and d.class_names[0] == "airplane"
    means = np.concatenate([d.x_train, d.x_test]).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(means, (125.39, 123.06, 114.03), atol=0.01)
    before = cifar10.DECODE_STATS["images"]
    load_dataset("cifar10", data_dir, progress=False)
    assert cifar10.DECODE_STATS["images"] == before
