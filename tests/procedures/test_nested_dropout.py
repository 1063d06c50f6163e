"""Nested dropout (paper 12): cut distributions, the expected mask, train/eval behaviour,
cut selection, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from losskit.procedures.nested_dropout import (
    NestedDropout,
    NestedDropoutNet,
    cut_accuracies,
    cut_distribution,
    expected_mask,
    nested_dropout_net,
    prefix_mask,
)


def slow_gaussian(dim, sigma, mu):
    w = [math.exp(-(((k - mu) / sigma) ** 2)) for k in range(1, dim + 1)]
    return np.array(w) / sum(w)


def slow_geometric(dim, p):
    w = [p * (1 - p) ** (k - 1) for k in range(1, dim + 1)]
    return np.array(w) / sum(w)


def slow_expected_mask(probs):
    """E[m_i] = P(k >= i), summed term by term."""
    d = len(probs)
    return np.array([sum(probs[k - 1] for k in range(i, d + 1)) for i in range(1, d + 1)])


@pytest.mark.parametrize(("dim", "sigma", "mu"), [(1, 1.0, 0.0), (7, 2.0, 0.0), (40, 10.0, 3.5)])
def test_gaussian_distribution_matches_formula(dim, sigma, mu):
    q = cut_distribution(dim, sigma=sigma, mu=mu)
    np.testing.assert_allclose(q, slow_gaussian(dim, sigma, mu), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("dim", "p"), [(5, 0.5), (30, 0.1), (64, 0.02)])
def test_geometric_distribution_matches_formula(dim, p):
    q = cut_distribution(dim, distribution="geometric", p=p)
    np.testing.assert_allclose(q, slow_geometric(dim, p), rtol=1e-12)


def test_large_sigma_is_uniform_and_far_mu_still_normalises():
    np.testing.assert_allclose(cut_distribution(50, sigma=1e8), np.full(50, 1 / 50), rtol=1e-9)
    q = cut_distribution(10, sigma=0.5, mu=1e4)  # every exp(-(.)^2) underflows in float64
    assert q.sum() == pytest.approx(1.0) and q.argmax() == 9


@pytest.mark.parametrize("seed", range(4))
def test_expected_mask_matches_loop_and_is_non_increasing(seed):
    rng = np.random.default_rng(seed)
    for q in (
        rng.dirichlet(np.full(12, 0.3)),
        cut_distribution(12, sigma=3.0),
        cut_distribution(12, distribution="geometric", p=0.3),
    ):
        m = expected_mask(q)
        np.testing.assert_allclose(m, slow_expected_mask(q), atol=1e-12)
        assert m[0] == pytest.approx(1.0)
        assert (np.diff(m) <= 1e-15).all()


def test_empirical_mask_is_non_increasing_and_matches_expectation():
    dim, draws = 16, 4000
    layer = NestedDropout(dim, sigma=5.0, generator=torch.Generator().manual_seed(0)).train()
    masks = torch.stack([layer(torch.ones(dim)) for _ in range(draws)]).double()  # one draw each
    for row in masks:  # every draw keeps a prefix: ones then zeros
        k = int(row.sum())
        assert 1 <= k <= dim and torch.equal(row, prefix_mask(k, dim, dtype=torch.float64))
    mean = masks.mean(0).numpy()
    assert (np.diff(mean) <= 0).all()
    np.testing.assert_allclose(mean, expected_mask(layer.probs), atol=0.04)


def test_train_mode_keeps_a_prefix_and_zeroes_its_gradient_tail():
    dim = 10
    layer = NestedDropout(dim, sigma=3.0, generator=torch.Generator().manual_seed(1)).train()
    h = torch.randn(6, dim, dtype=torch.float64, requires_grad=True)
    out = layer(h)
    k = int((out[0] != 0).sum())
    torch.testing.assert_close(out[:, :k], h[:, :k], rtol=0, atol=0)
    assert (out[:, k:] == 0).all()
    out.sum().backward()
    assert (h.grad[:, :k] == 1).all() and (h.grad[:, k:] == 0).all()


def test_eval_mode_is_identity_until_a_cut_is_set():
    layer = NestedDropout(8).eval()
    h = torch.randn(5, 8)
    assert torch.equal(layer(h), h)
    layer.set_cut(3)
    assert torch.equal(layer(h), h * prefix_mask(3, 8))
    layer.set_cut(8)  # k = D leaves h unchanged
    assert torch.equal(layer(h), h)
    assert int(NestedDropout(8).state_dict()["cut"]) == 8


def test_full_cut_in_train_mode_leaves_h_unchanged():
    layer = NestedDropout(4, sigma=1e-3, mu=4.0).train()  # all mass on k = D
    h = torch.randn(3, 4)
    assert torch.equal(layer(h), h)


def test_same_generator_seed_gives_same_draws():
    a = NestedDropout(20, generator=torch.Generator().manual_seed(3))
    b = NestedDropout(20, generator=torch.Generator().manual_seed(3))
    assert [a.sample_cut() for _ in range(50)] == [b.sample_cut() for _ in range(50)]


def test_cut_accuracies_match_a_loop():
    torch.manual_seed(0)
    head = nn.Linear(9, 4)
    feats, y = torch.randn(30, 9), torch.randint(0, 4, (30,))
    fast = cut_accuracies(head, feats, y, chunk=4)
    with torch.no_grad():
        slow = [float((head(feats * prefix_mask(k, 9)).argmax(1) == y).double().mean())
                for k in range(1, 10)]  # fmt: skip
    np.testing.assert_allclose(fast, slow)


def test_select_cut_keeps_the_best_and_smallest_tied_cut():
    torch.manual_seed(0)
    net = nested_dropout_net(nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3)))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    acc = net.select_cut(x, y)
    best = [k for k in range(1, 13) if acc[k - 1] == acc.max()][0]
    assert int(net.nested.cut) == best and net.training
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net.head(net.backbone(x) * prefix_mask(best, 12)))


def test_nested_dropout_net_wraps_a_sequential():
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    net = nested_dropout_net(model, sigma=2.0)
    assert isinstance(net, NestedDropoutNet) and net.nested.dim == 6 and net.head is model[2]
    x = torch.randn(4, 3)
    assert torch.equal(net.eval()(x), model(x))
    with pytest.raises(ValueError, match="Sequential"):
        nested_dropout_net(nn.Linear(3, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 4, "sigma": 0.0}, "sigma"),
        ({"dim": 4, "sigma": float("nan")}, "sigma"),
        ({"dim": 4, "mu": float("inf")}, "mu"),
        ({"dim": 4, "distribution": "geometric", "p": 1.0}, "p"),
        ({"dim": 4, "distribution": "geometric", "p": 0.0}, "p"),
        ({"dim": 4, "distribution": "uniform"}, "distribution"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    dim = kwargs.pop("dim")
    with pytest.raises(ValueError, match=match):
        cut_distribution(dim, **kwargs)
    with pytest.raises(ValueError, match=match):
        NestedDropout(dim, **kwargs)


def test_bad_inputs_raise():
    layer = NestedDropout(4)
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(2, 5))
    for k in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="k must"):
            layer.set_cut(k)
    with pytest.raises(ValueError, match="sum to 1"):
        expected_mask(np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="probs"):
        expected_mask(np.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="features"):
        cut_accuracies(nn.Linear(4, 2), torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        cut_accuracies(nn.Linear(4, 2), torch.randn(3, 4), torch.zeros(2, dtype=torch.long))


def test_registered_with_the_paper_defaults():
    from losskit._core.registry import get

    entry = get("nested_dropout")
    assert entry.kind == "procedure" and entry.papers == (12,) and entry.module is NestedDropout
    layer = entry.build(dim=30)
    np.testing.assert_allclose(layer.probs.numpy(), slow_gaussian(30, 10.0, 0.0), rtol=1e-12)
