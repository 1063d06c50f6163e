"""Proxy-Anchor loss: slow loop reference (per proxy and the paper's batch value),
pytorch-metric-learning's value, candidate mask as removal, gradcheck, half precision, bad
inputs, reductions, module and registry."""

from __future__ import annotations

import math

import pytest
import torch

from losskit import catalog
from losskit.embedding.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
from tests.contract import check_matches_reference


def batch(n=8, d=4, c=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    p = torch.randn(c, d, generator=g).to(dtype)
    y = torch.arange(n) % classes  # class 3 (when c = 4) has no example
    return x, y, p


def slow_terms(x, y, p, alpha=32.0, margin=0.1, keep=None):
    """Per-proxy positive and negative terms of Kim et al. 2020 by explicit loops."""
    pos, neg = [], []
    for c in range(p.shape[0]):
        sp, sn = [], []
        for i in range(x.shape[0]):
            if keep is not None and not keep[i, c]:
                continue
            s = torch.dot(x[i], p[c]) / (x[i].norm() * p[c].norm())
            if y[i] == c:
                sp.append(torch.exp(-alpha * (s - margin)))
            else:
                sn.append(torch.exp(alpha * (s + margin)))
        zero = x.sum() * 0 + p.sum() * 0
        pos.append(torch.log(1 + sum(sp, zero)))
        neg.append(torch.log(1 + sum(sn, zero)))
        pos[-1] = pos[-1] if sp else zero
    return torch.stack(pos), torch.stack(neg)


def slow_mean(x, y, p, **kw):
    pos, neg = slow_terms(x, y, p, **kw)
    with_pos = len({int(v) for v in y})
    return pos.sum() / with_pos + neg.sum() / p.shape[0]


def test_matches_slow_reference():
    x, y, p = batch()
    check_matches_reference(
        lambda a, b: proxy_anchor_loss(a, y, b, reduction="none"),
        lambda a, b: sum(slow_terms(a, y, b)),
        x,
        p,
    )
    check_matches_reference(
        lambda a, b: proxy_anchor_loss(a, y, b, alpha=4.0, margin=0.3),
        lambda a, b: slow_mean(a, y, b, alpha=4.0, margin=0.3),
        x,
        p,
    )


def test_matches_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    x, y, p = batch(12, 5, 4, seed=3)
    ref = pml.ProxyAnchorLoss(num_classes=4, embedding_size=5, margin=0.1, alpha=32)
    ref.proxies.data = p.clone()
    torch.testing.assert_close(proxy_anchor_loss(x, y, p), ref(x, y).to(x.dtype))


def test_candidate_mask_removes_pairs():
    x, y, p = batch(seed=1)
    keep = torch.ones(8, 4, dtype=torch.bool)
    keep[2] = False  # example 2 is removed entirely
    keep[5, 0] = False
    out = proxy_anchor_loss(x, y, p, candidate_mask=keep, reduction="none")
    torch.testing.assert_close(out, sum(slow_terms(x, y, p, keep=keep)))
    drop = torch.arange(8) != 2
    keep_all_but_2 = torch.ones(7, 4, dtype=torch.bool)
    keep_all_but_2[4, 0] = False  # example 5 sits at row 4 once example 2 is gone
    torch.testing.assert_close(
        proxy_anchor_loss(x, y, p, candidate_mask=keep),
        proxy_anchor_loss(x[drop], y[drop], p, candidate_mask=keep_all_but_2),
    )


def test_proxy_without_examples_only_pushes():
    x, y, p = batch()
    p = p.clone().requires_grad_(True)
    pos, neg = slow_terms(x, y, p.detach())
    out = proxy_anchor_loss(x, y, p, reduction="none")
    assert pos[3] == 0
    torch.testing.assert_close(out[3], neg[3])
    # the mean counts 3 proxies with positives and 4 for the negatives
    torch.testing.assert_close(proxy_anchor_loss(x, y, p), pos.sum() / 3 + neg.sum() / 4)


def test_perfect_separation_limit():
    # examples on their proxies, proxies orthogonal: s = 1 (positives) and 0 (negatives)
    p = torch.eye(3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    x = p[y] * 2.0
    a, m = 32.0, 0.1
    expected_pos = torch.tensor([2, 1, 1], dtype=torch.float64) * math.exp(-a * (1 - m))
    expected_neg = torch.tensor([2, 3, 3], dtype=torch.float64) * math.exp(a * m)
    torch.testing.assert_close(
        proxy_anchor_loss(x, y, p, reduction="none"),
        torch.log1p(expected_pos) + torch.log1p(expected_neg),
    )


def test_gradcheck():
    x, y, p = batch(6, 3, 3)
    x.requires_grad_(True)
    p.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: proxy_anchor_loss(a, y, b, alpha=3.0, reduction="none"), (x, p)
    )
    assert torch.autograd.gradcheck(lambda a, b: proxy_anchor_loss(a, y, b, alpha=3.0), (x, p))


def test_reductions():
    x, y, p = batch(seed=4)
    none = proxy_anchor_loss(x, y, p, reduction="none")
    assert none.shape == (4,)
    torch.testing.assert_close(proxy_anchor_loss(x, y, p, reduction="sum"), none.sum())
    torch.testing.assert_close(proxy_anchor_loss(x, y, p), slow_mean(x, y, p))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y, p = batch(16, 8, 4, dtype=torch.float32, seed=5)
    xh = x.to(dtype).requires_grad_(True)
    out = proxy_anchor_loss(xh, y, p, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = proxy_anchor_loss(xh.detach().float(), y, p, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, y, p = batch(4, 3, 3, dtype=torch.float32)
    cases = [
        ((x[0], y, p), {}, "embeddings"),
        ((x, y[:3], p), {}, "labels"),
        ((x, y.float(), p), {}, "labels"),
        ((x, torch.tensor([0, 1, 3, 0]), p), {}, "labels"),
        ((x, torch.tensor([0, -1, 2, 0]), p), {}, "labels"),
        ((x, y, p[:, :2]), {}, "proxies"),
        ((x, y, p[0]), {}, "proxies"),
        ((x, y, p[:0]), {}, "proxies"),
        ((x, y, p * float("nan")), {}, "proxies"),
        ((x * float("inf"), y, p), {}, "embeddings"),
        ((x[:0], y[:0], p), {}, "embeddings"),
        ((x, y, p), {"alpha": 0.0}, "alpha"),
        ((x, y, p), {"margin": float("nan")}, "margin"),
        ((x, y, p), {"reduction": "avg"}, "reduction"),
        ((x, y, p), {"candidate_mask": torch.ones(4, 4, dtype=torch.bool)}, "candidate_mask"),
        ((x, y, p), {"candidate_mask": torch.ones(4, 3)}, "candidate_mask"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            proxy_anchor_loss(*args, **kw)


def test_module_and_registry():
    torch.manual_seed(0)
    m = ProxyAnchorLoss(3, 4, alpha=16.0, reduction="sum")
    assert m.proxies.shape == (3, 4) and "proxies" in dict(m.named_parameters())
    x, y, _ = batch(6, 4, 3, dtype=torch.float32)
    torch.testing.assert_close(
        m(x, y), proxy_anchor_loss(x, y, m.proxies, alpha=16.0, reduction="sum")
    )
    m(x, y).backward()
    assert m.proxies.grad is not None and torch.isfinite(m.proxies.grad).all()
    for bad in ({"num_classes": 0}, {"in_features": 2.5}, {"alpha": -1.0}, {"reduction": "x"}):
        args = {"num_classes": 3, "in_features": 4, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            ProxyAnchorLoss(**args)
    (entry,) = [e for e in catalog(family="embedding") if e.name == "proxy_anchor"]
    assert entry.papers == () and entry.function is proxy_anchor_loss
    assert entry.defaults == {"alpha": 32.0, "margin": 0.1}
    built = entry.build(num_classes=3, in_features=4)
    assert isinstance(built, ProxyAnchorLoss) and built.alpha == 32.0
