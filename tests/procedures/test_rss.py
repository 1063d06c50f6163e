"""RSS (paper 41): the robust loss, the self-labelled regulariser against a per-sample loop,
its limits, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit.procedures.imbalance_recipes import fit_classifier
from losskit.procedures.rss import (
    adversarial_inputs,
    robust_loss,
    rss_regularizer,
    rss_training,
)


def _mlp(seed=0, d=5, c=3, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, c)).to(dtype)


def _data(n=20, n_pool=30, d=5, c=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return (
        x,
        torch.randint(0, c, (n,), generator=g),
        torch.randn(n_pool, d, generator=g, dtype=dtype),
    )


def _slow_regularizer(model, xu, gamma, steps, alpha):
    """One sample at a time: self-label, ascend, evaluate phi; the mean over samples."""
    phis = []
    for row in xu:
        x0 = row[None]
        with torch.no_grad():
            label = model(x0).argmax(1)
        z = x0.clone()
        for t in range(steps):
            z = z.detach().requires_grad_(True)
            value = F.cross_entropy(model(z), label) - gamma * ((z - x0) ** 2).sum()
            (grad,) = torch.autograd.grad(value, z)
            z = z + alpha / (t + 1) * grad
        z = z.detach()
        phis.append(F.cross_entropy(model(z), label) - gamma * ((z - x0) ** 2).sum())
    return torch.stack(phis).mean()


@pytest.mark.parametrize(("gamma", "steps", "alpha"), [(0.7, 4, None), (3.0, 10, 0.05)])
def test_regularizer_matches_per_sample_loop(gamma, steps, alpha):
    _, _, xu = _data(dtype=torch.float64)
    model = _mlp(dtype=torch.float64)
    fast = rss_regularizer(model, xu, gamma=gamma, steps=steps, step_size=alpha)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()))
    slow = _slow_regularizer(model, xu, gamma, steps, 1 / (2 * gamma) if alpha is None else alpha)
    slow_grads = torch.autograd.grad(slow, list(model.parameters()))
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_infinite_gamma_or_no_steps_is_the_plain_loss():
    x, y, _ = _data(dtype=torch.float64)
    model = _mlp(dtype=torch.float64)
    plain = F.cross_entropy(model(x), y, reduction="none")
    for gamma, steps in ((math.inf, 10), (2.0, 0)):
        got = robust_loss(model, x, y, gamma=gamma, steps=steps, reduction="none")
        torch.testing.assert_close(got, plain, rtol=0, atol=0)
    huge = robust_loss(model, x, y, gamma=1e7, reduction="none")
    torch.testing.assert_close(huge, plain, rtol=1e-6, atol=1e-9)
    total = robust_loss(model, x, y, gamma=math.inf, reduction="sum")
    torch.testing.assert_close(total, plain.sum())


def test_ascent_raises_the_loss_for_a_concave_inner_problem():
    # Linear model with small weights and gamma = 2: l(Z) - gamma c(Z, X) is concave in Z and
    # the step 1 / (2 gamma) does not overshoot, so phi >= l(X) sample-wise, and phi shrinks
    # towards l(X) as gamma grows.
    x, y, _ = _data(dtype=torch.float64)
    torch.manual_seed(1)
    model = nn.Linear(5, 3).double()
    with torch.no_grad():
        model.weight.mul_(0.5)
    plain = F.cross_entropy(model(x), y, reduction="none")
    phis = [robust_loss(model, x, y, gamma=g, reduction="none").detach() for g in (2, 8, 32)]
    assert bool((phis[0] >= plain).all()) and bool((phis[0] > plain).any())
    assert bool((phis[0] >= phis[1]).all()) and bool((phis[1] >= phis[2]).all())


def test_adversarial_inputs_leave_model_state_alone():
    x, y, _ = _data()
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    z = adversarial_inputs(model, x, y, gamma=1.0, steps=3)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert z.shape == x.shape and not z.requires_grad and not torch.equal(z, x)


def _jitter(x, g):
    return x + 0.1 * torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("augment", [None, _jitter])
def test_lambda_zero_and_infinite_gamma_is_plain_supervised_training(augment):
    x, y, xu = _data()
    a, b = _mlp(), _mlp()
    kw = dict(epochs=3, batch_size=6, seed=4, augment=augment)
    history = rss_training(a, x, y, xu, lam=0.0, gamma=math.inf, gamma_unlabeled=math.inf, **kw)
    fit_classifier(b, x, y, **kw)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert [h["lam"] for h in history] == [0.0] * 3
    c = _mlp()
    rss_training(c, x, y, xu, lam=1.0, gamma=math.inf, gamma_unlabeled=math.inf, **kw)
    assert not torch.allclose(c[0].weight, a[0].weight)


def test_warmup_and_evaluate():
    x, y, xu = _data()
    model = _mlp()
    history = rss_training(model, x, y, xu, lam=0.5, warmup_epochs=2, epochs=4, steps=2,
                           evaluate=lambda m, e: {"twice": 2 * e})  # fmt: skip
    assert [h["lam"] for h in history] == [0.0, 0.0, 0.5, 0.5]
    assert [h["twice"] for h in history] == [0, 2, 4, 6]
    assert all(math.isfinite(h["labelled"]) and math.isfinite(h["unlabeled"]) for h in history)


def test_bad_inputs_raise():
    x, y, xu = _data()
    m = _mlp()
    with pytest.raises(ValueError, match="gamma"):
        robust_loss(m, x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="steps"):
        robust_loss(m, x, y, gamma=1.0, steps=-1)
    with pytest.raises(ValueError, match="step_size"):
        robust_loss(m, x, y, gamma=1.0, step_size=0.0)
    with pytest.raises(ValueError, match="step_size is required"):
        robust_loss(m, x, y, gamma=0.0)
    assert torch.isfinite(robust_loss(m, x, y, gamma=0.0, step_size=0.01))
    with pytest.raises(ValueError, match="reduction"):
        robust_loss(m, x, y, gamma=1.0, reduction="avg")
    with pytest.raises(ValueError, match="finite"):
        rss_regularizer(m, xu.clone().fill_(float("inf")), gamma=1.0)
    with pytest.raises(ValueError, match="lam"):
        rss_training(m, x, y, xu, lam=-0.1)
    with pytest.raises(ValueError, match="gamma_unlabeled"):
        rss_training(m, x, y, xu, gamma_unlabeled=float("nan"))
    with pytest.raises(ValueError, match="x_unlabeled rows"):
        rss_training(m, x, y, xu[:, :3])
    with pytest.raises(ValueError, match="x_unlabeled is empty"):
        rss_training(m, x, y, xu[:0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        rss_training(m, x, y + 5, xu)
    with pytest.raises(ValueError, match="warmup_epochs"):
        rss_training(m, x, y, xu, warmup_epochs=-1)
    with pytest.raises(ValueError, match="evaluate"):
        rss_training(m, x, y, xu, evaluate="yes")
    with pytest.raises(ValueError, match="C >= 2"):
        rss_training(nn.Linear(5, 1), x, y * 0, xu)
