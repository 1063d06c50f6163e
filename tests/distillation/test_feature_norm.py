import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from losskit import get
from losskit.distillation.feature_norm import (
    NDLoss,
    class_means_from_features,
    nd_loss,
    nd_projector,
    teacher_class_means,
)
from tests.contract import check_matches_reference
from tests.distillation.contract import (
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_teacher_gets_no_grad,
)

N, D, C = 8, 5, 3


def make(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(N, D, generator=g, dtype=dtype)
    t = 2 * torch.randn(N, D, generator=g, dtype=dtype)
    means = torch.randn(C, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (N,), generator=g)
    return s, t, means, y


def with_means(means):
    """``fn(student, teacher, target, **kw)`` for the contract helpers."""
    return lambda s, t, y, **kw: nd_loss(s, means, y, teacher_features=t, **kw)


def slow_nd(s, t, means, y, lam):
    """The paper's formula one sample at a time, as the reference code loops."""
    out = []
    for i in range(s.shape[0]):
        c = means[int(y[i])]
        e = c / torch.sqrt((c * c).sum())
        ns, nt = torch.sqrt((s[i] * s[i]).sum()), torch.sqrt((t[i] * t[i]).sum())
        ref = ns if ns >= nt else nt
        out.append(lam * (1 - sum(s[i, k] * e[k] for k in range(s.shape[1])) / ref))
    return torch.stack(out)


@pytest.mark.parametrize("lam", [1.0, 2.5])
def test_matches_slow_reference_value_and_gradient(lam):
    s, t, means, y = make()
    s[:3] *= 4  # some students larger than their teacher, some smaller
    check_matches_reference(
        lambda z: nd_loss(z, means, y, teacher_features=t, lam=lam, reduction="none"),
        lambda z: slow_nd(z, t, means, y, lam),
        s,
    )
    assert (s.norm(dim=1) >= t.norm(dim=1)).any() and (s.norm(dim=1) < t.norm(dim=1)).any()


def test_direction_regime_is_scale_invariant_with_gradient_orthogonal_to_features():
    s, t, means, y = make(1)
    s = s / s.norm(dim=1, keepdim=True) * (t.norm(dim=1, keepdim=True) + 1)  # ||s|| > ||t||
    base = nd_loss(s, means, y, teacher_features=t, lam=1.0, reduction="none")
    e = means[y] / means[y].norm(dim=1, keepdim=True)
    torch.testing.assert_close(base, 1 - torch.nn.functional.cosine_similarity(s, e, dim=1))
    for k in (1.5, 10.0):
        scaled = nd_loss(k * s, means, y, teacher_features=t, lam=1.0, reduction="none")
        torch.testing.assert_close(scaled, base)
    sg = s.clone().requires_grad_(True)
    nd_loss(sg, means, y, teacher_features=t, reduction="sum").backward()
    torch.testing.assert_close((sg.grad * s).sum(dim=1), torch.zeros(N, dtype=s.dtype))
    assert sg.grad.abs().max() > 1e-3  # not aligned: the direction term still pulls


def test_zero_loss_and_zero_gradient_exactly_at_alignment_with_large_norm():
    _, t, means, y = make(2)
    e = means[y] / means[y].norm(dim=1, keepdim=True)
    for extra in (0.0, 3.0):  # ||s|| == ||t|| and ||s|| > ||t||
        s = (e * (t.norm(dim=1, keepdim=True) + extra)).requires_grad_(True)
        loss = nd_loss(s, means, y, teacher_features=t, reduction="none")
        torch.testing.assert_close(loss, torch.zeros(N, dtype=s.dtype), atol=1e-12, rtol=0)
        if extra > 0:
            loss.sum().backward()
            torch.testing.assert_close(s.grad, torch.zeros_like(s), atol=1e-12, rtol=0)


def test_norm_regime_is_linear_with_constant_gradient_along_the_class_mean():
    s, t, means, y = make(3)
    s = s / s.norm(dim=1, keepdim=True) * 0.2 * t.norm(dim=1, keepdim=True)  # ||s|| < ||t||
    e = means[y] / means[y].norm(dim=1, keepdim=True)
    for lam in (1.0, 2.0):
        sg = s.clone().requires_grad_(True)
        nd_loss(sg, means, y, teacher_features=t, lam=lam, reduction="sum").backward()
        torch.testing.assert_close(sg.grad, -lam * e / t.norm(dim=1, keepdim=True))
    # aligned but short: 1 - ||s|| / ||t||, decreasing linearly as the norm grows
    for k in (0.1, 0.5, 0.9):
        short = k * t.norm(dim=1, keepdim=True) * e
        loss = nd_loss(short, means, y, teacher_features=t, lam=1.0, reduction="none")
        torch.testing.assert_close(loss, torch.full((N,), 1 - k, dtype=s.dtype))


def test_bounds_and_positivity_off_alignment():
    for seed in range(5):
        s, t, means, y = make(seed)
        loss = nd_loss(s, means, y, teacher_features=t, lam=1.5, reduction="none")
        assert (loss > 0).all() and (loss <= 3.0).all()
    _, t, means, y = make(0)
    anti = -means[y] * 100  # opposite direction, large norm: the maximum 2 * lam
    torch.testing.assert_close(
        nd_loss(anti, means, y, teacher_features=t, lam=1.5, reduction="none"),
        torch.full((N,), 3.0, dtype=t.dtype),
    )


def test_ignore_index_and_module():
    s, t, means, y = make(4)
    y[1] = -100
    out = nd_loss(s, means, y, teacher_features=t, reduction="none")
    assert out[1] == 0
    torch.testing.assert_close(
        nd_loss(s, means, y, teacher_features=t), out[[0, *range(2, N)]].mean()
    )
    mod = NDLoss(means, lam=1.3)
    assert "class_means" in dict(mod.named_buffers())
    torch.testing.assert_close(mod(s, t, y), nd_loss(s, means, y, teacher_features=t, lam=1.3))
    means.zero_()  # the module keeps its own copy
    assert mod.class_means.abs().sum() > 0


def test_contract():
    s, t, means, y = make(5)
    fn = with_means(means)
    check_reductions(fn, s, t, y)
    check_gradcheck(fn, s, t, y)
    check_teacher_gets_no_grad(fn, s, t, y)
    check_half_precision(with_means(means.float()), y, c=D)
    mg = means.clone().requires_grad_(True)
    sg = s.clone().requires_grad_(True)
    nd_loss(sg, mg, y, teacher_features=t).backward()
    assert mg.grad is None


def test_bad_inputs():
    s, t, means, y = make(6, torch.float32)
    t_inf = t.clone()
    t_inf[0, 0] = float("inf")
    cases = [
        ((s[0], means, y), t, {}, "student_features"),
        ((s[:0], means, y[:0]), t[:0], {}, "student_features"),
        ((torch.full_like(s, float("nan")), means, y), t, {}, "student_features"),
        ((s, means, y), t[:, :-1], {}, "teacher_features"),
        ((s, means, y), t[:-1], {}, "teacher_features"),
        ((s, means, y), t_inf, {}, "teacher_features"),
        ((s, means[:, :-1], y), t, {}, "class_means"),
        ((s, means[0], y), t, {}, "class_means"),
        ((s, means.long(), y), t, {}, "class_means"),
        ((s, torch.cat([means, torch.zeros(1, D)]), y), t, {}, "class_means"),
        ((s, means, torch.full((N,), C)), t, {}, "target"),
        ((s, means, y[:-1]), t, {}, "target"),
        ((s, means, y.float()), t, {}, "target"),
        ((s, means, y), t, {"lam": -1.0}, "lam"),
        ((s, means, y), t, {"reduction": "avg"}, "reduction"),
    ]
    for args, teacher, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            nd_loss(*args, teacher_features=teacher, **kw)
    for bad in (means[:, :, None], torch.zeros(C, D)):
        with pytest.raises(ValueError, match="class_means"):
            NDLoss(bad)
    with pytest.raises(ValueError, match="lam"):
        NDLoss(means, lam=float("nan"))


def test_class_means_equal_a_loop():
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(40, D, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    labels[:4] = torch.arange(4)
    expected = torch.stack(
        [
            torch.stack([feats[i] for i in range(40) if labels[i] == k]).double().mean(0)
            for k in range(4)
        ]
    ).float()
    torch.testing.assert_close(class_means_from_features(feats, labels, 4), expected)
    loader = DataLoader(TensorDataset(feats, labels), batch_size=7, shuffle=True, generator=g)
    torch.testing.assert_close(teacher_class_means(torch.nn.Identity(), loader, 4), expected)


def test_class_means_accumulate_in_float64():
    g = torch.Generator().manual_seed(8)
    feats = (1e6 + torch.randn(4096, 2, generator=g, dtype=torch.float64)).float()
    labels = torch.arange(4096) % 2
    truth = torch.stack([feats[labels == k].double().mean(0) for k in range(2)]).float()
    loader = DataLoader(TensorDataset(feats, labels), batch_size=512)
    got = teacher_class_means(torch.nn.Identity(), loader, 2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, truth, rtol=2e-7, atol=0)


class Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, D), torch.nn.Dropout(0.9))
        self.modes = []

    def features(self, x):
        self.modes.append(self.training)
        return self.body(x)

    def forward(self, x):
        return self.features(x)


