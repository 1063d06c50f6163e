import functools
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from losskit._core.registry import get
from losskit.procedures.active_distillation import (
    _systematic,
    active_distillation,
    margin_select,
    rad_inclusion,
    rad_probabilities,
    rad_select,
    random_select,
    student_gains,
)


def random_probs(n, c=4, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, c, generator=g, dtype=torch.float64), 1)


def slow_worst_case(pi, g, k):
    """Brute force over every set of k points the adversary can make wrong (integer k)."""
    n = len(g)
    return min(
        sum(pi[i] * g[i] for i in range(n) if i not in wrong)
        for wrong in itertools.combinations(range(n), k)
    )


def lp_game_value(g, budget, k):
    """max_pi min_c sum pi_i g_i (1 - c_i) as one LP (the top-k sum in its dual form)."""
    from scipy.optimize import linprog

    n = g.size
    cost = np.concatenate([-g, [k], np.ones(n)])  # variables: pi, lambda, mu
    a_ub = np.zeros((n, 2 * n + 1))
    a_ub[np.arange(n), np.arange(n)] = g
    a_ub[:, n] = -1.0
    a_ub[np.arange(n), n + 1 + np.arange(n)] = -1.0
    a_eq = np.concatenate([np.ones(n), np.zeros(n + 1)])[None]
    bounds = [(0, 1)] * n + [(0, None)] * (n + 1)
    res = linprog(cost, a_ub, np.zeros(n), a_eq, [budget], bounds=bounds, method="highs")
    return -res.fun


@pytest.mark.parametrize(("n", "budget", "k"), [(6, 1, 2), (7, 3, 1), (8, 2, 4), (8, 5, 3)])
def test_inclusion_solves_the_game(n, budget, k):
    g = np.random.default_rng(n * 10 + budget).uniform(0.05, 1.0, n)
    pi = rad_inclusion(g, budget, k)
    assert pi.sum() == pytest.approx(budget) and pi.min() >= 0 and pi.max() <= 1 + 1e-12
    value = slow_worst_case(pi, g, k)
    assert value == pytest.approx(lp_game_value(g, budget, k), abs=1e-9)
    rng = np.random.default_rng(0)  # no other feasible strategy does better
    for _ in range(200):
        other = rng.dirichlet(np.ones(n)) * budget
        if other.max() <= 1:
            assert slow_worst_case(other, g, k) <= value + 1e-9


def test_fractional_mistakes_match_lp():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(3, 25))
        g, b, k = rng.uniform(0, 1, n).round(1), int(rng.integers(1, n)), rng.uniform(0, n / 2)
        pi = rad_inclusion(g, b, k)
        q = np.sort(pi * g)[::-1]
        spoiled = q[: int(k)].sum() + (k - int(k)) * q[int(k)]
        assert q.sum() - spoiled == pytest.approx(lp_game_value(g, b, k), abs=1e-8)


def test_single_query_is_the_inverse_gain_equaliser():
    rng = np.random.default_rng(1)
    for _ in range(20):
        g, k = rng.uniform(0.05, 1.0, 12), float(rng.uniform(0, 8))
        gs = np.sort(g)[::-1]
        s = np.cumsum(1 / gs)
        m = int(np.argmax((np.arange(1, 13) - k) / s)) + 1
        expected = np.where(g >= gs[m - 1], 1 / g, 0.0) / s[m - 1]
        np.testing.assert_allclose(rad_inclusion(g, 1, k), expected, atol=1e-9)


def test_no_mistakes_is_margin_sampling():
    g = np.random.default_rng(2).uniform(0, 1, 30)
    top = np.zeros(30)
    top[np.argsort(-g)[:7]] = 1
    np.testing.assert_allclose(rad_inclusion(g, 7, 0.0), top, atol=1e-12)
    np.testing.assert_allclose(rad_inclusion(g, 7, 1e-9), top, atol=1e-6)
    s = random_probs(40)
    confident = torch.eye(4, dtype=torch.float64)[torch.arange(40) % 4]  # k = 0
    for seed in range(3):
        np.testing.assert_array_equal(
            rad_select(s, confident, 9, seed=seed), margin_select(s, None, 9, seed=seed)
        )


def test_more_expected_mistakes_spread_the_queries():
    """A larger k widens the support and lowers the most informative point's probability (the
    adversary's first target)."""
    g = np.random.default_rng(4).uniform(0.1, 1, 50)
    support, first = [], []
    for k in np.linspace(0.0, 30.0, 16):
        pi = rad_inclusion(g, 5, k)
        support.append(int((pi > 1e-9).sum()))
        first.append(pi[np.argmax(g)])
    assert support == sorted(support) and support[0] == 5 and support[-1] > 20
    assert all(a >= b - 1e-9 for a, b in zip(first, first[1:], strict=False))
    assert first[0] == pytest.approx(1.0) and first[-1] < 0.5


