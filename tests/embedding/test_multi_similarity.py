"""Multi-similarity loss: slow reference with mining, additive decomposition, closed form on
one positive and one negative, gradcheck, half precision, bad inputs, reductions."""

from __future__ import annotations

import math

import pytest
import torch

from losskit import catalog
from losskit.embedding.multi_similarity import MultiSimilarityLoss, multi_similarity_loss
from tests.contract import check_gradcheck, check_matches_reference


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.arange(n) % classes
    return x, y


def slow_ms(x, y, alpha=2.0, beta=50.0, base=0.5, eps=0.1, ref=None, ref_y=None):
    """Loop reference of Wang et al. 2019 (MS mining + MS loss), cosine similarities."""
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    out = []
    for i in range(x.shape[0]):
        zi = x[i] / x[i].norm()
        cand = [a for a in range(ref.shape[0]) if not (self_excluded and a == i)]
        s = {a: torch.dot(zi, ref[a] / ref[a].norm()) for a in cand}
        ps = [a for a in cand if ref_y[a] == y[i]]
        ns = [a for a in cand if ref_y[a] != y[i]]
        min_p = min((s[p].item() for p in ps), default=math.inf)
        max_n = max((s[n].item() for n in ns), default=-math.inf)
        kp = [p for p in ps if s[p].item() - eps < max_n]
        kn = [n for n in ns if s[n].item() + eps > min_p]
        zero = x.new_zeros(()) * x.sum()
        pos = torch.log(1 + sum((torch.exp(-alpha * (s[p] - base)) for p in kp), zero)) / alpha
        neg = torch.log(1 + sum((torch.exp(beta * (s[n] - base)) for n in kn), zero)) / beta
        out.append(pos + neg)
    return torch.stack(out)


def test_matches_slow_reference():
    x, y = batch()
    check_matches_reference(
        lambda a: multi_similarity_loss(a, y, beta=10.0, reduction="none"),
        lambda a: slow_ms(a, y, beta=10.0),
        x,
    )
    check_matches_reference(
        lambda a: multi_similarity_loss(a, y, epsilon=0.5, base=0.2, reduction="none"),
        lambda a: slow_ms(a, y, base=0.2, eps=0.5),
        x,
    )
    r, ry = batch(6, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: multi_similarity_loss(a, y, ref_embeddings=b, ref_labels=ry, reduction="none"),
        lambda a, b: slow_ms(a, y, ref=b, ref_y=ry),
        x,
        r,
    )


def test_decomposes_into_positive_and_negative_parts():
    # l = f(alpha) + g(beta): additive separability in the two hyperparameters
    x, y = batch(10, 5, seed=2)

    def f(a, b):
        return multi_similarity_loss(x, y, alpha=a, beta=b, epsilon=1.0, reduction="none")

    torch.testing.assert_close(f(2.0, 50.0) + f(3.0, 10.0), f(2.0, 10.0) + f(3.0, 50.0))


@pytest.mark.parametrize("sp,sn", [(0.8, 0.75), (0.3, 0.6), (0.9, 0.2)])
def test_closed_form_one_positive_one_negative(sp, sn):
    a, b, lam, eps = 2.0, 50.0, 0.5, 0.1
    anchor = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[sp, 0.0], [sn, 0.0]], dtype=torch.float64)
    out = multi_similarity_loss(
        anchor,
        torch.tensor([0]),
        ref_embeddings=ref,
        ref_labels=torch.tensor([0, 1]),
        normalize=False,
        reduction="none",
    )
    mined = sn > sp - eps
    expected = (
        math.log1p(math.exp(-a * (sp - lam))) / a + math.log1p(math.exp(b * (sn - lam))) / b
        if mined
        else 0.0
    )
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float64))


def test_anchor_without_positive_drops_out():
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 2, 2])
    xg = x.clone().requires_grad_(True)
    none = multi_similarity_loss(xg, y, epsilon=2.0, reduction="none")
    assert none[2] == 0
    keep = torch.arange(5) != 2
    torch.testing.assert_close(multi_similarity_loss(x, y, epsilon=2.0), none[keep].mean())
    none.sum().backward()
    assert torch.isfinite(xg.grad).all()
    out = multi_similarity_loss(xg[:1], y[:1])
    assert out == 0 and torch.isfinite(out)
    assert multi_similarity_loss(x, torch.arange(5)) == 0


def test_gradcheck():
    x, y = batch(6, 3)
    check_gradcheck(lambda a, b, **kw: multi_similarity_loss(a, b, beta=5.0, **kw), x, y)
    r, ry = batch(4, 3, seed=5)
    check_gradcheck(
        lambda a, b, **kw: multi_similarity_loss(b, y, ref_embeddings=a, ref_labels=ry, **kw),
        r,
        x,
    )


def test_reductions():
    x, y = batch()
    none = multi_similarity_loss(x, y, epsilon=2.0, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(
        multi_similarity_loss(x, y, epsilon=2.0, reduction="sum"), none.sum()
    )
    torch.testing.assert_close(multi_similarity_loss(x, y, epsilon=2.0), none.mean())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=4)
    xh = (10 * x).to(dtype).requires_grad_(True)
    out = multi_similarity_loss(xh, y, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = multi_similarity_loss(xh.detach().float(), y, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((x[0], y), {}, "embeddings"),
        ((x, y[:3]), {}, "labels"),
        ((x, y.float()), {}, "labels"),
        ((torch.full_like(x, float("inf")), y), {}, "embeddings"),
        ((x[:0], y[:0]), {}, "embeddings"),
        ((x, y), {"ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"ref_embeddings": r, "ref_labels": ry[:4]}, "ref_labels"),
        ((x, y), {"alpha": 0.0}, "alpha"),
        ((x, y), {"beta": -1.0}, "beta"),
        ((x, y), {"base": float("nan")}, "base"),
        ((x, y), {"epsilon": -0.1}, "epsilon"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            multi_similarity_loss(*args, **kw)
    with pytest.raises(ValueError, match="beta"):
        MultiSimilarityLoss(beta=0.0)


def test_module_and_registry():
    x, y = batch()
    torch.testing.assert_close(
        MultiSimilarityLoss(3.0, 40.0, reduction="none")(x, y),
        multi_similarity_loss(x, y, alpha=3.0, beta=40.0, reduction="none"),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "multi_similarity"]
    assert entry.module is MultiSimilarityLoss and entry.papers == ()
    m = entry.build()
    assert (m.alpha, m.beta, m.base, m.epsilon) == (2.0, 50.0, 0.5, 0.1)
