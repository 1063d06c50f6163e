import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losskit._core.registry import get
from losskit.distillation.kd import kd_loss
from losskit.procedures.soft_label_protocol import (
    SoftLabelLoss,
    soft_label_loss,
    soft_label_protocol,
)
from tests.distillation.contract import (
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)


def loss3(s, t, y=None, **kw):
    """The contract helpers' ``fn(student, teacher, target, **kw)`` form."""
    return soft_label_loss(s, t, **kw)


def slow_soft_label(s, t, temp, scale_t2):
    out = []
    for i in range(s.shape[0]):
        zs = [math.exp(v / temp) for v in s[i].tolist()]
        zt = [math.exp(v / temp) for v in t[i].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        kl = sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
        out.append(kl * (temp**2 if scale_t2 else 1.0))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(("temp", "scale_t2"), [(1.0, False), (4.0, True), (20.0, False)])
def test_matches_slow_reference_value_and_gradient(temp, scale_t2):
    s, t, _ = random_pair()
    sg = s.clone().requires_grad_(True)
    out = soft_label_loss(sg, t, temperature=temp, scale_t2=scale_t2, reduction="none")
    torch.testing.assert_close(out, slow_soft_label(s, t, temp, scale_t2))
    out.sum().backward()
    eps, num = 1e-6, torch.zeros_like(s)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            hi, lo = s.clone(), s.clone()
            hi[i, j] += eps
            lo[i, j] -= eps
            num[i, j] = (
                slow_soft_label(hi, t, temp, scale_t2).sum()
                - slow_soft_label(lo, t, temp, scale_t2).sum()
            ) / (2 * eps)
    torch.testing.assert_close(sg.grad, num, atol=1e-6, rtol=1e-5)


def test_t2_scaling_multiplies_the_gradient_by_t_squared():
    s, t, _ = random_pair()
    for temp in (0.5, 4.0, 20.0):
        grads = []
        for scaled in (True, False):
            sg = s.clone().requires_grad_(True)
            soft_label_loss(sg, t, temperature=temp, scale_t2=scaled, reduction="sum").backward()
            grads.append(sg.grad)
        torch.testing.assert_close(grads[0], temp**2 * grads[1])
        gap = torch.softmax(s / temp, 1) - torch.softmax(t / temp, 1)
        torch.testing.assert_close(grads[1], gap / temp)


def test_scaled_is_kd_and_one_hot_teacher_at_t1_is_cross_entropy():
    s, t, y = random_pair()
    torch.testing.assert_close(
        soft_label_loss(s, t, temperature=3.0, scale_t2=True), kd_loss(s, t, temperature=3.0)
    )
    one_hot = F.one_hot(y, s.shape[1]).double()
    for scaled in (True, False):
        sg = s.clone().requires_grad_(True)
        out = soft_label_loss(sg, one_hot, temperature=1.0, scale_t2=scaled, teacher_probs=True)
        torch.testing.assert_close(out, F.cross_entropy(s, y))
        out.backward()
        torch.testing.assert_close(sg.grad, (torch.softmax(s, 1) - one_hot) / len(y))


def test_contract():
    s, t, _ = random_pair()
    for kw in ({"temperature": 4.0, "scale_t2": True}, {"temperature": 20.0}):
        check_reductions(loss3, s, t, None, **kw)
        check_gradcheck(loss3, s, t, None, **kw)
        check_teacher_gets_no_grad(loss3, s, t, None, **kw)
        check_half_precision(loss3, None, **kw)
    module = SoftLabelLoss(temperature=4.0, scale_t2=True, reduction="none")
    torch.testing.assert_close(module(s, t), kd_loss(s, t, reduction="none"))


def test_bad_inputs():
    s, t, _ = random_pair(4, 5, dtype=torch.float32)
    p = torch.softmax(t, 1)
    cases = [
        ((s[0], t), {}, "student"),
        ((s, t[:, :-1]), {}, "teacher"),
        ((torch.full_like(s, float("nan")), t), {}, "student"),
        ((s[:0], t[:0]), {}, "student"),
        ((s, p * 2), {"teacher_probs": True}, "teacher"),
        ((s, p - 0.3), {"teacher_probs": True}, "teacher"),
        ((s, t), {"temperature": 0.0}, "temperature"),
        ((s, t), {"temperature": -2.0}, "temperature"),
        ((s, t), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            soft_label_loss(*args, **kw)
    for kw, name in [({"temperature": 0.0}, "temperature"), ({"reduction": "x"}, "reduction")]:
        with pytest.raises(ValueError, match=name):
            SoftLabelLoss(**kw)


def toy(n=60, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, c, generator=g)
    x = torch.randn(n + 30, d, generator=g)
    y = (x @ w).argmax(1)
    return x[:n], y[:n], x[n:], y[n:], x[:n] @ w


def run(x, teacher, y, xt, yt, **kw):
    base = dict(subset_sizes=(0.5,), epochs=15, seeds=(0,), batch_size=8)
    return soft_label_protocol(x, teacher, y, xt, yt, **{**base, **kw})


def test_perfect_teacher_at_vanishing_temperature_is_hard_label_training():
    x, y, xt, yt, _ = toy()
    one_hot = F.one_hot(y, 3).float()
    rows = run(x, one_hot, y, xt, yt, temperatures=(1.0,), scale_t2=(False,), teacher_probs=True)
    hard, soft = rows
    assert (hard["labels"], soft["labels"]) == ("hard", "soft")
    torch.testing.assert_close(soft["losses"], hard["losses"], rtol=1e-5, atol=1e-6)
    assert soft["test_accuracy"] == hard["test_accuracy"]
    sharp = run(x, 40.0 * one_hot, y, xt, yt, temperatures=(1.0,), scale_t2=(True,))
    torch.testing.assert_close(sharp[1]["losses"], hard["losses"], rtol=1e-4, atol=1e-5)


def test_adamw_is_blind_to_the_t2_factor_and_sgd_is_not():
    x, y, xt, yt, teacher = toy()
    for optimizer, ratio_holds in (("adamw", True), ("sgd", False)):
        scaled, plain = run(x, teacher, y, xt, yt, temperatures=(4.0,), hard=False,
                            optimizer=optimizer, weight_decay=0.0)  # fmt: skip
        ratios = torch.tensor(scaled["losses"]) / torch.tensor(plain["losses"])
        same = torch.allclose(ratios, torch.full_like(ratios, 16.0), rtol=1e-3)
        assert same == ratio_holds


def test_rows_deterministic_and_paired():
    x, y, xt, yt, teacher = toy()
    kw = dict(temperatures=(2.0,), scale_t2=(True,), subset_sizes=(10, 1.0), seeds=(0, 1))
    rows = run(x, teacher, y, xt, yt, **kw)
    assert len(rows) == 2 * 2 * 2
    assert [r["subset_size"] for r in rows] == [10] * 4 + [60] * 4
    assert {r["optimizer"] for r in rows} == {"adamw"}
    again = run(x, teacher, y, xt, yt, **kw)
    assert [r["losses"] for r in rows] == [r["losses"] for r in again]
    assert rows[0]["losses"] != rows[2]["losses"]  # another seed: another subset and init


def test_protocol_bad_inputs():
    x, y, xt, yt, teacher = toy()
    for args, kw, name in [
        ((x[:-1], teacher, y, xt, yt), {}, "x_train"),
        ((x, teacher, y, xt[:, :2], yt), {}, "x_test"),
        ((x, teacher, y + 5, xt, yt), {}, "y_train"),
        ((x, teacher[:, :1], y, xt, yt), {}, "teacher_logits"),
        ((x, teacher, y, xt, yt), {"teacher_probs": True}, "teacher_logits"),
        ((x, teacher, y, xt, yt), {"subset_sizes": (0,)}, "subset_sizes"),
        ((x, teacher, y, xt, yt), {"subset_sizes": (1.5,)}, "subset_sizes"),
        ((x, teacher, y, xt, yt), {"temperatures": (0.0,)}, "temperatures"),
        ((x, teacher, y, xt, yt), {"optimizer": "adam"}, "optimizer"),
        ((x, teacher, y, xt, yt), {"epochs": 0}, "epochs"),
        ((x, teacher, y, xt, yt), {"lr": -1.0}, "lr"),
        ((x, teacher, y, xt, yt), {"hard": False, "temperatures": ()}, "arm"),
    ]:
        with pytest.raises(ValueError, match=name):
            run(*args, **kw)


def test_custom_student_and_registration():
    x, y, xt, yt, teacher = toy()
    rows = run(x, teacher, y, xt, yt, student_factory=lambda: nn.Linear(6, 3), scale_t2=(True,))
    assert [r["temperature"] for r in rows] == [None, 1.0, 4.0]
    entry = get("soft_label_protocol")
    assert entry.papers == (58,) and entry.kind == "procedure" and entry.module is SoftLabelLoss
    assert entry.defaults["temperature"] == 20.0 and entry.defaults["scale_t2"] is False


@pytest.mark.slow
def test_demo_runs(tmp_path):
    from losskit.procedures.soft_label_demo import run_soft_label_demo

    rows = run_soft_label_demo(str(tmp_path), seeds=1, epochs=2)
    assert (tmp_path / "soft_label_protocol.md").is_file() and len(rows) == 2 * 2 * 7
