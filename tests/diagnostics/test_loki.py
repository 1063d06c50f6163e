import itertools
from collections import deque

import numpy as np
import pytest
import torch

import losskit.diagnostics.loki as loki_module
from losskit._core.registry import get
from losskit.diagnostics.label_metrics import (
    check_label_metric,
    discrete_metric,
    embedding_metric,
    tree_metric,
)
from losskit.diagnostics.loki import (
    expected_squared_distance,
    frechet_variance,
    loki_predict,
    prediction_scores,
)


def random_probs(b, k, seed=0):
    return np.random.default_rng(seed).dirichlet(np.full(k, 0.5), size=b)


def random_metric(n, seed=0, dim=3):
    return embedding_metric(np.random.default_rng(seed).normal(size=(n, dim)))


def random_observed(n, k, seed=0):
    return np.random.default_rng(seed).permutation(n)[:k]  # unsorted on purpose


def slow_variance(p, d, observed):
    b, n = p.shape[0], d.shape[0]
    v = np.zeros((b, n))
    for i in range(b):
        for y in range(n):
            v[i, y] = sum(p[i, k] * d[y, lam] ** 2 for k, lam in enumerate(observed))
    return v


def slow_predict(p, d, observed):
    v = slow_variance(p, d, observed)
    return np.array([min(range(d.shape[0]), key=lambda y, r=r: (r[y], y)) for r in v])


def bfs_distances(parent, labels):
    adj = {}
    for child, par in parent.items():
        if par is not None:
            adj.setdefault(child, []).append(par)
            adj.setdefault(par, []).append(child)
    out = np.zeros((len(labels), len(labels)))
    for i, a in enumerate(labels):
        dist, queue = {a: 0}, deque([a])
        while queue:
            u = queue.popleft()
            for w in adj.get(u, []):
                if w not in dist:
                    dist[w] = dist[u] + 1
                    queue.append(w)
        out[i] = [dist[b] for b in labels]
    return out


def random_tree(n, seed):
    rng = np.random.default_rng(seed)
    return {0: None, **{i: int(rng.integers(0, i)) for i in range(1, n)}}


def two_level(coarse_sizes):
    parent = {"root": None}
    fine = []
    for c, size in enumerate(coarse_sizes):
        parent[f"c{c}"] = "root"
        for j in range(size):
            parent[f"c{c}:f{j}"] = f"c{c}"
            fine.append(f"c{c}:f{j}")
    return parent, fine


def test_discrete_metric_is_argmax_over_observed():
    n, k = 12, 5
    obs = random_observed(n, k, seed=1)
    p = random_probs(300, k, seed=2)
    want = obs[p.argmax(axis=1)]
    np.testing.assert_array_equal(loki_predict(p, discrete_metric(n), obs), want)
    as_function = loki_predict(p, lambda a, b: (a != b).astype(float), obs, num_labels=n)
    np.testing.assert_array_equal(as_function, want)
    assert set(loki_predict(p, discrete_metric(n), obs)) <= set(obs)


def test_one_hot_on_full_label_space_returns_that_class():
    n = 7
    obs = random_observed(n, n, seed=3)  # every label observed, in a shuffled order
    d = random_metric(n, seed=4)  # distinct points: each label is its own nearest point
    assert (d + np.eye(n) > 0).all()
    np.testing.assert_array_equal(loki_predict(np.eye(n), d, obs), obs)


@pytest.mark.parametrize(("n", "k", "b"), [(6, 3, 20), (9, 9, 15), (15, 4, 40)])
def test_vectorised_matches_loop(n, k, b, monkeypatch):
    d, obs, p = random_metric(n, seed=n), random_observed(n, k, seed=k), random_probs(b, k, b)
    np.testing.assert_allclose(frechet_variance(p, d, obs), slow_variance(p, d, obs), atol=1e-12)
    want = slow_predict(p, d, obs)
    np.testing.assert_array_equal(loki_predict(p, d, obs), want)
    monkeypatch.setattr(loki_module, "_CHUNK", 2 * n)  # two rows per chunk
    np.testing.assert_array_equal(loki_predict(p, d, obs), want)


