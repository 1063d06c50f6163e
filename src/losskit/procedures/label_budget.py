"""Label quantity vs quality under a fixed budget (paper 54, Mallen et al.).

Labels come in two kinds: *weak* ones (cheap and noisy, e.g. predictions of a small model),
costing ``c_w`` each, and *strong* ones (expensive and accurate: gold labels), costing ``c_s``
each. A total budget ``B`` buys any split ``(n_weak, n_strong)`` with
``n_weak c_w + n_strong c_s <= B``. Spending a fraction ``f`` of the budget on strong labels
gives (as in the paper's cost sweep, up to integer floors)::

    n_strong = floor(f B / c_s),    n_weak = floor((B - n_strong c_s) / c_w).

The student is trained with the paper's *sequential* protocol: stage 1 on the weak labels,
then stage 2 continues from the stage-1 weights on the strong labels (all parameters
trainable). Weak and strong labels go to disjoint examples of the pool. The paper fine-tunes
language models and optionally adds a few-shot prompt; here the student is a small head
(logistic regression, or a one-hidden-layer MLP) on fixed features, trained full-batch with
Adam, and the few-shot prompt has no counterpart (a small head has no context to put
demonstrations in), so it is left out.

:func:`pareto_frontier` returns the non-dominated ``(cost, accuracy)`` points: a point is
dominated when another costs no more and is no less accurate, and is strictly better in one.

The TREC-6 demonstration is :mod:`losskit.procedures.label_budget_demo`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from losskit._core.checks import check_number


def _count(name: str, value: int, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def budget_grid(
    budget: float, weak_cost: float, strong_cost: float, fractions: Sequence[float]
) -> list[tuple[int, int]]:
    """The splits ``(n_weak, n_strong)`` bought by spending each fraction ``f`` of ``budget``
    on strong labels and the rest on weak ones (formula in the module docstring); every split
    satisfies ``n_weak * weak_cost + n_strong * strong_cost <= budget``."""
    b = check_number("budget", budget, low=0.0, low_open=True)
    cw = check_number("weak_cost", weak_cost, low=0.0, low_open=True, high=1e300)
    cs = check_number("strong_cost", strong_cost, low=0.0, low_open=True, high=1e300)
    if len(fractions) == 0:
        raise ValueError("fractions must not be empty")
    out = []
    for f in fractions:
        f = check_number("fractions", f, low=0.0, high=1.0)
        n_strong = math.floor(f * b / cs)
        n_weak = math.floor((b - n_strong * cs) / cw)
        out.append((n_weak, n_strong))
    return out


def pareto_frontier(costs: Sequence[float], accuracies: Sequence[float]) -> np.ndarray:
    """Indices (sorted by cost, then index) of the points not dominated by another point:
    ``j`` dominates ``i`` when ``cost_j <= cost_i``, ``acc_j >= acc_i`` and one is strict.
    Equal points do not dominate each other, so both are kept."""
    c = np.asarray(costs, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if c.ndim != 1 or c.shape != a.shape or c.size == 0:
        raise ValueError(
            f"costs and accuracies must be non-empty 1-D arrays of one length, got shapes "
            f"{c.shape} and {a.shape}"
        )
    if not (np.isfinite(c).all() and np.isfinite(a).all()):
        raise ValueError("costs and accuracies must be finite")
    order = np.lexsort((np.arange(c.size), -a, c))  # by cost, then accuracy descending
    keep, best, start = [], -math.inf, 0
    while start < order.size:
        stop = start
        while stop < order.size and c[order[stop]] == c[order[start]]:
            stop += 1
        group = order[start:stop]
        top = a[group[0]]
        if top > best:
            keep.extend(int(i) for i in group if a[i] == top)
            best = top
        start = stop
    return np.asarray(keep, dtype=np.int64)


def make_head(in_features: int, num_classes: int, *, hidden: int = 0, seed: int = 0) -> nn.Module:
    """A logistic head (``hidden = 0``) or an MLP with one ReLU layer of ``hidden`` units,
    initialised deterministically from ``seed``."""
    _count("in_features", in_features, 1)
    _count("num_classes", num_classes, 2)
    _count("hidden", hidden)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if hidden == 0:
            return nn.Linear(in_features, num_classes)
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )


def fit_head(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
) -> nn.Module:
    """Full-batch Adam on the cross-entropy of ``model(x)`` against ``y``, in place (a fresh
    optimiser each call, so a second call is a new training stage). Nothing happens when
    ``x`` is empty."""
    _count("steps", steps)
    check_number("lr", lr, low=0.0, low_open=True)
    check_number("weight_decay", weight_decay, low=0.0)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if xt.ndim != 2 or yt.shape != (xt.shape[0],):
        raise ValueError(f"x must be [N, D] and y [N], got {tuple(xt.shape)} and {tuple(yt.shape)}")
    if xt.shape[0] == 0:
        return model
    if not torch.isfinite(xt).all():
        raise ValueError("x must be finite")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows of ``x`` whose arg-max prediction equals ``y``."""
    with torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(x, dtype=np.float32))).argmax(1).numpy()
    return float((pred == np.asarray(y)).mean())


def split_train(
    x_pool: np.ndarray,
    y_gold: np.ndarray,
    y_weak: np.ndarray,
    n_weak: int,
    n_strong: int,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int,
    seed: int = 0,
    hidden: int = 0,
    steps: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
) -> float:
    """Test accuracy of the sequentially trained student for one split.

    A seeded permutation of the pool gives the strong examples (its first ``n_strong``, with
    ``y_gold``) and the disjoint weak ones (the next ``n_weak``, with ``y_weak``); the head
    from :func:`make_head` is trained by :func:`fit_head` on the weak set, then on the strong
    set.
    """
    n = len(x_pool)
    if len(y_gold) != n or len(y_weak) != n:
        raise ValueError(
            f"x_pool, y_gold and y_weak must have one length, got {n}, {len(y_gold)}, {len(y_weak)}"
        )
    n_weak, n_strong = _count("n_weak", n_weak), _count("n_strong", n_strong)
    if n_weak + n_strong > n:
        raise ValueError(f"n_weak + n_strong must be <= the pool size {n}, got {n_weak + n_strong}")
    if n_weak + n_strong == 0:
        raise ValueError("n_weak + n_strong must be > 0")
    for name, y in (("y_gold", y_gold), ("y_weak", y_weak), ("y_test", y_test)):
        y = np.asarray(y)
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must hold class ids in [0, {num_classes})")
    x_pool = np.asarray(x_pool)
    perm = np.random.default_rng(seed).permutation(n)
    strong, weak = perm[:n_strong], perm[n_strong : n_strong + n_weak]
    model = make_head(x_pool.shape[1], num_classes, hidden=hidden, seed=seed)
    kw = {"steps": steps, "lr": lr, "weight_decay": weight_decay}
    fit_head(model, x_pool[weak], np.asarray(y_weak)[weak], **kw)
    fit_head(model, x_pool[strong], np.asarray(y_gold)[strong], **kw)
    return accuracy(model, x_test, y_test)
