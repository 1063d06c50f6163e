"""The interpolating linear estimator (paper 48): its ends are the two least-squares fits,
it is a stationary point of the torch interpolating loss, instance level shrinks the slope
by 1/k on random bags while bag level is unbiased, and cross-validation over bags against a
loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losskit.labels.aggregate import aggregate_interpolating_loss
from losskit.labels.aggregate_linear import cross_validate_rho, fit_aggregate_linear
from losskit.labels.bags import bag_folds, bag_responses, random_bags


def _problem(n=60, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + 0.5 + rng.normal(size=n)
    ids = random_bags(n, k, seed=seed)
    return x, ids, bag_responses(y, ids)


def _ones(x):
    return np.hstack([x, np.ones((len(x), 1))])


def _bag_means(x, ids):
    return np.stack([x[ids == b].mean(0) for b in range(ids.max() + 1)])


def test_rho_one_is_least_squares_on_instances():
    x, ids, ybar = _problem(k=4)
    fit = fit_aggregate_linear(x, ids, ybar, rho=1.0)
    ref = np.linalg.lstsq(_ones(x), ybar[ids], rcond=None)[0]
    np.testing.assert_allclose(np.r_[fit.coef, fit.intercept], ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    "k", [3, 20]
)  # k = 3: 20 bags > 5 parameters; k = 20: 3 bags, minimum norm
def test_rho_zero_is_weighted_least_squares_on_bags(k):
    x, ids, ybar = _problem(k=k)
    fit = fit_aggregate_linear(x, ids, ybar, rho=0.0)
    root = np.sqrt(np.bincount(ids))[:, None]
    ref = np.linalg.pinv(root * _ones(_bag_means(x, ids))) @ (root[:, 0] * ybar)
    np.testing.assert_allclose(np.r_[fit.coef, fit.intercept], ref, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("rho, ridge", [(0.3, 0.0), (0.0, 0.5), (1.0, 2.0)])
def test_fit_is_a_stationary_point_of_the_torch_loss(rho, ridge):
    x, ids, ybar = _problem(k=5, seed=1)
    fit = fit_aggregate_linear(x, ids, ybar, rho=rho, ridge=ridge)
    w = torch.tensor(fit.coef, requires_grad=True)
    c = torch.tensor(fit.intercept, dtype=torch.float64, requires_grad=True)
    pred = torch.as_tensor(x) @ w + c
    loss = aggregate_interpolating_loss(
        pred, torch.as_tensor(ids), torch.as_tensor(ybar), rho=rho, reduction="sum"
    )
    (loss + ridge * (w**2).sum()).backward()
    assert float(w.grad.abs().max()) < 1e-9 and abs(float(c.grad)) < 1e-9


def test_bags_of_size_one_give_ordinary_least_squares_for_every_rho():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    ids = random_bags(30, 1, seed=3)
    ref = np.linalg.lstsq(_ones(x), y, rcond=None)[0]
    for rho in (0.0, 0.5, 1.0):
        fit = fit_aggregate_linear(x, ids, bag_responses(y, ids), rho=rho)
        np.testing.assert_allclose(np.r_[fit.coef, fit.intercept], ref, rtol=1e-9, atol=1e-10)


def test_instance_level_shrinks_by_bag_size_and_bag_level_is_unbiased():
    # centred independent features, random bags of size k: E[x_i ybar_b] = Sigma w / k, so the
    # instance-level slope tends to w / k; the bag-level fit regresses ybar_b = xbar_b^T w +
    # noise and is unbiased.
    n, d, k = 40000, 3, 4
    rng = np.random.default_rng(4)
    w = np.array([1.0, -2.0, 0.5])
    x = rng.normal(size=(n, d))
    ids = random_bags(n, k, seed=5)
    ybar = bag_responses(x @ w + rng.normal(size=n), ids)
    inst = fit_aggregate_linear(x, ids, ybar, rho=1.0)
    bag = fit_aggregate_linear(x, ids, ybar, rho=0.0)
    # standard errors: about sqrt(Var(ybar) / n) and sqrt(k * sigma^2 / n) per coefficient
    np.testing.assert_allclose(inst.coef, w / k, atol=6 * np.sqrt((w @ w / k + 1 / k) / n))
    np.testing.assert_allclose(bag.coef, w, atol=6 * np.sqrt(k / n))


def test_cross_validation_matches_a_loop():
    x, ids, ybar = _problem(n=90, k=3, seed=6)
    rhos = (0.0, 0.1, 1.0)
    best, losses = cross_validate_rho(x, ids, ybar, rhos, folds=4, seed=7)
    fold = bag_folds(ids.max() + 1, 4, seed=7)
    slow = np.zeros(3)
    for f in range(4):
        train = np.flatnonzero(fold != f)
        rows = np.flatnonzero(np.isin(ids, train))
        renum = {b: j for j, b in enumerate(train)}
        sub = np.array([renum[b] for b in ids[rows]])
        for j, rho in enumerate(rhos):
            fit = fit_aggregate_linear(x[rows], sub, ybar[train], rho=rho)
            for b in np.flatnonzero(fold == f):
                members = ids == b
                slow[j] += members.sum() * (ybar[b] - fit.predict(x[members]).mean()) ** 2
    np.testing.assert_allclose(losses, slow / len(ids), rtol=1e-9)
    assert best == rhos[int(np.argmin(slow))]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, i, y: fit_aggregate_linear(x, i, y, rho=1.2), "rho"),
        (lambda x, i, y: fit_aggregate_linear(x, i, y, rho=0.5, ridge=-1), "ridge"),
        (lambda x, i, y: fit_aggregate_linear(x, i, y[:-1], rho=0.5), "bag_responses"),
        (lambda x, i, y: fit_aggregate_linear(x[:-1], i, y, rho=0.5), "entries"),
        (lambda x, i, y: fit_aggregate_linear(x[:, 0], i, y, rho=0.5), "x must"),
        (lambda x, i, y: cross_validate_rho(x, i, y, []), "rhos"),
        (lambda x, i, y: cross_validate_rho(x, i, y, [0.5, -0.5]), "rhos"),
    ],
)
def test_bad_inputs_raise(call, match):
    x, ids, ybar = _problem()
    with pytest.raises(ValueError, match=match):
        call(x, ids, ybar)


def test_registered():
    from losskit._core.registry import get

    assert get("aggregate_linear").function is fit_aggregate_linear
    assert get("aggregate_rho_cv").function is cross_validate_rho
    assert get("aggregate_linear").family == "aggregate"
