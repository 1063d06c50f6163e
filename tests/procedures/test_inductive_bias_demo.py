"""Network hypothesis ensembles (paper 30) and the inductive-bias demonstration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from losskit.arena.datasets import dataset_available
from losskit.arena.demos import DemoResult, Verdict
from losskit.procedures.network_hypotheses import (
    CNNEnsemble,
    MLPEnsemble,
    fit_ensemble,
    network_hypothesis_errors,
)


def _mlp_member(ens: MLPEnsemble, e: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(zip(ens.weights, ens.biases, strict=True)):
        lin = nn.Linear(w.shape[1], w.shape[2]).double()
        with torch.no_grad():
            lin.weight.copy_(w[e].T)
            lin.bias.copy_(b[e, 0])
        layers += [lin] if i == len(ens.weights) - 1 else [lin, nn.ReLU()]
    return nn.Sequential(*layers)


def _cnn_member(ens: CNNEnsemble, e: int) -> nn.Sequential:
    c1, c2 = ens.w1.shape[2], ens.w2.shape[2]
    net = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, c1, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2, ens.w3.shape[2]),
    ).double()
    with torch.no_grad():
        net[1].weight.copy_(ens.w1[e].T.reshape(c1, 1, 3, 3))
        net[1].bias.copy_(ens.b1[e, 0])
        net[4].weight.copy_(ens.w2[e].reshape(3, 3, c1, c2).permute(3, 2, 0, 1))
        net[4].bias.copy_(ens.b2[e, 0])
        net[7].weight.copy_(ens.w3[e].T)
        net[7].bias.copy_(ens.b3[e, 0])
    return net


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_ensemble_members_equal_plain_torch_networks(kind):
    if kind == "mlp":
        ens = MLPEnsemble(3, 64, 4, (7, 5), seed=1, dtype=torch.float64)
        member = _mlp_member
    else:
        ens = CNNEnsemble(3, 4, (5, 6), seed=1, dtype=torch.float64)
        member = _cnn_member
    x = torch.rand(9, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ens(x)
    assert out.shape == (3, 9, 4)
    for e in range(3):
        torch.testing.assert_close(out[e], member(ens, e)(x), rtol=0, atol=1e-13)


def test_ensemble_training_equals_training_each_member_alone():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(20, 64, dtype=torch.float64, generator=gen)
    y = torch.rand(20, 3, dtype=torch.float64, generator=gen)
    ens = CNNEnsemble(3, 3, (4, 5), seed=3, dtype=torch.float64)
    alone = [_cnn_member(ens, e) for e in range(3)]
    final = fit_ensemble(ens, x, y, steps=8, lr=1e-2)
    for e, net in enumerate(alone):
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(8):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
        torch.testing.assert_close(ens(x)[e], net(x).detach(), rtol=0, atol=1e-10)
        assert final[e].item() == pytest.approx(((net(x) - y) ** 2).mean().item(), abs=1e-10)


def test_network_hypotheses_fit_the_training_set():
    rng = np.random.default_rng(0)
    x = rng.random((30, 64)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    res = network_hypothesis_errors(
        MLPEnsemble(4, 64, 3, (64,)), x, y, x[:10], y[:10], 3, steps=300, lr=1e-2
    )
    assert res.mse.shape == res.error.shape == res.train_mse.shape == (4,)
    assert res.train_mse.max() < 1e-3
    assert res.error.max() == 0.0  # the test points here are training points


def test_bad_inputs_raise_value_error():
    bad = [
        lambda: MLPEnsemble(0, 64, 3),
        lambda: MLPEnsemble(2, 64, 3, (0,)),
        lambda: CNNEnsemble(2, 3, (4,)),
        lambda: CNNEnsemble(2, 3, dtype=torch.float16),
        lambda: CNNEnsemble(2, 3)(torch.zeros(4, 63)),
        lambda: fit_ensemble(MLPEnsemble(2, 4, 2), torch.zeros(3, 4), torch.zeros(3, 2), steps=0),
        lambda: fit_ensemble(MLPEnsemble(2, 4, 2), torch.zeros(3, 4), torch.zeros(3, 2), lr=0.0),
        lambda: fit_ensemble(MLPEnsemble(2, 4, 2), torch.zeros(3, 4), torch.zeros(2, 2)),
        lambda: network_hypothesis_errors(
            MLPEnsemble(2, 4, 2), np.zeros((3, 4)), np.zeros(2, int), np.zeros((1, 4)), [0], 2
        ),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()


def test_demo_runs_quick(tmp_path):
    if not dataset_available("digits"):
        pytest.skip("digits are not available")
    from losskit.procedures.inductive_bias_demo import run

    with pytest.raises(ValueError):
        run(tmp_path, seeds=0, quick=True, data_dir=None)
    res = run(tmp_path, seeds=1, quick=True, data_dir=None)
    assert isinstance(res, DemoResult)
    assert res.name == "inductive_bias" and res.papers == (30,)
    assert "![" in res.markdown and "(inductive_bias_hist.png)" in res.markdown
    assert (tmp_path / "inductive_bias_hist.png").stat().st_size > 0
    assert res.verdicts and all(isinstance(v, Verdict) for v in res.verdicts)
    assert all(v.verdict in ("yes", "no", "tie", "partly") for v in res.verdicts)
    (run0,) = res.data["runs"]
    for space in ("kernel", "mlp", "cnn"):
        for metric in ("mse", "error"):
            rec = run0["spaces"][space][metric]
            ib = [v for v in rec["ib"] if v is not None]
            assert len(ib) == len(run0["eps"][metric])  # the exact tail is always finite
            assert all(a >= b for a, b in zip(ib[1:], ib[:-1], strict=True))  # smaller eps
