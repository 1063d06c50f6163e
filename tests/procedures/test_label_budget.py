import numpy as np
import pytest

from losskit.procedures.label_budget import (
    accuracy,
    budget_grid,
    fit_head,
    make_head,
    pareto_frontier,
    split_train,
)


def brute_frontier(costs, accs):
    keep = []
    for i in range(len(costs)):
        dominated = False
        for j in range(len(costs)):
            no_worse = costs[j] <= costs[i] and accs[j] >= accs[i]
            better = costs[j] < costs[i] or accs[j] > accs[i]
            if no_worse and better:
                dominated = True
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (costs[i], i))


@pytest.mark.parametrize("seed", range(30))
def test_pareto_frontier_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    costs = rng.integers(0, 6, size=n).astype(float)  # many ties in cost
    accs = rng.integers(0, 5, size=n) / 4  # and in accuracy
    got = pareto_frontier(costs, accs)
    assert got.tolist() == brute_frontier(costs, accs)
    assert np.all(np.diff(costs[got]) >= 0) and np.all(np.diff(accs[got]) >= 0)


def test_pareto_frontier_bad_inputs():
    with pytest.raises(ValueError, match="costs and accuracies"):
        pareto_frontier([1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="costs and accuracies"):
        pareto_frontier([], [])
    with pytest.raises(ValueError, match="finite"):
        pareto_frontier([1.0, np.nan], [0.5, 0.6])


@pytest.mark.parametrize("budget", [1, 7.5, 100, 1000, 4096])
@pytest.mark.parametrize("costs", [(1.0, 10.0), (0.1, 1.0), (3.0, 7.0)])
def test_budget_grid_feasible_and_tight(budget, costs):
    cw, cs = costs
    fractions = [0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0]
    grid = budget_grid(budget, cw, cs, fractions)
    assert len(grid) == len(fractions)
    for (n_weak, n_strong), f in zip(grid, fractions, strict=True):
        spent = n_weak * cw + n_strong * cs
        assert spent <= budget + 1e-9
        assert budget - spent < cw + 1e-9  # one more weak label would not fit
        assert n_strong * cs <= f * budget + 1e-9 < (n_strong + 1) * cs
    assert grid[0] == (int(np.floor(budget / cw + 1e-12)), 0)


def test_budget_grid_bad_inputs():
    with pytest.raises(ValueError, match="budget"):
        budget_grid(0, 1, 10, [0.5])
    with pytest.raises(ValueError, match="weak_cost"):
        budget_grid(10, -1, 10, [0.5])
    with pytest.raises(ValueError, match="strong_cost"):
        budget_grid(10, 1, float("nan"), [0.5])
    with pytest.raises(ValueError, match="fractions"):
        budget_grid(10, 1, 10, [1.5])
    with pytest.raises(ValueError, match="fractions"):
        budget_grid(10, 1, 10, [])


def _toy(seed=0, n=120, d=5, c=3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * 2
    y = rng.integers(0, c, size=n)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    return x, y


def test_all_strong_equals_plain_gold_training():
    x, y = _toy()
    x_test, y_test = _toy(1, n=60)
    y_weak = (y + 1) % 3  # all wrong: must not matter when no weak label is bought
    for hidden in (0, 8):
        got = split_train(
            x, y, y_weak, 0, 50, x_test, y_test, num_classes=3, seed=4, hidden=hidden, steps=50
        )
        perm = np.random.default_rng(4).permutation(len(x))[:50]
        plain = fit_head(make_head(5, 3, hidden=hidden, seed=4), x[perm], y[perm], steps=50)
        assert got == accuracy(plain, x_test, y_test)


def test_sequential_is_weak_stage_then_strong_stage():
    x, y = _toy()
    x_test, y_test = _toy(1, n=60)
    y_weak = np.where(np.arange(len(y)) % 4 == 0, (y + 1) % 3, y)
    got = split_train(x, y, y_weak, 40, 20, x_test, y_test, num_classes=3, seed=2, steps=30)
    perm = np.random.default_rng(2).permutation(len(x))
    model = make_head(5, 3, seed=2)
    fit_head(model, x[perm[20:60]], y_weak[perm[20:60]], steps=30)
    fit_head(model, x[perm[:20]], y[perm[:20]], steps=30)
    assert got == accuracy(model, x_test, y_test)


def test_split_train_bad_inputs():
    x, y = _toy()
    args = (x, y, y)
    kw = {"num_classes": 3, "steps": 1}
    with pytest.raises(ValueError, match="pool size"):
        split_train(*args, 100, 21, x, y, **kw)
    with pytest.raises(ValueError, match="n_weak"):
        split_train(*args, -1, 2, x, y, **kw)
    with pytest.raises(ValueError, match="> 0"):
        split_train(*args, 0, 0, x, y, **kw)
    with pytest.raises(ValueError, match="one length"):
        split_train(x, y, y[:-1], 1, 1, x, y, **kw)
    with pytest.raises(ValueError, match="y_weak"):
        split_train(x, y, y + 5, 1, 1, x, y, **kw)
    with pytest.raises(ValueError, match="hidden"):
        make_head(5, 3, hidden=-1)
    with pytest.raises(ValueError, match="lr"):
        fit_head(make_head(5, 3), x, y, lr=0.0)
