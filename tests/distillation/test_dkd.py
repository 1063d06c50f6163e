import math

import pytest
import torch

from losskit._core.registry import get
from losskit.distillation.dkd import DKDLoss, dkd_loss, non_target_log_softmax
from losskit.distillation.kd import kd_loss
from tests.distillation.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)


def kl(p, q):
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True) if a > 0)


def slow_dkd_values(s, t, y, alpha, beta, temp):
    """Python floats: binary and renormalised non-target distributions by division."""
    out = []
    for i in range(s.shape[0]):
        zs = [math.exp(v / temp) for v in s[i].tolist()]
        zt = [math.exp(v / temp) for v in t[i].tolist()]
        p = [v / sum(zs) for v in zs]
        q = [v / sum(zt) for v in zt]
        k = int(y[i])
        tckd = kl([q[k], 1 - q[k]], [p[k], 1 - p[k]])
        ps = [p[j] / (1 - p[k]) for j in range(len(p)) if j != k]
        qs = [q[j] / (1 - q[k]) for j in range(len(q)) if j != k]
        out.append(temp**2 * (alpha * tckd + beta * kl(qs, ps)))
    return torch.tensor(out, dtype=torch.float64)


def slow_dkd_torch(s, t, y, alpha, beta, temp):
    """The same loop in torch scalars, so autograd gives the reference gradient."""
    total = s.new_zeros(())
    for i in range(s.shape[0]):
        p, q = torch.softmax(s[i] / temp, 0), torch.softmax(t[i] / temp, 0)
        k = int(y[i])
        others = [j for j in range(s.shape[1]) if j != k]
        tckd = q[k] * torch.log(q[k] / p[k]) + (1 - q[k]) * torch.log((1 - q[k]) / (1 - p[k]))
        nckd = sum(
            q[j] / (1 - q[k]) * torch.log((q[j] / (1 - q[k])) / (p[j] / (1 - p[k]))) for j in others
        )
        total = total + temp**2 * (alpha * tckd + beta * nckd)
    return total


