"""Aggregate-response losses (paper 48): slow loop references, the exact decomposition
instance = |B| * bag + within-bag scatter, the rho ends, bags of size one, gradcheck,
reductions, bad inputs, modules and registry."""

from __future__ import annotations

import math

import pytest
import torch

from losskit._core.registry import catalog, get
from losskit.labels.aggregate import (
    AggregateBagLoss,
    AggregateInstanceLoss,
    AggregateInterpolatingLoss,
    aggregate_bag_loss,
    aggregate_instance_loss,
    aggregate_interpolating_loss,
    within_bag_scatter,
)

SIZES = [1, 3, 2, 5, 4]  # unequal on purpose


def _data(sizes=SIZES, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    ids = ids[torch.randperm(len(ids), generator=g)]  # bags interleaved
    f = torch.randn(len(ids), generator=g, dtype=dtype)
    ybar = torch.randn(len(sizes), generator=g, dtype=dtype)
    return f, ids, ybar


def _loop(f, ids, ybar, rho):
    """Bag, instance, scatter and interpolating values by plain loops over bags."""
    bag, inst, scatter, interp = [], [None] * len(f), [], []
    for b in range(len(ybar)):
        members = [i for i in range(len(f)) if int(ids[i]) == b]
        mean = sum(f[i] for i in members) / len(members)
        bag.append((ybar[b] - mean) ** 2)
        for i in members:
            inst[i] = (ybar[b] - f[i]) ** 2
        scatter.append(sum((f[i] - mean) ** 2 for i in members))
        interp.append(len(members) * (ybar[b] - mean) ** 2 + rho * scatter[-1])
    return [torch.stack(v) for v in (bag, inst, scatter, interp)]


@pytest.mark.parametrize("rho", [0.0, 0.37, 1.0])
def test_matches_slow_loops_forward_and_gradient(rho):
    f, ids, ybar = _data()
    f.requires_grad_(True)
    bag, inst, scatter, interp = _loop(f, ids, ybar, rho)
    fast = [
        aggregate_bag_loss(f, ids, ybar, reduction="none"),
        aggregate_instance_loss(f, ids, ybar, reduction="none"),
        within_bag_scatter(f, ids, len(ybar)),
        aggregate_interpolating_loss(f, ids, ybar, rho=rho, reduction="none"),
    ]
    for a, b in zip(fast, (bag, inst, scatter, interp), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        (ga,) = torch.autograd.grad(a.sum(), f, retain_graph=True)
        (gb,) = torch.autograd.grad(b.sum(), f, retain_graph=True)
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_loss_is_size_times_bag_loss_plus_within_bag_scatter(seed):
    f, ids, ybar = _data(seed=seed)
    counts = torch.bincount(ids).to(f.dtype)
    inst = aggregate_instance_loss(f, ids, ybar, reduction="none")
    per_bag = torch.zeros(len(ybar), dtype=f.dtype).index_add(0, ids, inst)
    bag = aggregate_bag_loss(f, ids, ybar, reduction="none")
    rhs = counts * bag + within_bag_scatter(f, ids, len(ybar))
    torch.testing.assert_close(per_bag, rhs, rtol=1e-13, atol=1e-13)
    # summed over bags: the instance loss dominates the size-weighted bag loss
    assert float(inst.sum()) >= float((counts * bag).sum())


def test_rho_ends_and_convex_combination():
    f, ids, ybar = _data(seed=3)
    counts = torch.bincount(ids).to(f.dtype)
    bag = aggregate_bag_loss(f, ids, ybar, reduction="none")
    inst = aggregate_instance_loss(f, ids, ybar, reduction="none")
    inst_bag = torch.zeros(len(ybar), dtype=f.dtype).index_add(0, ids, inst)
    at = {r: aggregate_interpolating_loss(f, ids, ybar, rho=r, reduction="none") for r in (0, 1)}
    torch.testing.assert_close(at[0], counts * bag, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(at[1], inst_bag, rtol=1e-13, atol=1e-13)
    rho = 0.3
    mixed = aggregate_interpolating_loss(f, ids, ybar, rho=rho, reduction="none")
    torch.testing.assert_close(mixed, (1 - rho) * counts * bag + rho * inst_bag)
    # "mean": instance mean at rho = 1; bag mean at rho = 0 once bags have equal sizes
    torch.testing.assert_close(
        aggregate_interpolating_loss(f, ids, ybar, rho=1.0), aggregate_instance_loss(f, ids, ybar)
    )
    f, ids, ybar = _data(sizes=[3, 3, 3, 3], seed=4)
    torch.testing.assert_close(
        aggregate_interpolating_loss(f, ids, ybar, rho=0.0), aggregate_bag_loss(f, ids, ybar)
    )


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_bags_of_size_one_all_coincide_with_squared_error(rho):
    g = torch.Generator().manual_seed(5)
    n = 7
    ids = torch.randperm(n, generator=g)
    f = torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    per_bag = torch.zeros(n, dtype=torch.float64).index_add(0, ids, (f - y[ids]) ** 2)
    bag = aggregate_bag_loss(f, ids, y, reduction="none")
    inst = aggregate_instance_loss(f, ids, y, reduction="none")
    interp = aggregate_interpolating_loss(f, ids, y, rho=rho, reduction="none")
    torch.testing.assert_close(bag, per_bag)
    torch.testing.assert_close(interp, per_bag)
    torch.testing.assert_close(inst, (f - y[ids]) ** 2)
    assert float(within_bag_scatter(f, ids, n).abs().max()) == 0.0
    for red in ("mean", "sum"):
        a = aggregate_bag_loss(f, ids, y, reduction=red)
        torch.testing.assert_close(aggregate_instance_loss(f, ids, y, reduction=red), a)
        torch.testing.assert_close(
            aggregate_interpolating_loss(f, ids, y, rho=rho, reduction=red), a
        )


def test_reductions():
    f, ids, ybar = _data(seed=6)
    n = len(f)
    for fn, kw in (
        (aggregate_bag_loss, {}),
        (aggregate_instance_loss, {}),
        (aggregate_interpolating_loss, {"rho": 0.4}),
    ):
        none = fn(f, ids, ybar, reduction="none", **kw)
        torch.testing.assert_close(fn(f, ids, ybar, reduction="sum", **kw), none.sum())
        denom = n if fn is aggregate_interpolating_loss else none.numel()
        torch.testing.assert_close(fn(f, ids, ybar, reduction="mean", **kw), none.sum() / denom)
    assert aggregate_bag_loss(f, ids, ybar, reduction="none").shape == (len(ybar),)
    assert aggregate_instance_loss(f, ids, ybar, reduction="none").shape == (n,)


def test_gradcheck():
    f, ids, ybar = _data(sizes=[2, 1, 3])
    f.requires_grad_(True)
    ybar.requires_grad_(True)
    for fn, kw in (
        (aggregate_bag_loss, {}),
        (aggregate_instance_loss, {}),
        (aggregate_interpolating_loss, {"rho": 0.3}),
    ):
        assert torch.autograd.gradcheck(lambda p, y, fn=fn, kw=kw: fn(p, ids, y, **kw), (f, ybar))
    assert torch.autograd.gradcheck(lambda p: within_bag_scatter(p, ids, 3), (f,))


def test_column_predictions_half_precision_and_dtype():
    f, ids, ybar = _data(seed=7, dtype=torch.float32)
    torch.testing.assert_close(
        aggregate_instance_loss(f[:, None], ids, ybar), aggregate_instance_loss(f, ids, ybar)
    )
    half = aggregate_interpolating_loss(f.half(), ids, ybar, rho=0.5)
    assert half.dtype == torch.float16
    full = aggregate_interpolating_loss(f.half().float(), ids, ybar, rho=0.5)
    torch.testing.assert_close(half.float(), full, rtol=1e-3, atol=1e-3)
    assert aggregate_bag_loss(f.double(), ids, ybar).dtype == torch.float64


@pytest.mark.parametrize(
    "case, match",
    [
        ("out_of_range", "outside"),
        ("negative", "outside"),
        ("empty_bag", "bag 2 is empty"),
        ("length", r"bag_ids must have shape \(6,\)"),
        ("float_ids", "integer"),
        ("nan", "finite"),
        ("empty", "n >= 1"),
        ("responses_2d", "bag_responses must have shape"),
        ("predictions_2d", "predictions must have shape"),
    ],
)
def test_bad_inputs_raise(case, match):
    f = torch.randn(6)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    ybar = torch.randn(3)
    if case == "out_of_range":
        ids = torch.tensor([0, 0, 1, 1, 3, 3])
    elif case == "negative":
        ids = torch.tensor([0, -1, 1, 1, 2, 2])
    elif case == "empty_bag":
        ids = torch.tensor([0, 0, 1, 1, 1, 1])  # bag 2 has a response but no instance
    elif case == "length":
        ids = ids[:5]
    elif case == "float_ids":
        ids = ids.float()
    elif case == "nan":
        f[2] = math.nan
    elif case == "empty":
        f, ids = f[:0], ids[:0]
    elif case == "responses_2d":
        ybar = ybar[None, :].expand(2, 3)
    elif case == "predictions_2d":
        f = f.reshape(3, 2)
    for fn, kw in (
        (aggregate_bag_loss, {}),
        (aggregate_instance_loss, {}),
        (aggregate_interpolating_loss, {"rho": 0.5}),
    ):
        with pytest.raises(ValueError, match=match):
            fn(f, ids, ybar, **kw)


def test_bad_hyperparameters_raise():
    f, ids, ybar = _data()
    for rho in (-0.1, 1.5, math.nan, "a"):
        with pytest.raises(ValueError, match="rho"):
            aggregate_interpolating_loss(f, ids, ybar, rho=rho)
        with pytest.raises(ValueError, match="rho"):
            AggregateInterpolatingLoss(rho)
    with pytest.raises(ValueError, match="reduction"):
        aggregate_bag_loss(f, ids, ybar, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        AggregateInstanceLoss(reduction="avg")
    for num_bags in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_bags"):
            within_bag_scatter(f, ids, num_bags)
    with pytest.raises(ValueError, match="outside"):
        within_bag_scatter(f, ids, 3)  # ids reach bag 4


def test_modules_and_registry():
    f, ids, ybar = _data(seed=8)
    assert AggregateBagLoss()(f, ids, ybar) == aggregate_bag_loss(f, ids, ybar)
    assert AggregateInstanceLoss(reduction="sum")(f, ids, ybar) == aggregate_instance_loss(
        f, ids, ybar, reduction="sum"
    )
    entries = {e.name: e for e in catalog(48, kind="loss")}
    assert set(entries) == {"aggregate_bag", "aggregate_instance", "aggregate_interpolating"}
    assert all(e.family == "aggregate" for e in entries.values())
    module = get("aggregate_interpolating").build(rho=0.25)
    assert isinstance(module, AggregateInterpolatingLoss)
    torch.testing.assert_close(
        module(f, ids, ybar), aggregate_interpolating_loss(f, ids, ybar, rho=0.25)
    )
    assert get("aggregate_bag").function is aggregate_bag_loss
