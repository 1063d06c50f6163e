"""Comp-sum losses, GCE, MAE and the smooth adversarial comp-sum loss (paper 37)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.classification.adversarial_comp_sum import (
    SmoothAdversarialCompSumLoss,
    pgd_perturb,
    smooth_adversarial_comp_sum_loss,
)
from losskit.classification.comp_sum import (
    CompSumLoss,
    GeneralizedCrossEntropyLoss,
    MeanAbsoluteErrorLoss,
    comp_sum_loss,
    generalized_cross_entropy,
    mean_absolute_error_loss,
)
from tests.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_weight_and_ignore,
    random_batch,
)

TAUS = [0.0, 0.5, 1.0, 1.5, 1.7, 2.0, 3.0]


def _phi(u: torch.Tensor, tau: float) -> torch.Tensor:
    if tau == 1:
        return torch.log1p(u)
    return ((1 + u) ** (1 - tau) - 1) / (1 - tau)


def _comp_sum_reference(x, target, tau, weight=None):
    """The paper's definition, one sample and one class at a time."""
    n, c = x.shape
    out = []
    for i in range(n):

        def term(y, i=i):
            u = sum(torch.exp(x[i, k] - x[i, y]) for k in range(c) if k != y)
            return _phi(u, tau)

        if target.is_floating_point():
            w = torch.ones(c, dtype=x.dtype) if weight is None else weight
            out.append(sum(target[i, k] * w[k] * term(k) for k in range(c)))
        else:
            w = 1.0 if weight is None else weight[target[i]]
            out.append(w * term(int(target[i])))
    return torch.stack(out)


def _value_and_grad(fn, x, *args, **kw):
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg, *args, **kw)
    (g,) = torch.autograd.grad(out.sum(), xg)
    return out.detach(), g


@pytest.mark.parametrize("tau", TAUS)
def test_comp_sum_matches_paper_definition(tau):
    x, y, p = random_batch(6, 4)
    w = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)
    for target, weight in ((y, None), (y, w), (p, None), (p, w)):
        ours, g_ours = _value_and_grad(
            comp_sum_loss, x, target, tau=tau, weight=weight, reduction="none"
        )
        ref, g_ref = _value_and_grad(_comp_sum_reference, x, target, tau, weight)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(g_ours, g_ref)