@pytest.mark.parametrize(("alpha", "beta", "temp"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_matches_slow_reference_value_and_gradient(alpha, beta, temp):
    s, t, y = random_pair(seed=3)
    got = dkd_loss(s, t, y, alpha=alpha, beta=beta, temperature=temp, reduction="none")
    torch.testing.assert_close(got, slow_dkd_values(s, t, y, alpha, beta, temp))
    sg, sr = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    dkd_loss(sg, t, y, alpha=alpha, beta=beta, temperature=temp, reduction="sum").backward()
    slow_dkd_torch(sr, t, y, alpha, beta, temp).backward()
    torch.testing.assert_close(sg.grad, sr.grad)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_equals_tckd_plus_weighted_nckd(temp):
    s, t, y = random_pair(8, 6, seed=4)
    tckd = dkd_loss(s, t, y, alpha=1.0, beta=0.0, temperature=temp, reduction="none")
    nckd = dkd_loss(s, t, y, alpha=0.0, beta=1.0, temperature=temp, reduction="none")
    q_y = torch.softmax(t / temp, 1).gather(1, y[:, None]).squeeze(1)
    kd = kd_loss(s, t, temperature=temp, reduction="none")
    torch.testing.assert_close(kd, tckd + (1 - q_y) * nckd, rtol=1e-12, atol=1e-12)


def test_non_target_softmax_is_renormalised_probability():
    s, _, y = random_pair(5, 7, seed=5)
    got = non_target_log_softmax(s, y).exp()
    for i in range(5):
        p = torch.softmax(s[i], 0)
        for j in range(7):
            want = 0.0 if j == y[i] else float(p[j] / (1 - p[y[i]]))
            assert math.isclose(float(got[i, j]), want, rel_tol=1e-12, abs_tol=1e-15)


def test_nckd_ignores_target_logits_even_when_huge():
    # NCKD depends only on non-target logits; a "subtract 1000" mask fails at this scale
    s, t, y = random_pair(seed=6)
    kw = {"alpha": 0.0, "beta": 1.0, "temperature": 4.0, "reduction": "none"}
    base = dkd_loss(s, t, y, **kw)
    s2, t2 = s.clone(), t.clone()
    rows = torch.arange(len(y))
    s2[rows, y] = 5000.0
    t2[rows, y] = -7000.0
    torch.testing.assert_close(dkd_loss(s2, t2, y, **kw), base)


def test_tckd_depends_only_on_binary_probabilities():
    s, t, y = random_pair(seed=7)
    kw = {"alpha": 1.0, "beta": 0.0, "temperature": 2.0, "reduction": "none"}
    # reshuffle the non-target logits of the student: p_y and 1 - p_y are unchanged
    s2 = s.clone()
    for i in range(len(y)):
        others = [j for j in range(s.shape[1]) if j != y[i]]
        s2[i, others] = s[i, others].flip(0)
    torch.testing.assert_close(dkd_loss(s2, t, y, **kw), dkd_loss(s, t, y, **kw))


def test_equal_inputs_give_zero_and_loss_is_nonnegative():
    s, t, y = random_pair(seed=8)
    torch.testing.assert_close(dkd_loss(s, s, y, reduction="none"), torch.zeros(6).double())
    assert (dkd_loss(s, t, y, reduction="none") > 0).all()


def test_teacher_probabilities_and_one_hot_teacher():
    s, t, y = random_pair(seed=9)
    p = torch.softmax(t, 1)
    torch.testing.assert_close(dkd_loss(s, p, y, teacher_probs=True), dkd_loss(s, t, y))
    # a one-hot (unanimous human) label on the target: NCKD is 0, TCKD is finite
    onehot = torch.nn.functional.one_hot(y, 5).double()
    out = dkd_loss(s, onehot, y, teacher_probs=True, reduction="none")
    log_p_y = torch.log_softmax(s / 4, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(out, -16 * log_p_y)
    # one-hot on another class: teacher target probability 0
    other = torch.nn.functional.one_hot((y + 1) % 5, 5).double()
    sg = s.clone().requires_grad_(True)
    out = dkd_loss(sg, other, y, teacher_probs=True)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(sg.grad).all()


def test_ignore_index():
    s, t, y = random_pair(seed=10)
    y[2] = -100
    out = dkd_loss(s, t, y, reduction="none")
    assert out[2] == 0
    torch.testing.assert_close(dkd_loss(s, t, y), out[[0, 1, 3, 4, 5]].mean())


def test_module_warmup_and_state():
    s, t, y = random_pair(seed=11)
    full = dkd_loss(s, t, y)
    m = DKDLoss()
    torch.testing.assert_close(m(s, t, y), full)  # no epoch set: factor 1
    m.set_epoch(5)
    torch.testing.assert_close(m(s, t, y), 0.25 * full)
    m.set_epoch(1)
    torch.testing.assert_close(m(s, t, y), full / 20)
    m.set_epoch(40)
    torch.testing.assert_close(m(s, t, y), full)
    m.set_epoch(10)
    m2 = DKDLoss()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(s, t, y), 0.5 * full)
    off = DKDLoss(warmup_epochs=0)
    off.set_epoch(1)
    torch.testing.assert_close(off(s, t, y), full)


def test_registry_defaults_build_the_paper_module():
    e = get("dkd")
    assert e.papers == ()
    m = e.build()
    assert (m.alpha, m.beta, m.temperature, m.warmup_epochs) == (1.0, 8.0, 4.0, 20)


def test_contract():
    s, t, y = random_pair()
    check_reductions(dkd_loss, s, t, y)
    check_gradcheck(dkd_loss, s, t, y)
    check_gradcheck(dkd_loss, s, t, y, temperature=1.0, alpha=0.3, beta=2.0)
    check_teacher_gets_no_grad(dkd_loss, s, t, y)
    check_half_precision(dkd_loss, y)
    check_bad_inputs(dkd_loss, needs_target=True)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            dkd_loss(s, t, y, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            DKDLoss(temperature=bad)
    for name in ("alpha", "beta"):
        with pytest.raises(ValueError, match=name):
            dkd_loss(s, t, y, **{name: -1.0})
        with pytest.raises(ValueError, match=name):
            DKDLoss(**{name: float("nan")})
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="warmup_epochs"):
            DKDLoss(warmup_epochs=bad)
    with pytest.raises(ValueError, match="epoch"):
        DKDLoss().set_epoch(-1)
