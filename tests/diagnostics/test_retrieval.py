"""Retrieval metrics against slow loops, scikit-learn's NMI, exact cases and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

import losskit
from losskit.diagnostics.retrieval import (
    kmeans_nmi,
    map_at_r,
    normalized_mutual_info,
    recall_at_k,
    retrieval_metrics,
)


def _slow_neighbours(x: np.ndarray, i: int) -> list[int]:
    """The other rows ordered by decreasing cosine similarity to row ``i``."""
    z = [[t / math.sqrt(sum(u * u for u in v)) for t in v] for v in x.tolist()]
    sims = [
        (sum(a * b for a, b in zip(z[i], z[j], strict=True)), j) for j in range(len(z)) if j != i
    ]
    return [j for _, j in sorted(sims, key=lambda s: -s[0])]


def slow_recall(x: np.ndarray, y: np.ndarray, k: int) -> float:
    hits, queries = 0, 0
    for i in range(len(y)):
        if sum(1 for j in range(len(y)) if j != i and y[j] == y[i]) == 0:
            continue
        queries += 1
        hits += any(y[j] == y[i] for j in _slow_neighbours(x, i)[:k])
    return hits / queries


def slow_map_at_r(x: np.ndarray, y: np.ndarray) -> float:
    total, queries = 0.0, 0
    for i in range(len(y)):
        r = sum(1 for j in range(len(y)) if j != i and y[j] == y[i])
        if r == 0:
            continue
        queries += 1
        found, ap = 0, 0.0
        for rank, j in enumerate(_slow_neighbours(x, i)[:r], 1):
            if y[j] == y[i]:
                found += 1
                ap += found / rank
        total += ap / r
    return total / queries


def _data(n: int = 60, d: int = 5, c: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centres = rng.standard_normal((c, d))
    x = centres[y] + 0.9 * rng.standard_normal((n, d))
    y[0] = c  # a lone query: its label occurs once
    return x, y


@pytest.mark.parametrize("k", [1, 2, 5])
def test_recall_matches_the_slow_loop(k):
    x, y = _data()
    assert recall_at_k(x, y, k=k) == pytest.approx(slow_recall(x, y, k), abs=1e-12)


def test_map_at_r_matches_the_slow_loop():
    for seed in range(3):
        x, y = _data(seed=seed)
        assert map_at_r(x, y) == pytest.approx(slow_map_at_r(x, y), abs=1e-12)


def test_retrieval_metrics_agree_with_the_single_functions_and_torch_input():
    x, y = _data(n=80)
    out = retrieval_metrics(torch.from_numpy(x).float(), torch.from_numpy(y), ks=(1, 5))
    assert out["recall@1"] == pytest.approx(recall_at_k(x, y, k=1), abs=1e-6)
    assert out["recall@5"] == pytest.approx(recall_at_k(x, y, k=5), abs=1e-6)
    assert out["map@r"] == pytest.approx(map_at_r(x, y), abs=1e-6)
    assert out["nmi"] == pytest.approx(kmeans_nmi(x, y), abs=1e-6)
    assert out["queries"] == len(y) - 1  # the lone query is left out


def test_exact_cases():
    # four tight, well separated clusters: every metric is 1
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 5)
    x = np.eye(4)[y] * 10 + 0.01 * rng.standard_normal((20, 4))
    assert retrieval_metrics(x, y) == {
        "recall@1": 1.0, "recall@5": 1.0, "map@r": 1.0, "nmi": 1.0, "queries": 20.0
    }  # fmt: skip
    # R = 1 for rows 0 and 1, whose nearest row is row 2 (another label); row 2 is lone
    x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    y = np.array([0, 0, 1])
    assert recall_at_k(x, y, k=1) == 0.0 and recall_at_k(x, y, k=2) == 1.0
    assert map_at_r(x, y) == 0.0
    # all labels distinct: no query has a relevant row
    assert math.isnan(recall_at_k(x, np.array([0, 1, 2])))
    assert math.isnan(map_at_r(x, np.array([0, 1, 2])))


def test_map_at_r_truncates_at_r_and_rewards_order():
    from losskit.diagnostics.retrieval import _map_at_r

    rel = np.array([[True, False, True, False], [True, True, False, False],
                    [False, True, True, False]])  # fmt: skip
    r = np.array([2, 2, 3])
    # a hit beyond rank R counts for nothing; the third query: (1/2 + 2/3) / 3
    want = [0.5, 1.0, (1 / 2 + 2 / 3) / 3]
    for i in range(3):
        assert _map_at_r(rel[i : i + 1], r[i : i + 1]) == pytest.approx(want[i])
    assert _map_at_r(rel, r) == pytest.approx(np.mean(want))


def test_normalized_mutual_info_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
        b[:100] = a[:100]
        assert normalized_mutual_info(a, b) == pytest.approx(
            normalized_mutual_info_score(a, b), abs=1e-12
        )
    same = rng.integers(0, 4, 50)
    assert normalized_mutual_info(same, (same + 1) % 4) == pytest.approx(1.0)
    assert normalized_mutual_info(np.zeros(5, int), np.zeros(5, int)) == 1.0
    assert normalized_mutual_info(np.zeros(5, int), np.arange(5)) == normalized_mutual_info_score(
        np.zeros(5, int), np.arange(5)
    )


def test_kmeans_nmi_is_seeded_and_uses_sklearn_kmeans():
    from sklearn.cluster import KMeans

    x, y = _data(n=90, c=3)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    clusters = KMeans(n_clusters=4, n_init=3, random_state=7).fit_predict(z)
    assert kmeans_nmi(x, y, seed=7) == pytest.approx(normalized_mutual_info_score(y, clusters))
    assert kmeans_nmi(x, y, seed=7) == kmeans_nmi(x, y, seed=7)


def test_normalize_false_ranks_by_dot_product():
    # row 1 is long and at 45 degrees, row 2 short and aligned with the query row 0
    x = np.array([[1.0, 0.0], [10.0, 10.0], [0.1, 0.0]])
    y = np.array([0, 1, 0])
    assert recall_at_k(x, y, k=1) == 1.0  # cosine: rows 0 and 2 find each other; 1 is lone
    assert recall_at_k(x, y, k=1, normalize=False) == 0.0


def test_bad_inputs():
    x, y = _data()
    with pytest.raises(ValueError, match="embeddings must have shape"):
        recall_at_k(x[0], y)
    with pytest.raises(ValueError, match="labels must have shape"):
        map_at_r(x, y[:-1])
    with pytest.raises(ValueError, match="labels must hold integer"):
        map_at_r(x, y.astype(float))
    with pytest.raises(ValueError, match="embeddings must be finite"):
        recall_at_k(np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x), y)
    with pytest.raises(ValueError, match="zero row"):
        recall_at_k(np.zeros_like(x), y)
    with pytest.raises(ValueError, match="k must"):
        recall_at_k(x, y, k=len(y))
    with pytest.raises(ValueError, match="k must"):
        recall_at_k(x, y, k=0)
    with pytest.raises(ValueError, match="n_init"):
        kmeans_nmi(x, y, n_init=0)


def test_registered():
    for name in ("recall_at_k", "map_at_r", "kmeans_nmi"):
        entry = losskit.get(name)
        assert entry.kind == "metric" and entry.family == "embedding"


def test_row_chunks_give_the_same_result(monkeypatch):
    import losskit.diagnostics.retrieval as mod

    x, y = _data(n=70)
    whole = retrieval_metrics(x, y)
    monkeypatch.setattr(mod, "_CHUNK", 7 * 70)  # 7 query rows per chunk
    assert retrieval_metrics(x, y) == whole