def test_named_members_of_the_family():
    x, y, p = random_batch(8, 5)
    py = torch.softmax(x, 1).gather(1, y[:, None]).squeeze(1)
    w = torch.rand(5, dtype=torch.float64)
    y_ign = y.clone()
    y_ign[3] = -100
    for target in (y_ign, p):  # tau = 1 is torch's cross-entropy, weights and all
        torch.testing.assert_close(
            comp_sum_loss(x, target, tau=1.0, weight=w), F.cross_entropy(x, target, weight=w)
        )
    none = {"reduction": "none"}
    torch.testing.assert_close(comp_sum_loss(x, y, tau=2.0, **none), 1 - py)
    torch.testing.assert_close(comp_sum_loss(x, y, tau=0.0, **none), (1 - py) / py)
    for target in (y, p):
        torch.testing.assert_close(
            comp_sum_loss(x, target, tau=1.7, **none), generalized_cross_entropy(x, target, **none)
        )
        torch.testing.assert_close(
            mean_absolute_error_loss(x, target, **none), comp_sum_loss(x, target, tau=2.0, **none)
        )
        torch.testing.assert_close(
            generalized_cross_entropy(x, target, q=1.0, **none),
            mean_absolute_error_loss(x, target, **none),
        )
    torch.testing.assert_close(generalized_cross_entropy(x, y, q=0.3, **none), (1 - py**0.3) / 0.3)
    # soft MAE is 1 - <q, p>
    torch.testing.assert_close(
        mean_absolute_error_loss(x, p, **none), 1 - (p * torch.softmax(x, 1)).sum(1)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_continuity_at_tau_one(dtype):
    x, y, _ = random_batch(10, 6, dtype=dtype, scale=4.0)
    ce = F.cross_entropy(x, y, reduction="none")
    for tau in (1 - 1e-6, 1 + 1e-6):
        out = comp_sum_loss(x, y, tau=tau, reduction="none")
        # |l_tau - CE| <= |tau - 1| * CE^2 / 2 * exp(|tau-1| CE), far below this tolerance
        torch.testing.assert_close(out, ce, rtol=1e-5, atol=1e-6)
        if dtype == torch.float64:  # accurate, not just close: the first-order term is right
            a = 1 - tau
            torch.testing.assert_close(out - ce, a * ce**2 / 2, rtol=1e-4, atol=1e-14)


def test_monotone_decreasing_in_tau_and_bounded():
    x, y, _ = random_batch(20, 5, scale=3.0)
    taus = torch.linspace(0.0, 4.0, 41).tolist()
    vals = torch.stack([comp_sum_loss(x, y, tau=t, reduction="none") for t in taus])
    assert (vals[1:] < vals[:-1]).all()
    for t in (1.2, 2.0, 3.5):
        assert (comp_sum_loss(x, y, tau=t, reduction="none") < 1 / (t - 1)).all()
    # the bound is the limit p_y -> 0; below tau = 1 the loss is unbounded
    far = torch.tensor([[-1000.0, 0.0, 0.0]], dtype=torch.float64)
    zero = torch.tensor([0])
    for t in (1.2, 2.0, 3.5):
        torch.testing.assert_close(
            comp_sum_loss(far, zero, tau=t), torch.tensor(1 / (t - 1), dtype=torch.float64)
        )
    assert comp_sum_loss(far, zero, tau=0.5) > 1e12


def test_extreme_logits_stay_finite():
    x = torch.tensor([[1e4, -1e4, 0.0], [0.0, 3e4, -3e4]])
    y = torch.tensor([1, 2])
    for tau in (1.0, 1.5, 2.0, 5.0):
        xg = x.clone().requires_grad_(True)
        out = comp_sum_loss(xg, y, tau=tau)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(xg.grad).all()
    # soft target with no mass on a class that exp() would overflow on: no 0 * inf = NaN
    q = torch.tensor([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    xs = torch.tensor([[0.0, -1e4, 1.0], [0.0, 2.0, -1e4]], requires_grad=True)
    out = comp_sum_loss(xs, q, tau=0.0)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(xs.grad).all()


@pytest.mark.parametrize(
    "fn,kw",
    [
        (comp_sum_loss, {"tau": 0.0}),
        (comp_sum_loss, {"tau": 0.5}),
        (comp_sum_loss, {"tau": 1.5}),
        (comp_sum_loss, {"tau": 3.0}),
        (generalized_cross_entropy, {}),
        (mean_absolute_error_loss, {}),
    ],
)
def test_contract(fn, kw):
    x, y, p = random_batch()
    check_reductions(fn, x, y, **kw)
    check_reductions(fn, x, p, **kw)
    check_weight_and_ignore(fn, x, y, **kw)
    check_gradcheck(fn, x, y, **kw)
    check_gradcheck(fn, x, p, **kw)
    check_bad_inputs(fn, **kw)


def test_half_precision():
    y = random_batch()[1]
    for tau in (1.0, 1.5, 2.0, 3.0):
        check_half_precision(comp_sum_loss, y, tau=tau)
    check_half_precision(generalized_cross_entropy, y)
    check_half_precision(mean_absolute_error_loss, y)
    # below tau = 1 the loss itself grows like exp((1 - tau) * CE): at logits of 1e4 the true
    # value overflows every dtype, so these use logits whose loss fits float16 (< 65504)
    check_half_precision(comp_sum_loss, y, tau=0.0, magnitude=1.0)
    check_half_precision(comp_sum_loss, y, tau=0.5, magnitude=3.0)


def test_hyperparameter_errors_and_modules():
    x, y, _ = random_batch()
    for bad in (-0.1, float("nan"), float("inf"), "a"):
        with pytest.raises(ValueError, match="tau"):
            comp_sum_loss(x, y, tau=bad)
        with pytest.raises(ValueError, match="tau"):
            CompSumLoss(tau=bad)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="q"):
            generalized_cross_entropy(x, y, q=bad)
        with pytest.raises(ValueError, match="q"):
            GeneralizedCrossEntropyLoss(q=bad)
    w = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)
    for module, fn, kw in (
        (CompSumLoss(tau=1.5, weight=w), comp_sum_loss, {"tau": 1.5}),
        (GeneralizedCrossEntropyLoss(q=0.4, weight=w), generalized_cross_entropy, {"q": 0.4}),
        (MeanAbsoluteErrorLoss(weight=w), mean_absolute_error_loss, {}),
    ):
        assert "weight" in module.state_dict()
        torch.testing.assert_close(module(x, y), fn(x, y, weight=w, **kw))


def test_registry_entries():
    for name in (
        "comp_sum",
        "generalized_cross_entropy",
        "mean_absolute_error",
        "smooth_adversarial_comp_sum",
    ):
        assert get(name).papers == (37,)
    for name in ("generalized_cross_entropy", "mean_absolute_error"):
        assert "member of the comp-sum family" in get(name).summary
    assert get("comp_sum").build().tau == 1.0
    assert get("generalized_cross_entropy").build().q == 0.7
    assert get("smooth_adversarial_comp_sum").build().nu == 1.0


# ---------------------------------------------------------------- smooth adversarial comp-sum


def _smooth_reference(x, xa, target, tau, nu, difference, weight=None):
    """Comp-sum reference plus nu * the smooth term, one sample and class at a time."""
    n, c = x.shape

    def term(i, y):
        d = xa[i] - x[i]
        if difference == "margin":
            d = d - d[y]
        return torch.sqrt((d**2).sum())

    out = []
    for i in range(n):
        w = torch.ones(c, dtype=x.dtype) if weight is None else weight
        if target.is_floating_point():
            out.append(sum(target[i, k] * w[k] * term(i, k) for k in range(c)))
        else:
            out.append(w[target[i]] * term(i, int(target[i])))
    return _comp_sum_reference(x, target, tau, weight) + nu * torch.stack(out)


def _pair(n=7, c=5, seed=0):
    x, y, p = random_batch(n, c, seed=seed)
    xa = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 9), dtype=x.dtype)
    return x, xa, y, p