def test_callable_metric_equals_matrix_and_tensors_are_accepted():
    n, k = 10, 4
    pts = np.random.default_rng(5).normal(size=(n, 2))
    d = embedding_metric(pts)
    obs, p = random_observed(n, k, seed=6), random_probs(50, k, seed=7)

    def metric(a, b):
        return np.linalg.norm(pts[a] - pts[b], axis=-1)

    want = loki_predict(p, d, obs)
    np.testing.assert_array_equal(loki_predict(p, metric, obs, num_labels=n), want)
    np.testing.assert_array_equal(loki_predict(torch.from_numpy(p), d, torch.tensor(obs)), want)
    np.testing.assert_allclose(
        frechet_variance(p, metric, obs, num_labels=n), frechet_variance(p, d, obs), atol=1e-12
    )


def test_ties_go_to_the_smallest_label():
    d = discrete_metric(4)
    assert loki_predict(np.array([[0.5, 0.5]]), d, [3, 1])[0] == 1


def test_loki_can_predict_an_unobserved_label_between_observed_ones():
    d = embedding_metric(np.array([[0.0], [1.0], [2.0]]))  # three labels on a line
    pred = loki_predict(np.array([[0.5, 0.5], [0.9, 0.1]]), d, [0, 2])
    np.testing.assert_array_equal(pred, [1, 0])


def test_two_level_tree_never_prefers_an_unobserved_leaf():
    parent, fine = two_level([3, 1, 4, 2, 5])
    d = tree_metric(parent, fine)
    coarse = np.array([f.split(":")[0] for f in fine])
    obs = np.array([0, 1, 5, 6, 10, 12])  # coarse c1 and c3 have no observed fine class
    p = random_probs(400, len(obs), seed=8)
    v = frechet_variance(p, d, obs)
    for y in np.setdiff1d(np.arange(len(fine)), obs):
        mass = p[:, coarse[obs] == coarse[y]].sum(axis=1)
        np.testing.assert_allclose(v[:, y], 4 * mass + 16 * (1 - mass), atol=1e-12)
        assert (v[:, y] > v[:, obs].min(axis=1)).all()
    assert set(loki_predict(p, d, obs)) <= set(obs)


def test_tree_metric_on_a_hierarchy():
    parent, fine = two_level([2, 3])
    d = tree_metric(parent, fine)
    assert d[0, 1] == 2 and d[0, 2] == 4 and d[2, 4] == 2
    with_internal = tree_metric(parent, ["root", "c0", "c0:f1", "c1:f2"])
    np.testing.assert_array_equal(with_internal[0], [0, 1, 2, 2])
    assert with_internal[1, 3] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tree_metric_is_the_path_length_and_a_metric(seed):
    parent = random_tree(14, seed)
    labels = list(np.random.default_rng(seed).permutation(14)[:10])
    d = tree_metric(parent, labels)
    np.testing.assert_array_equal(d, bfs_distances(parent, labels))
    np.testing.assert_array_equal(d, d.T)
    assert (np.diag(d) == 0).all() and (d + np.eye(len(labels)) > 0).all()
    for i, j, k in itertools.product(range(len(labels)), repeat=3):
        assert d[i, k] <= d[i, j] + d[j, k]
    check_label_metric(d)


def test_embedding_metric_matches_loop_and_components():
    e = np.random.default_rng(9).normal(size=(8, 5))
    d = embedding_metric(e)
    slow = np.array([[np.sqrt(((a - b) ** 2).sum()) for b in e] for a in e])
    np.testing.assert_allclose(d, slow, atol=1e-12)
    assert (d == d.T).all() and (np.diag(d) == 0).all()
    np.testing.assert_allclose(embedding_metric(e, components=5), d, atol=1e-10)
    centred = e - e.mean(axis=0)
    top = np.linalg.svd(centred)[2][0]
    coord = centred @ top
    np.testing.assert_allclose(
        embedding_metric(e, components=1), np.abs(coord[:, None] - coord[None]), atol=1e-10
    )


