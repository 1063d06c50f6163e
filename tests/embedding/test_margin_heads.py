"""ArcFace / CosFace heads: margin 0 is scale*cos, target logits in closed form, the
theta + m > pi fallback, gradcheck, half precision, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit.embedding.margin_heads import ArcFaceHead, CosFaceHead


def setup(n=6, d=4, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


def cosines(head, x):
    return F.normalize(x, dim=1) @ F.normalize(head.weight.to(x.dtype), dim=1).T


@pytest.mark.parametrize("cls", [ArcFaceHead, CosFaceHead])
def test_margin_zero_is_scaled_cosine(cls):
    x, y = setup()
    head = cls(4, 5, scale=10.0, margin=0.0).double()
    torch.testing.assert_close(head(x, y), 10.0 * cosines(head, x))


def test_arcface_target_logit():
    x, y = setup(8)
    head = ArcFaceHead(4, 5, scale=30.0, margin=0.5).double()
    out = head(x, y)
    cos = cosines(head, x)
    theta = torch.acos(cos.clamp(-1, 1))
    idx = torch.arange(8)
    expected = torch.where(
        theta[idx, y] + 0.5 <= math.pi,
        30.0 * torch.cos(theta[idx, y] + 0.5),
        30.0 * (cos[idx, y] - 0.5 * math.sin(0.5)),
    )
    torch.testing.assert_close(out[idx, y], expected)
    other = ~F.one_hot(y, 5).bool()
    torch.testing.assert_close(out[other], 30.0 * cos[other])


def test_arcface_fallback_beyond_pi():
    head = ArcFaceHead(2, 2, scale=1.0, margin=0.5).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = torch.tensor([0.3, 2.0, 2.8, 3.0], dtype=torch.float64)  # last two: theta+m > pi
    x = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    out = head(x, torch.zeros(4, dtype=torch.long))[:, 0]
    expected = torch.where(
        theta + 0.5 <= math.pi, torch.cos(theta + 0.5), torch.cos(theta) - 0.5 * math.sin(0.5)
    )
    torch.testing.assert_close(out, expected)
    assert (out[1:] < out[:-1]).all()  # still decreasing in theta


def test_cosface_target_logit():
    x, y = setup()
    head = CosFaceHead(4, 5, scale=20.0, margin=0.35).double()
    out = head(x, y)
    cos = cosines(head, x)
    torch.testing.assert_close(out, 20.0 * (cos - 0.35 * F.one_hot(y, 5)))


@pytest.mark.parametrize("cls", [ArcFaceHead, CosFaceHead])
def test_gradcheck_and_cross_entropy(cls):
    x, y = setup()
    head = cls(4, 5, scale=4.0).double()
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, w: head(a, y), (xg, head.weight))  # w is head.weight
    loss = F.cross_entropy(head(x, y), y)
    loss.backward()
    assert torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = setup(8, 16, 10, seed=1)
    head = ArcFaceHead(16, 10)
    xh = x.to(dtype).requires_grad_(True)
    out = head(xh, y)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = head(xh.detach().float(), y)
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=0.5)
    F.cross_entropy(out.float(), y).backward()
    assert torch.isfinite(xh.grad).all() and torch.isfinite(head.weight.grad).all()


def test_bad_inputs():
    x, y = setup()
    head = CosFaceHead(4, 5).double()
    cases = [
        ((x[0], y), "embeddings"),
        ((x[:, :3], y), "embeddings"),
        ((x * float("nan"), y), "embeddings"),
        ((x, y[:3]), "labels"),
        ((x, y.float()), "labels"),
        ((x, torch.full_like(y, 5)), "labels"),
        ((x, torch.full_like(y, -1)), "labels"),
    ]
    for args, name in cases:
        with pytest.raises(ValueError, match=name):
            head(*args)
    for kw, name in [
        ({"scale": 0.0}, "scale"),
        ({"margin": -0.1}, "margin"),
    ]:
        with pytest.raises(ValueError, match=name):
            ArcFaceHead(4, 5, **kw)
    with pytest.raises(ValueError, match="in_features"):
        ArcFaceHead(0, 5)
    with pytest.raises(ValueError, match="num_classes"):
        CosFaceHead(4, 2.5)