@pytest.mark.parametrize("difference", ["margin", "logits"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_smooth_adversarial_matches_reference(difference, tau):
    x, xa, y, p = _pair()
    w = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    for target, weight in ((y, None), (y, w), (p, None), (p, w)):
        kw = {
            "tau": tau,
            "nu": 0.7,
            "difference": difference,
            "weight": weight,
            "reduction": "none",
        }
        xg, xag = x.clone().requires_grad_(True), xa.clone().requires_grad_(True)
        ours = smooth_adversarial_comp_sum_loss(xg, xag, target, **kw)
        g_ours = torch.autograd.grad(ours.sum(), (xg, xag))
        xg, xag = x.clone().requires_grad_(True), xa.clone().requires_grad_(True)
        ref = _smooth_reference(xg, xag, target, tau, 0.7, difference, weight)
        g_ref = torch.autograd.grad(ref.sum(), (xg, xag))
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(g_ours, g_ref)


def test_smooth_adversarial_reduces_to_comp_sum_and_binary_form():
    x, xa, y, p = _pair()
    for target in (y, p):
        for diff in ("margin", "logits"):
            xg = x.clone().requires_grad_(True)
            out = smooth_adversarial_comp_sum_loss(xg, xg, target, tau=1.5, nu=3.0, difference=diff)
            torch.testing.assert_close(out, comp_sum_loss(x, target, tau=1.5))
            out.backward()  # the norm at zero has a zero subgradient, not NaN
            assert torch.isfinite(xg.grad).all()
        torch.testing.assert_close(
            smooth_adversarial_comp_sum_loss(x, xa, target, tau=1.5, nu=0.0),
            comp_sum_loss(x, target, tau=1.5),
        )
    # two classes: the term is |g(x') - g(x)| with g = h_1 - h_2 (the binary smooth loss)
    x2, xa2, y2, _ = _pair(9, 2)
    g, ga = x2[:, 1] - x2[:, 0], xa2[:, 1] - xa2[:, 0]
    torch.testing.assert_close(
        smooth_adversarial_comp_sum_loss(x2, xa2, y2, tau=1.0, nu=1.0, reduction="none"),
        F.cross_entropy(x2, y2, reduction="none") + (ga - g).abs(),
    )


@pytest.mark.parametrize("tau", [1.0, 1.5, 2.0, 4.0])
def test_smooth_loss_upper_bounds_comp_sum_at_the_perturbed_point(tau):
    x, xa, y, _ = _pair(200, 6, seed=3)
    xa = x + 3 * (xa - x)
    at_adv = comp_sum_loss(xa, y, tau=tau, reduction="none")
    smooth = smooth_adversarial_comp_sum_loss(x, xa, y, tau=tau, nu=1.0, reduction="none")
    assert (at_adv <= smooth + 1e-12).all()
    # without the smooth term the bound fails on some samples, so the check has teeth
    assert (at_adv > comp_sum_loss(x, y, tau=tau, reduction="none")).any()


def test_smooth_adversarial_contract():
    x, xa, y, p = _pair()
    delta = xa - x

    def fn(z, t, **kw):
        return smooth_adversarial_comp_sum_loss(z, z + delta.to(z.dtype), t, nu=0.5, **kw)

    def fn_scaled(z, t, **kw):  # logits_adv depends on z, so both gradient paths are checked
        return smooth_adversarial_comp_sum_loss(z, 0.5 * z, t, tau=1.5, nu=0.5, **kw)

    check_reductions(fn, x, y)
    check_reductions(fn, x, p)
    check_weight_and_ignore(fn, x, y)
    check_gradcheck(fn, x, y)
    check_gradcheck(fn, x, p)
    check_gradcheck(fn_scaled, x, y)
    check_gradcheck(lambda z, t, **k: fn_scaled(z, t, difference="logits", **k), x, p)
    check_half_precision(fn_scaled, y)
    check_bad_inputs(
        lambda z, t, **k: smooth_adversarial_comp_sum_loss(z, z.flip(-1), t, nu=0.5, **k)
    )
    for kw, name in (
        ({"nu": -1.0}, "nu"),
        ({"nu": float("inf")}, "nu"),
        ({"nu": 1.0, "tau": -1.0}, "tau"),
        ({"nu": 1.0, "difference": "l2"}, "difference"),
    ):
        with pytest.raises(ValueError, match=name):
            smooth_adversarial_comp_sum_loss(x, xa, y, **kw)
        with pytest.raises(ValueError, match=name):
            SmoothAdversarialCompSumLoss(**kw)
    for bad in (xa[:, :4], xa[:3], xa[0], torch.full_like(xa, float("nan"))):
        with pytest.raises(ValueError, match="logits_adv"):
            smooth_adversarial_comp_sum_loss(x, bad, y, nu=1.0)
    m = SmoothAdversarialCompSumLoss(tau=1.5, nu=0.5, weight=torch.ones(5, dtype=x.dtype))
    assert "weight" in m.state_dict()
    torch.testing.assert_close(
        m(x, xa, y), smooth_adversarial_comp_sum_loss(x, xa, y, tau=1.5, nu=0.5)
    )


# ---------------------------------------------------------------- pgd_perturb


def _linear(d=6, c=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(d, c).double()


def test_pgd_l2_reaches_the_exact_supremum_for_a_linear_model():
    model = _linear()
    x = torch.randn(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    eps = 0.3
    W = model.weight.detach()
    gen = torch.Generator().manual_seed(0)
    for diff in ("logits", "margin"):
        xa = pgd_perturb(
            model,
            x,
            y,
            epsilon=eps,
            step_size=2 * eps,
            steps=200,
            norm="l2",
            difference=diff,
            generator=gen,
        )
        assert ((xa - x).norm(dim=1) <= eps + 1e-12).all()
        d = model(xa) - model(x)
        if diff == "margin":
            d = d - d.gather(1, y[:, None])
        for i in range(5):
            # sup over the L2 ball of ||A delta|| is eps * sigma_max(A), A = M_y W or W
            a = (
                W
                if diff == "logits"
                else (torch.eye(4, dtype=W.dtype) - torch.eye(4)[y[i]].to(W.dtype)[None, :]) @ W
            )
            sup = eps * torch.linalg.matrix_norm(a, ord=2)
            assert d[i].norm() <= sup + 1e-9
            torch.testing.assert_close(d[i].norm().detach(), sup.detach(), rtol=1e-6, atol=0)


def test_pgd_linf_custom_objective_bounds_and_no_side_effects():
    model = _linear()
    x = torch.rand(4, 6, dtype=torch.float64)
    eps = 0.1
    # maximise logit 0: the exact answer on the Linf ball is x + eps * sign(W[0])
    xa = pgd_perturb(
        model, x, epsilon=eps, step_size=2 * eps, steps=3, objective=lambda a, c: a[:, 0]
    )
    torch.testing.assert_close(xa, x + eps * model.weight[0].detach().sign())
    assert all(p.grad is None for p in model.parameters())
    assert not xa.requires_grad
    # default objective: inside the box and the input range, better than the random start
    y = torch.tensor([0, 1, 2, 3])
    gen = torch.Generator().manual_seed(1)
    start = pgd_perturb(model, x, y, epsilon=eps, step_size=eps / 4, steps=0, generator=gen)
    gen = torch.Generator().manual_seed(1)
    xa = pgd_perturb(
        model, x, y, epsilon=eps, step_size=eps / 4, steps=10, bounds=(0.0, 1.0), generator=gen
    )
    assert ((xa - x).abs() <= eps + 1e-12).all() and (xa >= 0).all() and (xa <= 1).all()

    def term(z):
        d = model(z) - model(x)
        return (d - d.gather(1, y[:, None])).norm(dim=1)

    assert (term(xa) > term(start)).all()
    # no random start and no steps, or a zero radius: x itself
    torch.testing.assert_close(
        pgd_perturb(model, x, y, epsilon=eps, step_size=0.1, steps=0, random_start=False), x
    )
    torch.testing.assert_close(pgd_perturb(model, x, y, epsilon=0.0, step_size=0.1), x)


def test_pgd_bad_inputs():
    model = _linear()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    ok = {"epsilon": 0.1, "step_size": 0.05}
    cases = [
        ((model, x, y), {**ok, "epsilon": -1.0}, "epsilon"),
        ((model, x, y), {**ok, "step_size": 0.0}, "step_size"),
        ((model, x, y), {**ok, "steps": -1}, "steps"),
        ((model, x, y), {**ok, "steps": 1.5}, "steps"),
        ((model, x, y), {**ok, "norm": "l1"}, "norm"),
        ((model, x, y), {**ok, "difference": "kl"}, "difference"),
        ((model, x, y), {**ok, "bounds": (1.0, 0.0)}, "bounds"),
        ((model, x, None), ok, "target"),
        ((model, x, torch.tensor([0, 1, 9, 3])), ok, "target"),
        (("model", x, y), ok, "model"),
        ((model, x[:0], y[:0]), ok, "x"),
        ((model, torch.full_like(x, math.nan), y), ok, "x"),
        ((lambda z: z.sum(1), x, y), ok, "model"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            pgd_perturb(*args, **kw)


def test_adversarial_training_step_runs_end_to_end():
    model = _linear(6, 3, seed=2)
    x = torch.randn(16, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    loss_fn = SmoothAdversarialCompSumLoss(tau=1.0, nu=1.0)
    xa = pgd_perturb(model, x, y, epsilon=0.2, step_size=0.05, steps=5, norm="l2")
    loss = loss_fn(model(x), model(xa), y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