def test_scores_match_loops():
    d = random_metric(9, seed=10)
    rng = np.random.default_rng(11)
    pred, target = rng.integers(0, 9, 60), rng.integers(0, 9, 60)
    sq = [d[a, b] ** 2 for a, b in zip(pred, target, strict=True)]
    assert expected_squared_distance(pred, target, d) == pytest.approx(np.mean(sq))
    scores = prediction_scores(pred, target, d)
    assert scores["accuracy"] == pytest.approx(np.mean(pred == target))
    assert scores["expected_squared_distance"] == pytest.approx(np.mean(sq))
    assert scores["mean_distance"] == pytest.approx(np.mean(np.sqrt(sq)))
    assert expected_squared_distance(target, target, d) == 0.0


def test_registered():
    assert get("loki").papers == (47,)
    assert get("expected_squared_distance").function is expected_squared_distance


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (np.array([[0.5, 0.4, 0.2]]), "sum to 1"),
        (np.array([[1.2, -0.2, 0.0]]), "non-negative"),
        (np.array([[np.nan, 0.5, 0.5]]), "finite"),
        (np.array([0.2, 0.3, 0.5]), r"\[B, K\]"),
        (np.array([["a", "b", "c"]]), "real numbers"),
        (np.full((2, 4), 0.25), "columns"),
    ],
)
def test_bad_probs(probs, match):
    with pytest.raises(ValueError, match=match):
        loki_predict(probs, discrete_metric(5), [0, 2, 4])


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        (np.zeros((3, 4)), "square"),
        (np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.5, 1.0, 0.0]]), "symmetric"),
        (np.array([[0.0, -1.0, 1.0], [-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), "non-negative"),
        (np.ones((3, 3)), "diagonal"),
        (np.array([[0.0, np.inf, 1.0], [np.inf, 0.0, 1.0], [1.0, 1.0, 0.0]]), "finite"),
    ],
)
def test_bad_metric(metric, match):
    with pytest.raises(ValueError, match=match):
        loki_predict(np.array([[0.3, 0.7]]), metric, [0, 1])


@pytest.mark.parametrize(
    ("observed", "match"),
    [([0, 5], r"\[0, 5\)"), ([-1, 2], r"\[0, 5\)"), ([1, 1], "distinct"), ([0.0, 1.0], "integer")],
)
def test_bad_observed(observed, match):
    with pytest.raises(ValueError, match=match):
        loki_predict(np.array([[0.3, 0.7]]), discrete_metric(5), observed)


def test_bad_metric_arguments():
    p = np.array([[0.3, 0.7]])
    with pytest.raises(ValueError, match="num_labels"):
        loki_predict(p, lambda a, b: (a != b) * 1.0, [0, 1])
    with pytest.raises(ValueError, match="num_labels"):
        loki_predict(p, discrete_metric(4), [0, 1], num_labels=5)
    with pytest.raises(ValueError, match="broadcast"):
        loki_predict(p, lambda a, b: np.ones(3), [0, 1], num_labels=4)
    with pytest.raises(ValueError, match="zero at"):
        loki_predict(p, lambda a, b: np.ones(np.broadcast(a, b).shape), [0, 1], num_labels=4)
    with pytest.raises(ValueError, match="same shape"):
        expected_squared_distance([0, 1], [0, 1, 2], discrete_metric(3))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        expected_squared_distance([0, 3], [0, 1], discrete_metric(3))
    with pytest.raises(ValueError, match="num_labels"):
        discrete_metric(0)


def test_bad_trees_and_embeddings():
    with pytest.raises(ValueError, match="one root"):
        tree_metric({"a": None, "b": None}, ["a", "b"])
    with pytest.raises(ValueError, match="one root"):
        tree_metric({"a": "b", "b": "a"}, ["a"])
    with pytest.raises(ValueError, match="cycle"):
        tree_metric({"r": None, "a": "b", "b": "a"}, ["a"])
    with pytest.raises(ValueError, match="unknown"):
        tree_metric({"a": "r"}, ["a", "z"])
    with pytest.raises(ValueError, match="distinct"):
        tree_metric({"a": "r"}, ["a", "a"])
    with pytest.raises(ValueError, match="mapping"):
        tree_metric([None, 0], [0, 1])
    with pytest.raises(ValueError, match="components"):
        embedding_metric(np.eye(3), components=4)
    with pytest.raises(ValueError, match=r"\[N, E\]"):
        embedding_metric(np.ones(3))