def test_systematic_sampling_has_the_inclusion_probabilities():
    pi = rad_inclusion(np.random.default_rng(5).uniform(0.1, 1, 15), 4, 3.0)
    counts = np.zeros(15)
    for seed in range(3000):
        chosen = _systematic(pi, 4, np.random.default_rng(seed))
        assert len(np.unique(chosen)) == 4
        counts[chosen] += 1
    np.testing.assert_allclose(counts / 3000, pi, atol=0.03)


@pytest.mark.parametrize("select", [rad_select, margin_select, random_select])
def test_selectors_return_distinct_deterministic_unqueried_indices(select):
    s, t = random_probs(60), random_probs(60, seed=1, scale=4.0)
    done = np.arange(0, 60, 3)
    a = select(s, t, 12, exclude=done, seed=7)
    assert a.dtype == np.int64 and len(a) == 12 and len(np.unique(a)) == 12
    assert not np.isin(a, done).any() and a.min() >= 0 and a.max() < 60
    np.testing.assert_array_equal(a, select(s, t, 12, exclude=done, seed=7))
    assert len(select(s, t, 0, exclude=done)) == 0
    np.testing.assert_array_equal(select(s, t, 40, exclude=done), np.setdiff1d(np.arange(60), done))
    if select is not margin_select:
        assert any(not np.array_equal(a, select(s, t, 12, exclude=done, seed=r)) for r in range(5))


def test_rad_queries_fewer_wrong_teacher_labels_than_margin():
    """Worst case for margin sampling: the teacher is wrong exactly on the 20 points the
    student finds most informative (and says so with confidence 0.5)."""
    n, c = 200, 4
    margin = np.linspace(0.02, 0.9, n)
    student = np.zeros((n, c))
    student[:, 0], student[:, 1] = (1 + margin) / 2 - 0.01, (1 - margin) / 2 - 0.01
    student[:, 2:] = 0.01
    wrong = np.arange(20)
    teacher = np.full((n, c), 0.05 / 3)
    teacher[:, 0] = 0.95
    teacher[wrong] = [0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]
    by_margin = np.isin(margin_select(student, teacher, 20), wrong).sum()
    by_rad = [np.isin(rad_select(student, teacher, 20, seed=r), wrong).sum() for r in range(20)]
    assert by_margin == 20
    assert max(by_rad) < 20 and np.mean(by_rad) < 10


def test_probabilities_estimate_k_from_teacher_confidence_and_skip_excluded():
    s, t = random_probs(25), random_probs(25, seed=1, scale=3.0)
    done = np.array([0, 4, 9])
    pi = rad_probabilities(s, t, 6, exclude=done)
    keep = np.setdiff1d(np.arange(25), done)
    k = float((1 - t.max(1).values.numpy())[keep].sum())
    assert (pi[done] == 0).all() and pi.sum() == pytest.approx(6)
    np.testing.assert_allclose(pi[keep], rad_inclusion(student_gains(s)[keep], 6, k))
    np.testing.assert_allclose(pi, rad_probabilities(s, None, 6, mistakes=k, exclude=done))


def test_half_precision_inputs():
    s, t = random_probs(30), random_probs(30, seed=1)
    np.testing.assert_allclose(student_gains(s.half()), student_gains(s), atol=2e-3)
    np.testing.assert_allclose(
        rad_probabilities(s.half(), t.half(), 5), rad_probabilities(s, t, 5), atol=2e-2
    )
    assert len(np.unique(rad_select(s.half(), t.half(), 5, seed=0))) == 5


