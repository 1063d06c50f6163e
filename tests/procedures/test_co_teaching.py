"""Co-teaching (paper 12's training half): the schedule, the small-loss selection, forget
rate 0 as plain training, the exchange of selections, the logs, and bad inputs."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit.procedures.co_teaching import (
    co_teaching,
    forget_rate_schedule,
    num_remembered,
    small_loss_indices,
)
from losskit.procedures.nested_dropout import nested_dropout_net

N, D, C = 70, 5, 3


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g), torch.randint(0, C, (N,), generator=g)


def make(seed, nested=False):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(D, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
        nn.Linear(8, C),
    )  # fmt: skip
    if nested:
        return nested_dropout_net(model, sigma=3.0, generator=torch.Generator().manual_seed(seed))
    return model


def linear(seed):
    torch.manual_seed(seed)
    return nn.Linear(D, C)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def train_alone(model, x, y, *, epochs, batch_size, seed):
    """Plain cross-entropy training with co-teaching's documented batch order."""
    opt = sgd(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


def test_schedule_matches_the_formula():
    for tau in (0.0, 0.2, 0.45):
        for tk in (1, 3, 10):
            for t in range(15):
                assert forget_rate_schedule(t, tau, tk) == pytest.approx(min(t / tk * tau, tau))
        assert all(forget_rate_schedule(t, tau, 0) == tau for t in range(5))
    assert forget_rate_schedule(0, 0.3, 5) == 0.0 and forget_rate_schedule(5, 0.3, 5) == 0.3
    ramp = [forget_rate_schedule(t, 0.3, 6) for t in range(7)]
    assert ramp == pytest.approx([t * ramp[1] for t in range(7)])  # linear from 0 up to tau


def test_num_remembered_is_the_exact_floor():
    for rate in ("0", "0.1", "0.2", "0.25", "0.3", "0.4", "0.5", "0.7", "0.71", "0.9", "0.99"):
        for batch in range(1, 130):
            exact = int((1 - Fraction(rate)) * batch)  # floor of a non-negative fraction
            assert num_remembered(batch, float(rate)) == max(1, exact), (rate, batch)


def slow_smallest(losses, keep):
    """Pick the smallest remaining loss ``keep`` times (the earlier sample on ties)."""
    left, picked = list(range(len(losses))), []
    for _ in range(keep):
        best = min(left, key=lambda i: (losses[i], i))
        picked.append(best)
        left.remove(best)
    return sorted(picked)


@pytest.mark.parametrize("seed", range(5))
def test_small_loss_selection_matches_a_loop(seed):
    g = torch.Generator().manual_seed(seed)
    for losses in (torch.rand(23, generator=g), torch.randint(0, 4, (23,), generator=g).float()):
        for keep in (1, 7, 16, 23):
            got = small_loss_indices(losses, keep)
            assert got.tolist() == slow_smallest(losses.tolist(), keep)


@pytest.mark.parametrize("selection", ["train", "eval"])
@pytest.mark.parametrize("nested", [False, True])
def test_forget_rate_zero_is_plain_training(selection, nested):
    x, y = data()
    a, b = make(1, nested), make(2, nested)
    res = co_teaching(a, b, x, y, forget_rate=0.0, num_gradual=3, epochs=3, batch_size=16,
                      seed=5, selection=selection, optimizer=sgd)  # fmt: skip
    assert all(h["kept"] == 1.0 for h in res.history)
    for trained, seed in ((res.model_a, 1), (res.model_b, 2)):
        alone = train_alone(make(seed, nested), x, y, epochs=3, batch_size=16, seed=5)
        ref = alone.state_dict()
        for name, value in trained.state_dict().items():
            assert torch.equal(value, ref[name]), name


@pytest.mark.parametrize("selection", ["train", "eval"])
def test_each_network_steps_on_the_samples_its_peer_kept(selection):
    x, y = data(1)
    clean = y.clone()
    clean[:20] = (y[:20] + 1) % C  # the first 20 observed labels are wrong
    a, b, a0, b0 = linear(3), linear(4), linear(3), linear(4)  # eval = train forward
    res = co_teaching(a, b, x, y, forget_rate=0.3, num_gradual=0, epochs=1, batch_size=N,
                      selection=selection, clean=clean,
                      optimizer=lambda p: torch.optim.SGD(p, lr=0.5))  # fmt: skip
    # the reference: one full-batch SGD step of each network on the samples its peer kept
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    xs, ys, cs = x[idx], y[idx], clean[idx]
    keep = num_remembered(N, 0.3)
    with torch.no_grad():
        kept = {
            m: slow_smallest(F.cross_entropy(net(xs), ys, reduction="none").tolist(), keep)
            for m, net in (("a", a0), ("b", b0))
        }
    for net, peer in ((a0, "b"), (b0, "a")):
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        F.cross_entropy(net(xs[kept[peer]]), ys[kept[peer]]).backward()
        opt.step()
    for got, want in ((res.model_a, a0), (res.model_b, b0)):
        for p, q in zip(got.parameters(), want.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    log = res.history[0]
    assert log["kept"] == keep / N and log["forget_rate"] == 0.3
    for m in ("a", "b"):
        clean_kept = (ys[kept[m]] == cs[kept[m]]).double().mean().item()
        assert log[f"precision_{m}"] == pytest.approx(clean_kept)


def test_kept_fraction_follows_the_schedule_and_evaluate_joins_the_log():
    x, y = data()
    seen = []
    res = co_teaching(
        make(1),
        make(2),
        x,
        y,
        forget_rate=0.4,
        num_gradual=2,
        epochs=4,
        batch_size=32,
        evaluate=lambda a, b, e: seen.append(e) or {"e": e},
    )
    sizes = [32, 32, 6]
    for t, log in enumerate(res.history):
        rate = forget_rate_schedule(t, 0.4, 2)
        assert log["kept"] == sum(num_remembered(s, rate) for s in sizes) / N
        assert log["e"] == t and "precision_a" not in log
    assert seen == [0, 1, 2, 3]


def test_bad_inputs_raise():
    x, y = data()
    a, b = make(1), make(2)
    kw = {"forget_rate": 0.2, "num_gradual": 2, "epochs": 1}
    cases = [
        ((a, a, x, y), kw, "two networks"),
        ((a, nn.Sequential(a[0], nn.Linear(16, C)), x, y), kw, "shared"),
        ((a, b, x, y.float()), kw, "integer"),
        ((a, b, x, y[:-1]), kw, "shape"),
        ((a, b, x, y - 5), kw, "negative"),
        ((a, b, x[:0], y[:0]), kw, "non-empty"),
        ((a, b, x, y), {**kw, "forget_rate": 1.0}, "forget_rate"),
        ((a, b, x, y), {**kw, "forget_rate": -0.1}, "forget_rate"),
        ((a, b, x, y), {**kw, "num_gradual": -1}, "num_gradual"),
        ((a, b, x, y), {**kw, "epochs": 0}, "epochs"),
        ((a, b, x, y), {**kw, "batch_size": 0}, "batch_size"),
        ((a, b, x, y), {**kw, "selection": "best"}, "selection"),
        ((a, b, x, y), {**kw, "optimizer": "adam"}, "optimizer"),
        ((a, b, x, y), {**kw, "clean": y[:3]}, "clean"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            co_teaching(*args, **kwargs)
    with pytest.raises(ValueError, match="keep"):
        small_loss_indices(torch.rand(4), 5)
    with pytest.raises(ValueError, match="losses"):
        small_loss_indices(torch.rand(2, 2), 1)
    with pytest.raises(ValueError, match="epoch"):
        forget_rate_schedule(-1, 0.2, 5)


def test_registered():
    from losskit._core.registry import get

    entry = get("co_teaching")
    assert entry.kind == "procedure" and entry.papers == (12,) and entry.function is co_teaching
