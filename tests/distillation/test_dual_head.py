import math

import pytest
import torch
import torch.nn.functional as F

from losskit import get
from losskit.distillation.dual_head import (
    BinaryKLLoss,
    DualHeadKDLoss,
    DualHeadLogits,
    DualHeadStudent,
    binary_kl_loss,
    dual_head_kd_loss,
    gradient_aligned_backward,
)
from losskit.distillation.kd import kd_loss
from tests.distillation.contract import (
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
    random_pair,
)


def sig(x):
    return 1 / (1 + math.exp(-x))


def slow_binary_kl(s, t, temp, normalized):
    """Definition with plain floats: T^2 sum_c KL(Bern(p) || Bern(q))."""
    out = []
    for i in range(s.shape[0]):
        total = 0.0
        for a, b in zip(s[i].tolist(), t[i].tolist(), strict=True):
            p, q = (0.5, sig((a - b) / temp)) if normalized else (sig(b / temp), sig(a / temp))
            total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
        out.append(temp**2 * total)
    return torch.tensor(out, dtype=torch.float64)


def slow_dhkd(main, aux, t, y, temp, ce_w, aux_w, kd_w, kd_temp):
    out = []
    for i in range(main.shape[0]):
        m = main[i].tolist()
        lse = math.log(sum(math.exp(v) for v in m))
        ce = lse - m[int(y[i])]
        zs = [math.exp(v / kd_temp) for v in m]
        zt = [math.exp(v / kd_temp) for v in t[i].tolist()]
        ps, pt = [v / sum(zs) for v in zs], [v / sum(zt) for v in zt]
        kd = kd_temp**2 * sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
        bkln = slow_binary_kl(aux[i : i + 1], t[i : i + 1], temp, True).item()
        out.append(ce_w * ce + kd_w * kd + aux_w * bkln)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("temp", [1.0, 2.0, 3.5])
def test_binary_kl_matches_slow_reference(normalized, temp):
    s, t, _ = random_pair(scale=3.0)
    got = binary_kl_loss(s, t, temperature=temp, normalized=normalized, reduction="none")
    torch.testing.assert_close(got, slow_binary_kl(s, t, temp, normalized))


def test_binary_kl_gradients_have_the_closed_forms():
    s, t, _ = random_pair(scale=3.0)
    for temp in (1.0, 2.0):
        sg = s.clone().requires_grad_(True)
        binary_kl_loss(sg, t, temperature=temp, reduction="sum").backward()
        torch.testing.assert_close(
            sg.grad, temp * (torch.sigmoid(s / temp) - torch.sigmoid(t / temp))
        )
        sg = s.clone().requires_grad_(True)
        binary_kl_loss(sg, t, temperature=temp, normalized=True, reduction="sum").backward()
        torch.testing.assert_close(sg.grad, temp * (torch.sigmoid((s - t) / temp) - 0.5))
        assert sg.grad.abs().max() <= temp / 2


def test_binary_kl_norm_is_log_cosh_and_exact_for_large_gaps():
    s, t, _ = random_pair(scale=3.0)
    got = binary_kl_loss(s, t, temperature=2.0, normalized=True, reduction="none")
    torch.testing.assert_close(got, 4.0 * torch.log(torch.cosh((s - t) / 4.0)).sum(1))
    # far past the reference code's 1e-8 clamp the loss still grows and is finite
    big = torch.tensor([[200.0, 0.0]], dtype=torch.float64)
    val = binary_kl_loss(big, torch.zeros_like(big), temperature=1.0, normalized=True)
    torch.testing.assert_close(val, torch.tensor(100.0 - math.log(2), dtype=torch.float64))
    val = binary_kl_loss(big, torch.zeros_like(big), temperature=1.0)  # the code's clamp: 8.5
    torch.testing.assert_close(val, torch.tensor(100.0 - math.log(2), dtype=torch.float64))


