"""Paper 55's two-layer MLP: forward pass against the per-neuron formula, the paper's
initialisation, pruning (nothing selected changes nothing, pruned neurons drop out of the
sum), deterministic training, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losskit.diagnostics.grokking import neuron_ipr
from losskit.labels.modular import modular_dataset
from losskit.procedures.modular_mlp import (
    ModularMLP,
    evaluate,
    one_hot_pairs,
    predict,
    prune_neurons,
    pruning_curve,
    train_modular_mlp,
)


def _slow_forward(model: ModularMLP, a: int, b: int, keep: set[int] | None = None) -> np.ndarray:
    """f_q(a, b) = sum_k W_qk phi(U_ka + V_kb) over the kept neurons, by loops."""
    u, v, w = model.weights()
    out = np.zeros(model.p)
    for k in range(model.width):
        if keep is not None and k not in keep:
            continue
        pre = u[k, a] + v[k, b]
        act = pre * pre if model.activation == "quadratic" else max(pre, 0.0)
        out += w[:, k] * act
    return out


@pytest.mark.parametrize("activation", ["quadratic", "relu"])
def test_forward_matches_the_neuron_sum(activation):
    torch.manual_seed(0)
    model = ModularMLP(7, 12, activation=activation).double().eval()
    a, b = np.array([0, 3, 6, 2]), np.array([5, 3, 1, 6])
    with torch.no_grad():
        got = model(one_hot_pairs(a, b, 7).double()).numpy()
    for i in range(4):
        np.testing.assert_allclose(got[i], _slow_forward(model, a[i], b[i]), rtol=1e-10)


def test_one_hot_pairs_and_initial_scale():
    x = one_hot_pairs(np.array([1, 4]), np.array([0, 4]), 5)
    assert x.shape == (2, 10) and x.dtype == torch.float32
    assert x[0].nonzero().flatten().tolist() == [1, 5] and x[1].nonzero().flatten().tolist() == [
        4,
        9,
    ]
    torch.manual_seed(1)
    model = ModularMLP(31, 400)
    std = (16 * 400) ** (-1 / 3)  # N(0, (16 N)^{-2/3})
    for w in (model.fc1.weight, model.fc2.weight):
        assert w.std().item() == pytest.approx(std, rel=0.03)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_pruning_nothing_changes_nothing(batch_norm):
    data = modular_dataset(11, corruption=0.2, seed=0)
    run = train_modular_mlp(data, width=24, batch_norm=batch_norm, steps=20, log_every=10)
    same = prune_neurons(run.model, [])
    assert same is not run.model
    for p1, p2 in zip(run.model.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(p1, p2)
    assert np.array_equal(predict(same, data.a, data.b), predict(run.model, data.a, data.b))
    assert pruning_curve(run.model, data, np.argsort(run.ipr), [0]) == {
        k: [v] for k, v in evaluate(run.model, data).items()
    }


def test_pruned_neurons_leave_the_sum_and_the_original_is_kept():
    torch.manual_seed(2)
    model = ModularMLP(7, 10).double().eval()
    before = model.fc1.weight.clone()
    pruned = prune_neurons(model, np.array([1, 4, 9]))
    assert torch.equal(model.fc1.weight, before)
    u, v, w = pruned.weights()
    assert not u[[1, 4, 9]].any() and not v[[1, 4, 9]].any() and not w[:, [1, 4, 9]].any()
    keep = set(range(10)) - {1, 4, 9}
    with torch.no_grad():
        got = pruned(one_hot_pairs(np.array([2]), np.array([5]), 7).double()).numpy()[0]
    np.testing.assert_allclose(got, _slow_forward(model, 2, 5, keep), rtol=1e-10)
    with torch.no_grad():
        empty = prune_neurons(model, range(10))(
            one_hot_pairs(np.arange(7), np.arange(7), 7).double()
        )
    assert not empty.any()


def test_batch_norm_pruning_removes_the_output_column():
    data = modular_dataset(7, seed=0)
    run = train_modular_mlp(data, width=8, batch_norm=True, steps=10, log_every=10)
    pruned = prune_neurons(run.model, [0, 3]).eval()
    x = one_hot_pairs(data.a, data.b, 7)
    with torch.no_grad():
        model = run.model.eval()
        h = model.norm(model.fc1(x) ** 2)
        h[:, [0, 3]] = 0.0
        torch.testing.assert_close(pruned(x), model.fc2(h))


def test_training_is_deterministic_and_learns_clean_data():
    data = modular_dataset(11, train_fraction=0.8, corruption=0.0, seed=1)
    a = train_modular_mlp(data, width=48, weight_decay=1.0, steps=200, log_every=100, seed=3)
    b = train_modular_mlp(data, width=48, weight_decay=1.0, steps=200, log_every=100, seed=3)
    assert a.steps == [100, 200] and a.history.keys() == b.history.keys()
    for key, values in a.history.items():
        np.testing.assert_array_equal(values, b.history[key])
    assert torch.equal(a.model.fc1.weight, b.model.fc1.weight)
    assert a.final["train"] == 1.0
    np.testing.assert_allclose(a.ipr, neuron_ipr(*a.model.weights()))
    c = train_modular_mlp(data, width=16, dropout=0.3, steps=20, batch_size=16, log_every=20)
    d = train_modular_mlp(data, width=16, dropout=0.3, steps=20, batch_size=16, log_every=20)
    assert torch.equal(c.model.fc2.weight, d.model.fc2.weight)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ModularMLP(1, 4), "p must be"),
        (lambda: ModularMLP(5, 0), "width"),
        (lambda: ModularMLP(5, 4, activation="tanh"), "activation"),
        (lambda: ModularMLP(5, 4, dropout=1.0), "dropout"),
        (lambda: train_modular_mlp(modular_dataset(5), steps=0), "steps"),
        (lambda: train_modular_mlp(modular_dataset(5), weight_decay=-1.0), "weight_decay"),
        (lambda: train_modular_mlp(modular_dataset(5), lr=0.0), "lr"),
        (lambda: train_modular_mlp(modular_dataset(5), batch_size=100), "batch_size"),
        (lambda: train_modular_mlp(modular_dataset(5), log_every=0), "log_every"),
        (lambda: train_modular_mlp(modular_dataset(5), batch_norm=True, batch_size=1), "batch"),
        (lambda: prune_neurons(ModularMLP(5, 4), [4]), "neurons"),
        (lambda: prune_neurons(ModularMLP(5, 4), [-1]), "neurons"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