def test_bad_inputs():
    s, t = random_probs(10), random_probs(10, seed=1)
    cases = [
        (lambda: rad_select(s, t, 11), "budget"),
        (lambda: rad_select(s, t, 8, exclude=[0, 1, 2]), "budget"),
        (lambda: rad_select(s, t, -1), "budget"),
        (lambda: rad_select(s, t, 2.5), "budget"),
        (lambda: margin_select(s, t, 2, exclude=[10]), "exclude"),
        (lambda: rad_select(s * 2, t, 2), "student_probs"),
        (lambda: rad_select(s[0], t, 2), "student_probs"),
        (lambda: rad_select(s, t - 0.1, 2), "teacher_probs"),
        (lambda: rad_select(s, t[:5], 2), "teacher_probs"),
        (lambda: rad_select(s, None, 2), "teacher_probs"),
        (lambda: rad_select(s, t, 2, mistakes=-1.0), "mistakes"),
        (lambda: rad_inclusion(np.array([0.5, -0.1]), 1, 0.0), "gains"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


def _toy(seed=0, n=120, d=5, c=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, c, generator=g)
    x = torch.randn(n, d, generator=g)
    return x.numpy(), (x @ w).argmax(1).numpy(), w


def test_procedure_queries_only_what_it_selects():
    x, y, w = _toy()
    calls, seen = [], []

    def teacher(xs):
        calls.append(np.asarray(xs).copy())
        return torch.as_tensor(xs) @ w

    def spy(student_probs, teacher_probs, budget, *, exclude, seed, mistakes):
        seen.append((teacher_probs, len(exclude), mistakes))
        return rad_select(
            student_probs, None, budget, exclude=exclude, seed=seed, mistakes=mistakes
        )

    def run(selector):
        return active_distillation(
            lambda: nn.Linear(5, 3), teacher, x[20:100], x_labeled=x[:20], y_labeled=y[:20],
            rounds=3, budget_per_round=6, selector=selector, epochs=20, x_test=x[100:],
            y_test=y[100:], y_pool=y[20:100], seed=1, teacher_error_rate=0.1,
        )  # fmt: skip

    res = run(spy)
    assert [r["round"] for r in res.history] == [0, 1, 2, 3]
    assert [r["queried"] for r in res.history] == [0, 6, 12, 18]
    assert len(np.unique(res.queried)) == 18
    for r, (sel, call) in enumerate(zip(np.split(res.queried, 3), calls, strict=True)):
        np.testing.assert_array_equal(call, x[20:100][sel])  # the teacher sees only the picks
        assert seen[r][0] is None and seen[r][1] == 6 * r
        assert seen[r][2] == pytest.approx(0.1 * (80 - 6 * r))
    assert all(0 <= r["test_accuracy"] <= 1 for r in res.history)
    assert all(0 <= r["teacher_correct"] <= 1 for r in res.history[1:])
    np.testing.assert_array_equal(res.queried, run("rad").queried)  # deterministic by seed
    assert not np.array_equal(res.queried, run("random").queried)


def test_procedure_visible_teacher_and_labels():
    x, y, w = _toy(1)

    def teacher(xs):
        return torch.softmax(torch.as_tensor(xs) @ w, 1)

    seen = []

    def spy(student_probs, teacher_probs, budget, *, exclude, seed):
        seen.append(teacher_probs)
        return margin_select(student_probs, teacher_probs, budget, exclude=exclude, seed=seed)

    for label in ("soft", "hard"):
        res = active_distillation(
            lambda: nn.Linear(5, 3), teacher, x, rounds=2, budget_per_round=4, selector=spy,
            teacher_probs=True, teacher_visible=True, label=label, epochs=5,
        )  # fmt: skip
        assert len(res.queried) == 8 and "test_accuracy" not in res.history[0]
    torch.testing.assert_close(seen[0], teacher(x))
    with pytest.raises(ValueError, match="teacher_error_rate"):
        active_distillation(
            lambda: nn.Linear(5, 3), teacher, x, teacher_probs=True, budget_per_round=2
        )


def test_procedure_bad_arguments():
    x, y, w = _toy()
    base = functools.partial(
        active_distillation, lambda: nn.Linear(5, 3), lambda xs: torch.as_tensor(xs) @ w
    )
    xt = torch.as_tensor(x)
    for kwargs, name in [
        ({"selector": "best"}, "selector"),
        ({"label": "noisy"}, "label"),
        ({"temperature": 0.0}, "temperature"),
        ({"rounds": -1}, "rounds"),
        ({"budget_per_round": 100}, "budget"),
        ({"x_labeled": x[:4], "y_labeled": y[:3]}, "y_labeled"),
        ({"teacher_error_rate": 1.5}, "teacher_error_rate"),
    ]:
        with pytest.raises(ValueError, match=name):
            base(xt, **{"teacher_error_rate": 0.1, "rounds": 2, "budget_per_round": 5, **kwargs})


def test_registered():
    assert get("rad_selection").papers == (5,) and get("rad_selection").kind == "procedure"
    assert get("active_distillation").family == "procedures"
    assert get("active_distillation").function is active_distillation


@pytest.mark.slow
def test_demo_runs(tmp_path):
    from losskit.procedures.active_distillation_demo import run_rad_demo

    out = run_rad_demo(str(tmp_path), seeds=1, rounds=1, budget=20)
    assert (tmp_path / "active_distillation.md").is_file() and "rad" in out["test_accuracy"]