def test_logit_level_loss_sees_the_shift_that_softmax_kd_discards():
    z_s = torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64)
    z_t = torch.tensor([[-2.0, -1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(kd_loss(z_s, z_t), torch.tensor(0.0, dtype=torch.float64))
    for normalized in (False, True):
        assert binary_kl_loss(z_s, z_t, normalized=normalized) > 0.1
        torch.testing.assert_close(
            binary_kl_loss(z_t, z_t, normalized=normalized), torch.tensor(0.0, dtype=torch.float64)
        )


def test_dual_head_matches_slow_reference_value_and_gradient():
    main, t, y = random_pair(seed=1)
    aux = random_pair(seed=2)[0]
    kw = {"temperature": 2.0, "ce_weight": 0.7, "aux_weight": 1.3, "kd_weight": 0.4}
    got = dual_head_kd_loss(main, aux, t, y, kd_temperature=4.0, reduction="none", **kw)
    slow = slow_dhkd(main, aux, t, y, 2.0, 0.7, 1.3, 0.4, 4.0)
    torch.testing.assert_close(got, slow)
    # gradient: each head gets exactly its own terms' gradient
    mg, ag = main.clone().requires_grad_(True), aux.clone().requires_grad_(True)
    dual_head_kd_loss(mg, ag, t, y, reduction="sum", **kw).backward()
    onehot = F.one_hot(y, 5).double()
    kd_grad = 4.0 * (torch.softmax(main / 4, 1) - torch.softmax(t / 4, 1))
    torch.testing.assert_close(mg.grad, 0.7 * (torch.softmax(main, 1) - onehot) + 0.4 * kd_grad)
    torch.testing.assert_close(ag.grad, 1.3 * 2.0 * (torch.sigmoid((aux - t) / 2) - 0.5))


def test_default_is_ce_plus_binary_kl_norm_and_ignore_index():
    main, t, y = random_pair(seed=3)
    aux = random_pair(seed=4)[0]
    expected = F.cross_entropy(main, y, reduction="none") + binary_kl_loss(
        aux, t, normalized=True, reduction="none"
    )
    torch.testing.assert_close(dual_head_kd_loss(main, aux, t, y, reduction="none"), expected)
    y[0] = -100
    out = dual_head_kd_loss(main, aux, t, y, reduction="none")
    assert out[0] == 0
    torch.testing.assert_close(dual_head_kd_loss(main, aux, t, y), out[1:].mean())
    plain = dual_head_kd_loss(main, aux, t, ce_weight=0.0, normalized=False, reduction="none")
    torch.testing.assert_close(plain, binary_kl_loss(aux, t, reduction="none"))


def tiny_student(aux_head="linear"):
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6))
    return DualHeadStudent(backbone, 5, aux_head=aux_head).double()


def grads(loss, module):
    names = [n for n, _ in module.named_parameters()]
    g = torch.autograd.grad(loss, list(module.parameters()), allow_unused=True, retain_graph=True)
    return dict(zip(names, g, strict=True))


@pytest.mark.parametrize("aux_head", ["linear", "nonlinear"])
def test_each_loss_term_reaches_only_its_head_and_the_backbone_gets_both(aux_head):
    model = tiny_student(aux_head).train()
    x = torch.randn(7, 4, dtype=torch.float64)
    t, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 5, (7,))
    main, aux = model(x)
    ce = grads(dual_head_kd_loss(main, aux, t, y, aux_weight=0.0, kd_weight=1.0), model)
    bkl = grads(dual_head_kd_loss(main, aux, t, y, ce_weight=0.0), model)
    total = grads(dual_head_kd_loss(main, aux, t, y, kd_weight=1.0), model)
    for name in ce:
        head, aux_part = name.startswith("head."), name.startswith("aux_head.")
        assert (ce[name] is None) == aux_part, name
        assert (bkl[name] is None) == head, name
        if not head and not aux_part:  # backbone: the sum of both, each non-zero
            assert ce[name].abs().max() > 0 and bkl[name].abs().max() > 0
            torch.testing.assert_close(total[name], ce[name] + bkl[name])


def test_inference_uses_the_main_head():
    model = tiny_student("nonlinear")
    x = torch.randn(5, 4, dtype=torch.float64)
    out = model.train()(x)
    assert isinstance(out, DualHeadLogits) and out.aux.shape == out.main.shape == (5, 5)
    model.eval()
    torch.testing.assert_close(model(x), model.head(model.backbone(x)))
    both = model(x, both=True)
    torch.testing.assert_close(both.main, model(x))
    assert not torch.allclose(both.aux, both.main)
    assert model.train()(x, both=False).shape == (5, 5)
    from_int = DualHeadStudent(4, 3)
    assert isinstance(from_int.backbone, torch.nn.Identity) and from_int.aux_head.in_features == 4
    seq = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.Linear(9, 7), torch.nn.ReLU())
    assert DualHeadStudent(seq, 3).head.in_features == 7
    assert DualHeadStudent(seq, 3, in_features=7).head.in_features == 7


def test_module_form_and_registry():
    main, t, y = random_pair(seed=5)
    aux = random_pair(seed=6)[0]
    loss = DualHeadKDLoss(temperature=3.0, aux_weight=0.1)
    torch.testing.assert_close(
        loss(main, aux, t, y), dual_head_kd_loss(main, aux, t, y, temperature=3.0, aux_weight=0.1)
    )
    torch.testing.assert_close(
        BinaryKLLoss(normalized=True)(main, t), binary_kl_loss(main, t, normalized=True)
    )
    entry = get("dual_head_kd")
    assert entry.papers == (23,) and entry.defaults["temperature"] == 2.0
    assert entry.defaults["kd_weight"] == 0.0 and entry.defaults["normalized"] is True
    torch.testing.assert_close(entry.build()(main, aux, t, y), dual_head_kd_loss(main, aux, t, y))
    assert get("binary_kl").papers == (23,) and get("binary_kl").defaults["normalized"] is False


def dhkd_fn(s, t, y, **kw):
    return dual_head_kd_loss(s, 0.5 * s.flip(1), t, y, kd_weight=0.5, **kw)


