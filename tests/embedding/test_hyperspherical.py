"""Hyperspherical (normalised) softmax: slow reference, bounds, scale invariances, the
gradient orthogonal to the feature, margin-0 ArcFace/CosFace, novel-class prototypes and
prediction (joint and disjoint), gradcheck, half precision, bad inputs, reductions, module
and registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.hyperspherical import (
    HypersphericalSoftmaxLoss,
    class_prototypes,
    hyperspherical_softmax_loss,
    predict_novel_classes,
)
from losskit.embedding.margin_heads import ArcFaceHead, CosFaceHead
from tests.contract import check_matches_reference


def batch(n=8, d=4, c=5, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    w = torch.randn(c, d, generator=g).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return x, w, y


def slow_loss(x, w, y, scale):
    out = []
    for i in range(x.shape[0]):
        cos = [torch.dot(x[i], w[c]) / (x[i].norm() * w[c].norm()) for c in range(w.shape[0])]
        denom = sum(torch.exp(scale * v) for v in cos)
        out.append(torch.log(denom) - scale * cos[y[i]])
    return torch.stack(out)


def test_matches_slow_reference():
    x, w, y = batch()
    for scale in (1.0, 10.0, 30.0):
        check_matches_reference(
            lambda a, b, s=scale: hyperspherical_softmax_loss(a, y, b, scale=s, reduction="none"),
            lambda a, b, s=scale: slow_loss(a, b, y, s),
            x,
            w,
        )


def test_bounds_and_scale_invariance():
    x, w, y = batch(10, 6, 4, seed=1)
    s = 7.0
    out = hyperspherical_softmax_loss(x, y, w, scale=s, reduction="none")
    c = w.shape[0]
    # logits in [-s, s]: l in [log(1 + (C-1) e^{-2s}), log(1 + (C-1) e^{2s})]
    assert (out >= math.log1p((c - 1) * math.exp(-2 * s))).all()
    assert (out <= math.log1p((c - 1) * math.exp(2 * s))).all()
    g = torch.Generator().manual_seed(5)
    a = torch.rand(10, 1, generator=g, dtype=torch.float64) * 5 + 0.1
    b = torch.rand(4, 1, generator=g, dtype=torch.float64) * 5 + 0.1
    torch.testing.assert_close(
        hyperspherical_softmax_loss(a * x, y, b * w, scale=s, reduction="none"), out
    )
    # reaching the bound: features on their class weight, orthogonal class weights
    eye = torch.eye(4, dtype=torch.float64)
    lab = torch.arange(4)
    torch.testing.assert_close(
        hyperspherical_softmax_loss(3 * eye, lab, eye, scale=s, reduction="none"),
        torch.full((4,), math.log1p(3 * math.exp(-s)), dtype=torch.float64),
    )


def test_gradient_orthogonal_to_features():
    # scale invariance in each z_i: the gradient is tangent to the sphere
    x, w, y = batch(6, 5, 3, seed=2)
    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    hyperspherical_softmax_loss(xg, y, wg, reduction="sum").backward()
    torch.testing.assert_close((xg.grad * x).sum(dim=1), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close((wg.grad * w).sum(dim=1), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("head_cls", [ArcFaceHead, CosFaceHead])
def test_margin_zero_heads_agree(head_cls):
    x, _, y = batch()
    head = head_cls(4, 5, scale=12.0, margin=0.0).double()
    torch.testing.assert_close(
        hyperspherical_softmax_loss(x, y, head.weight, scale=12.0, reduction="none"),
        F.cross_entropy(head(x, y), y, reduction="none"),
    )


def test_class_prototypes():
    x, _, _ = batch(9, 4, seed=3)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 2])
    p = class_prototypes(x, y)
    assert p.shape == (3, 4)
    for k in range(3):
        members = [x[i] / x[i].norm() for i in range(9) if y[i] == k]
        mean = sum(members) / len(members)
        torch.testing.assert_close(p[k], mean / mean.norm())
    # invariant to rescaling the examples; unit norm
    torch.testing.assert_close(class_prototypes(x * torch.arange(1, 10)[:, None], y), p)
    torch.testing.assert_close(p.norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert not p.requires_grad and not class_prototypes(x.requires_grad_(True), y).requires_grad
    assert class_prototypes(x.detach(), y, num_classes=3).shape == (3, 4)


def test_predict_novel_classes():
    x, w, _ = batch(12, 6, 3, seed=4)
    p = F.normalize(torch.randn(2, 6, generator=torch.Generator().manual_seed(9)), dim=1)
    p = p.double()
    # disjoint: nearest prototype on the sphere (Euclidean between unit vectors) = argmax cos
    pred = predict_novel_classes(x, p)
    dist = torch.cdist(F.normalize(x, dim=1), p)
    assert torch.equal(pred, dist.argmin(dim=1))
    # joint: the Keras "add a neuron" model, argmax of the normalised softmax over C + K classes
    joint = predict_novel_classes(x, p, known_weight=w)
    probs = torch.softmax(10.0 * F.normalize(x, dim=1) @ F.normalize(torch.cat([w, p]), dim=1).T, 1)
    assert torch.equal(joint, probs.argmax(dim=1))
    assert joint.dtype == torch.int64 and joint.max() < 5


def test_novel_classes_from_few_shots():
    # unseen, well-separated classes: 3-shot prototypes classify fresh samples exactly
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.eye(4, 8, dtype=torch.float64)
    support_y = torch.arange(4).repeat_interleave(3)
    support = centres[support_y] + 0.3 * torch.randn(12, 8, generator=g, dtype=torch.float64)
    query_y = torch.arange(4).repeat(5)
    query = centres[query_y] + 0.3 * torch.randn(20, 8, generator=g, dtype=torch.float64)
    protos = class_prototypes(support, support_y)
    assert torch.equal(predict_novel_classes(query, protos), query_y)
    known = torch.randn(3, 8, generator=g, dtype=torch.float64)
    known[:, :4] = -known[:, :4].abs()  # trained classes pointing away from the new ones
    assert torch.equal(predict_novel_classes(query, protos, known_weight=known), query_y + 3)


def test_gradcheck():
    x, w, y = batch(5, 3, 4, seed=6)
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: hyperspherical_softmax_loss(a, y, b, scale=3.0, reduction="none"), (xg, wg)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    torch.manual_seed(0)
    module = HypersphericalSoftmaxLoss(16, 10, reduction="none")
    x, _, y = batch(12, 16, 10, dtype=torch.float32, seed=1)
    xh = (100 * x).to(dtype).requires_grad_(True)
    out = module(xh, y)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = module(xh.detach().float(), y)
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert torch.isfinite(xh.grad).all() and torch.isfinite(module.weight.grad).all()
    assert predict_novel_classes(xh, module.weight.detach().to(dtype)).dtype == torch.int64


def test_bad_inputs():
    x, w, y = batch(4, 3, 5, dtype=torch.float32)
    cases = [
        ((x[0], y, w), {}, "embeddings"),
        ((x, y[:3], w), {}, "labels"),
        ((x, y.float(), w), {}, "labels"),
        ((x, torch.tensor([0, 1, 5, 0]), w), {}, "labels"),
        ((x, torch.tensor([0, -1, 2, 0]), w), {}, "labels"),
        ((torch.full_like(x, float("nan")), y, w), {}, "embeddings"),
        ((x, y, w * float("inf")), {}, "weight"),
        ((x, y, w[:, :2]), {}, "weight"),
        ((x[:0], y[:0], w), {}, "embeddings"),
        ((x, y, w), {"scale": 0.0}, "scale"),
        ((x, y, w), {"scale": float("nan")}, "scale"),
        ((x, y, w), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            hyperspherical_softmax_loss(*args, **kw)
    for kw, name in [({"scale": -1.0}, "scale"), ({"reduction": "avg"}, "reduction")]:
        with pytest.raises(ValueError, match=name):
            HypersphericalSoftmaxLoss(3, 5, **kw)
    with pytest.raises(ValueError, match="in_features"):
        HypersphericalSoftmaxLoss(0, 5)
    with pytest.raises(ValueError, match="num_classes"):
        HypersphericalSoftmaxLoss(3, 2.5)
    y2 = torch.tensor([0, 2, 2, 0])
    with pytest.raises(ValueError, match="class 1"):
        class_prototypes(x, y2)
    with pytest.raises(ValueError, match="labels"):
        class_prototypes(x, y2, num_classes=2)
    with pytest.raises(ValueError, match="labels"):
        class_prototypes(x, -y2 - 1)
    with pytest.raises(ValueError, match="num_classes"):
        class_prototypes(x, y2, num_classes=0)
    with pytest.raises(ValueError, match="prototypes"):
        predict_novel_classes(x, w[:, :2])
    with pytest.raises(ValueError, match="known_weight"):
        predict_novel_classes(x, w, known_weight=w[:, :2])


def test_reductions():
    x, w, y = batch()
    none = hyperspherical_softmax_loss(x, y, w, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(hyperspherical_softmax_loss(x, y, w, reduction="sum"), none.sum())
    torch.testing.assert_close(hyperspherical_softmax_loss(x, y, w), none.mean())


def test_module_projection_and_registry():
    torch.manual_seed(0)
    x, _, y = batch(8, 4, 5)
    m = HypersphericalSoftmaxLoss(4, 5, scale=6.0).double()
    before = m(x, y)
    torch.testing.assert_close(before, hyperspherical_softmax_loss(x, y, m.weight, scale=6.0))
    with torch.no_grad():
        m.weight.mul_(3.0)
    assert m.project_() is m
    torch.testing.assert_close(m.weight.norm(dim=1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(m(x, y), before)
    (entry,) = [e for e in catalog(family="embedding") if e.name == "hyperspherical_softmax"]
    assert entry.module is HypersphericalSoftmaxLoss and entry.papers == (25,)
    assert entry.function is hyperspherical_softmax_loss
    built = entry.build(in_features=4, num_classes=5)
    assert built.scale == 10.0 and built.reduction == "mean" and built.weight.shape == (5, 4)
