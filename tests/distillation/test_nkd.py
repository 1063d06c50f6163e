import math

import pytest
import torch

from losskit._core.registry import get
from losskit.distillation._common import kl_rows
from losskit.distillation.dkd import dkd_loss, non_target_log_softmax
from losskit.distillation.nkd import NKDLoss, nkd_loss
from tests.contract import check_matches_reference
from tests.distillation.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)


def slow_nkd(s, t, y, temp, gamma):
    """Loop over samples and classes in torch scalars (autograd gives the gradient)."""
    out = []
    for i in range(s.shape[0]):
        k = int(y[i])
        t_y = torch.softmax(t[i], 0)[k]
        log_s_y = torch.log(torch.softmax(s[i], 0)[k])
        p, q = torch.softmax(s[i] / temp, 0), torch.softmax(t[i] / temp, 0)
        cross = sum(
            q[j] / (1 - q[k]) * torch.log(p[j] / (1 - p[k])) for j in range(s.shape[1]) if j != k
        )
        out.append(-t_y * log_s_y - gamma * temp**2 * cross)
    return torch.stack(out)


@pytest.mark.parametrize(("temp", "gamma"), [(1.0, 1.5), (3.0, 3.5)])
def test_matches_slow_reference_value_and_gradient(temp, gamma):
    s, t, y = random_pair(seed=1)
    check_matches_reference(
        lambda z: nkd_loss(z, t, y, temperature=temp, gamma=gamma, reduction="none"),
        lambda z: slow_nkd(z, t, y, temp, gamma),
        s,
    )


def test_gamma_zero_is_the_target_term():
    s, t, y = random_pair(seed=2)
    out = nkd_loss(s, t, y, gamma=0.0, temperature=2.0, reduction="none")
    for i in range(6):
        zt = [math.exp(v) for v in t[i].tolist()]
        zs = [math.exp(v) for v in s[i].tolist()]
        t_y = zt[y[i]] / sum(zt)
        want = -t_y * math.log(zs[y[i]] / sum(zs))
        assert math.isclose(float(out[i]), want, rel_tol=1e-12)


def test_non_target_softmax_equals_renormalised_probabilities():
    s, _, y = random_pair(4, 6, seed=3)
    for temp in (1.0, 2.5):
        got = non_target_log_softmax(s / temp, y).exp()
        for i in range(4):
            p = torch.softmax(s[i] / temp, 0).tolist()
            k = int(y[i])
            for j in range(6):
                want = 0.0 if j == k else p[j] / (1 - p[k])
                assert math.isclose(float(got[i, j]), want, rel_tol=1e-12, abs_tol=1e-15)


def test_non_target_term_is_kl_plus_teacher_entropy():
    s, t, y = random_pair(seed=4)
    temp, gamma = 3.0, 2.0
    non = nkd_loss(s, t, y, temperature=temp, gamma=gamma, reduction="none") - nkd_loss(
        s, t, y, temperature=temp, gamma=0.0, reduction="none"
    )
    log_q = non_target_log_softmax(t / temp, y)
    log_p = non_target_log_softmax(s / temp, y)
    q = log_q.exp()
    entropy = -(q * torch.where(q > 0, log_q, torch.zeros_like(log_q))).sum(1)
    torch.testing.assert_close(non, gamma * temp**2 * (kl_rows(log_q, log_p) + entropy))
    # the same non-target KL as DKD's NCKD
    nckd = dkd_loss(s, t, y, alpha=0.0, beta=1.0, temperature=temp, reduction="none")
    torch.testing.assert_close(non, gamma * (nckd + temp**2 * entropy))


def test_non_target_gradient_vanishes_when_student_equals_teacher():
    s, _, y = random_pair(seed=5)
    sg = s.clone().requires_grad_(True)
    full = nkd_loss(sg, s, y, gamma=1.5, temperature=2.0, reduction="sum")
    target_only = nkd_loss(sg, s, y, gamma=0.0, temperature=2.0, reduction="sum")
    (grad,) = torch.autograd.grad(full - target_only, sg)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-12, rtol=0)


def test_teacher_probabilities_and_one_hot_teacher():
    s, t, y = random_pair(seed=6)
    p = torch.softmax(t, 1)
    for temp in (1.0, 3.0):
        torch.testing.assert_close(
            nkd_loss(s, p, y, teacher_probs=True, temperature=temp),
            nkd_loss(s, t, y, temperature=temp),
        )
    onehot = torch.nn.functional.one_hot(y, 5).double()
    out = nkd_loss(s, onehot, y, teacher_probs=True, reduction="none")
    torch.testing.assert_close(out, torch.nn.functional.cross_entropy(s, y, reduction="none"))


def test_ignore_index():
    s, t, y = random_pair(seed=7)
    y[0] = -100
    out = nkd_loss(s, t, y, reduction="none")
    assert out[0] == 0
    torch.testing.assert_close(nkd_loss(s, t, y), out[1:].mean())


def test_registry_and_module():
    e = get("nkd")
    assert e.papers == (44,)
    m = e.build()
    assert (m.temperature, m.gamma) == (1.0, 1.5)
    s, t, y = random_pair(seed=8)
    torch.testing.assert_close(
        NKDLoss(temperature=3.0, gamma=3.5)(s, t, y),
        nkd_loss(s, t, y, temperature=3.0, gamma=3.5),
    )


def test_contract():
    s, t, y = random_pair()
    check_reductions(nkd_loss, s, t, y)
    check_gradcheck(nkd_loss, s, t, y)
    check_gradcheck(nkd_loss, s, t, y, temperature=3.0, gamma=3.5)
    check_teacher_gets_no_grad(nkd_loss, s, t, y)
    check_half_precision(nkd_loss, y)
    check_half_precision(nkd_loss, y, temperature=3.0, gamma=3.5)
    check_bad_inputs(nkd_loss, needs_target=True)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            nkd_loss(s, t, y, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            NKDLoss(temperature=bad)
    for bad in (-0.1, float("nan"), "x"):
        with pytest.raises(ValueError, match="gamma"):
            nkd_loss(s, t, y, gamma=bad)
        with pytest.raises(ValueError, match="gamma"):
            NKDLoss(gamma=bad)