def test_contract():
    s, t, y = random_pair()
    for normalized in (False, True):
        check_reductions(binary_kl_loss, s, t, y, normalized=normalized)
        check_gradcheck(binary_kl_loss, s, t, None, normalized=normalized)
        check_teacher_gets_no_grad(binary_kl_loss, s, t, None, normalized=normalized)
        check_half_precision(binary_kl_loss, None, normalized=normalized)
    check_reductions(dhkd_fn, s, t, y)
    check_gradcheck(dhkd_fn, s, t, y)
    check_teacher_gets_no_grad(dhkd_fn, s, t, y)
    check_half_precision(dhkd_fn, y)
    aux = random_pair(seed=7)[0].requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: dual_head_kd_loss(s, a, t, y, kd_weight=0.3, reduction="sum"), (aux,)
    )


def test_bad_inputs():
    s, t, y = random_pair(4, 5, dtype=torch.float32)
    a = s.flip(1)
    cases = [
        ((s[0], a, t, y), {}, "main_logits"),
        ((s, a[:, :-1], t, y), {}, "aux_logits"),
        ((s, torch.full_like(a, float("nan")), t, y), {}, "aux_logits"),
        ((s, a, t[:, :-1], y), {}, "teacher"),
        ((s, a, torch.full_like(t, float("inf")), y), {}, "teacher"),
        ((s, a, t, None), {}, "target"),
        ((s, a, t, torch.tensor([0, 1, 5, 0])), {}, "target"),
        ((s[:0], a[:0], t[:0], y[:0]), {}, "main_logits"),
        ((s, a, t, y), {"temperature": 0.0}, "temperature"),
        ((s, a, t, y), {"kd_temperature": -1.0}, "kd_temperature"),
        ((s, a, t, y), {"ce_weight": -0.1}, "ce_weight"),
        ((s, a, t, y), {"aux_weight": float("nan")}, "aux_weight"),
        ((s, a, t, y), {"kd_weight": -1.0}, "kd_weight"),
        ((s, a, t, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            dual_head_kd_loss(*args, **kw)
    for args, kw, name in [
        ((s, t[:, :-1]), {}, "teacher"),
        ((s, t), {"temperature": 0.0}, "temperature"),
        ((s, t, torch.tensor([0, 1, 9, 0])), {}, "target"),
        ((torch.full_like(s, float("nan")), t), {}, "student"),
    ]:
        with pytest.raises(ValueError, match=name):
            binary_kl_loss(*args, **kw)
    for kw, name in [
        ({"temperature": -2.0}, "temperature"),
        ({"kd_temperature": 0.0}, "kd_temperature"),
        ({"aux_weight": -1.0}, "aux_weight"),
        ({"reduction": "avg"}, "reduction"),
    ]:
        with pytest.raises(ValueError, match=name):
            DualHeadKDLoss(**kw)
    with pytest.raises(ValueError, match="temperature"):
        BinaryKLLoss(temperature=0.0)
    with pytest.raises(ValueError, match="in_features"):
        DualHeadStudent(torch.nn.Sequential(torch.nn.ReLU()), 3)
    with pytest.raises(ValueError, match="num_classes"):
        DualHeadStudent(4, 1)
    with pytest.raises(ValueError, match="aux_hidden"):
        DualHeadStudent(4, 3, aux_head="nonlinear", aux_hidden=0)
    with pytest.raises(ValueError, match="aux_dropout"):
        DualHeadStudent(4, 3, aux_dropout=1.0)
    with pytest.raises(ValueError, match="aux_head"):
        DualHeadStudent(4, 3, aux_head="mlp")
    with pytest.raises(ValueError, match="backbone"):
        DualHeadStudent("resnet", 3)


def test_gradient_alignment_projects_only_a_conflicting_aux_gradient():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    q = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # only the main loss uses q
    a = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    b_conflict = torch.tensor([-3.0, 1.0, 2.0], dtype=torch.float64)  # <a, b> = -1 < 0
    qa = torch.tensor([0.5, -1.0], dtype=torch.float64)
    gradient_aligned_backward((p * a).sum() + (q * qa).sum(), (p * b_conflict).sum(), [p, q])
    g_main = torch.cat([a, qa])
    g_aux = torch.cat([b_conflict, torch.zeros(2, dtype=torch.float64)])
    projected = g_aux - (g_aux @ g_main) / (g_main @ g_main) * g_main
    torch.testing.assert_close(projected @ g_main, torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(torch.cat([p.grad, q.grad]), g_main + projected)
    # no conflict: exactly a plain backward of the sum, accumulated onto existing grads
    b_agree = torch.tensor([1.0, 0.0, 5.0], dtype=torch.float64)
    p.grad, q.grad = torch.ones(3, dtype=torch.float64), None
    gradient_aligned_backward((p * a).sum() + (q * qa).sum(), (p * b_agree).sum(), [p, q])
    torch.testing.assert_close(p.grad, 1 + a + b_agree)
    torch.testing.assert_close(q.grad, qa)
    with pytest.raises(ValueError, match="parameters"):
        gradient_aligned_backward((p * a).sum(), (p * a).sum(), [])
