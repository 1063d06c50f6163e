import math

import pytest
import torch

from losskit.distillation.kd import KDLoss, kd_loss
from tests.distillation.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)


def slow_kd(s, t, temp):
    out = []
    for i in range(s.shape[0]):
        zs = [math.exp(v / temp) for v in s[i].tolist()]
        zt = [math.exp(v / temp) for v in t[i].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        out.append(temp**2 * sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_matches_slow_reference(temp):
    s, t, _ = random_pair()
    torch.testing.assert_close(
        kd_loss(s, t, temperature=temp, reduction="none"), slow_kd(s, t, temp)
    )


def test_gradient_is_t_times_probability_gap():
    s, t, _ = random_pair()
    sg = s.clone().requires_grad_(True)
    kd_loss(sg, t, temperature=3.0, reduction="sum").backward()
    expected = 3.0 * (torch.softmax(s / 3, 1) - torch.softmax(t / 3, 1))
    torch.testing.assert_close(sg.grad, expected)


def test_teacher_probabilities_equal_teacher_logits():
    s, t, _ = random_pair()
    p = torch.softmax(t, 1)
    for temp in (1.0, 2.5):
        torch.testing.assert_close(
            kd_loss(s, p, teacher_probs=True, temperature=temp), kd_loss(s, t, temperature=temp)
        )


def test_alpha_mixes_cross_entropy_and_ignores_samples():
    s, t, y = random_pair()
    mixed = kd_loss(s, t, y, alpha=0.3, reduction="none")
    ce = torch.nn.functional.cross_entropy(s, y, reduction="none")
    torch.testing.assert_close(mixed, 0.3 * kd_loss(s, t, reduction="none") + 0.7 * ce)
    y[0] = -100
    out = kd_loss(s, t, y, alpha=0.3, reduction="none")
    assert out[0] == 0
    torch.testing.assert_close(kd_loss(s, t, y, alpha=0.3), out[1:].mean())


def test_contract():
    s, t, y = random_pair()
    check_reductions(kd_loss, s, t, None)
    check_reductions(kd_loss, s, t, y, alpha=0.5)
    check_gradcheck(kd_loss, s, t, y, alpha=0.5)
    check_teacher_gets_no_grad(kd_loss, s, t, None)
    check_half_precision(kd_loss, None)
    check_bad_inputs(kd_loss)
    check_bad_inputs(kd_loss, needs_target=True, alpha=0.5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            kd_loss(s, t, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            KDLoss(temperature=bad)
    torch.testing.assert_close(KDLoss(temperature=2.0)(s, t), kd_loss(s, t, temperature=2.0))