def test_teacher_class_means_uses_eval_mode_no_grad_and_restores_mode():
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(30, 3, generator=g), torch.arange(30) % C
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    teacher = Teacher().train()
    with torch.no_grad():
        expected = class_means_from_features(teacher.body.eval()(x), y, C)
    teacher.train()
    for fn in (teacher, teacher.features):
        teacher.modes.clear()
        means = teacher_class_means(fn, loader, C)
        assert teacher.modes == [False] * 4 and teacher.training
        assert not means.requires_grad
        torch.testing.assert_close(means, expected)
    fn = lambda z: teacher.body(z)  # noqa: E731  (a plain callable: no mode handling)
    assert teacher_class_means(fn, loader, C).shape == (C, D)


def test_class_means_bad_inputs():
    feats, labels = torch.randn(6, D), torch.tensor([0, 0, 1, 1, 3, 3])
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        class_means_from_features(feats, labels, 4)
    with pytest.raises(ValueError, match="labels"):
        class_means_from_features(feats, labels, 3)
    with pytest.raises(ValueError, match="labels"):
        class_means_from_features(feats, labels.float(), 4)
    with pytest.raises(ValueError, match="features"):
        class_means_from_features(feats[:, 0], labels, 4)
    with pytest.raises(ValueError, match="num_classes"):
        class_means_from_features(feats, labels, 0)
    with pytest.raises(ValueError, match="no batches"):
        teacher_class_means(torch.nn.Identity(), [], 2)


def test_projector_and_registry():
    proj = nd_projector(4, D)
    assert proj(torch.randn(6, 4)).shape == (6, D)
    for bad in ({"in_features": 0}, {"dropout": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            nd_projector(**{"in_features": 4, "out_features": D, **bad})
    entry = get("nd")
    assert entry.papers == (21,) and entry.defaults == {"lam": 2.0}
    s, t, means, y = make(10)
    built = entry.build(class_means=means)
    torch.testing.assert_close(built(s, t, y), nd_loss(s, means, y, teacher_features=t))
    assert math.isclose(built.lam, 2.0)
