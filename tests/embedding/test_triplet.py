"""Triplet margin loss: slow reference (all and batch-hard), exact properties, gradcheck,
half precision, bad inputs, reductions."""

from __future__ import annotations

import pytest
import torch

from losskit import catalog
from losskit.embedding.triplet import TripletMarginLoss, triplet_margin_loss
from tests.contract import check_gradcheck, check_matches_reference


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.arange(n) % classes
    return x, y


def slow_terms(x, y, margin, ref=None, ref_y=None):
    """Per anchor, the list of all-pairs terms max(0, s_an - s_ap + m), cosine similarity."""
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
        out.append([torch.relu(s[n] - s[p] + margin) for p in ps for n in ns])
    return out


def slow_triplet(x, y, margin, mining, ref=None, ref_y=None):
    vals = []
    for terms in slow_terms(x, y, margin, ref, ref_y):
        if not terms:
            vals.append(x.new_zeros(()) * x.sum())
        elif mining == "all":
            vals.append(sum(terms) / len(terms))
        else:
            vals.append(torch.stack(terms).max())
    return torch.stack(vals)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_matches_slow_reference(mining):
    x, y = batch()
    check_matches_reference(
        lambda a: triplet_margin_loss(a, y, margin=0.5, mining=mining, reduction="none"),
        lambda a: slow_triplet(a, y, 0.5, mining),
        x,
    )
    r, ry = batch(6, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: triplet_margin_loss(
            a, y, ref_embeddings=b, ref_labels=ry, mining=mining, reduction="none"
        ),
        lambda a, b: slow_triplet(a, y, 0.2, mining, b, ry),
        x,
        r,
    )


def test_zero_when_positives_beat_negatives_by_margin():
    # two tight clusters on orthogonal axes: s_ap ~ 1, s_an ~ 0
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    for mining in ("all", "hard"):
        out = triplet_margin_loss(x, y, margin=0.5, mining=mining, reduction="none")
        assert torch.equal(out, torch.zeros(4, dtype=torch.float64))
        assert triplet_margin_loss(x, y, margin=1.5, mining=mining).item() > 0


def test_hard_is_max_of_all_pairs_terms():
    x, y = batch(10, 5, seed=3)
    hard = triplet_margin_loss(x, y, margin=0.3, mining="hard", reduction="none")
    terms = slow_terms(x, y, 0.3)
    torch.testing.assert_close(hard, torch.stack([torch.stack(t).max() for t in terms]))
    all_ = triplet_margin_loss(x, y, margin=0.3, mining="all", reduction="none")
    assert (hard >= all_ - 1e-12).all()


def test_anchor_without_positive_or_negative():
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 2, 2])
    xg = x.clone().requires_grad_(True)
    for mining in ("all", "hard"):
        none = triplet_margin_loss(xg, y, margin=1.0, mining=mining, reduction="none")
        assert none[2] == 0
        keep = torch.arange(5) != 2
        torch.testing.assert_close(
            triplet_margin_loss(x, y, margin=1.0, mining=mining), none[keep].mean()
        )
        none.sum().backward()
        assert torch.isfinite(xg.grad).all()
    same = torch.zeros(4, dtype=torch.long)  # positives but no negative
    out = triplet_margin_loss(xg[:4], same, mining="hard", reduction="none")
    assert torch.equal(out, torch.zeros(4, dtype=x.dtype))
    out = triplet_margin_loss(xg[:1], y[:1])  # one sample: no candidate
    assert out == 0 and torch.isfinite(out)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_gradcheck(mining):
    x, y = batch(6, 3)
    check_gradcheck(lambda a, b, **kw: triplet_margin_loss(a, b, mining=mining, **kw), x, y)
    check_gradcheck(
        lambda a, b, **kw: triplet_margin_loss(a, b, mining=mining, normalize=False, **kw), x, y
    )


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_reductions(mining):
    x, y = batch()
    none = triplet_margin_loss(x, y, mining=mining, margin=1.0, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(
        triplet_margin_loss(x, y, mining=mining, margin=1.0, reduction="sum"), none.sum()
    )
    torch.testing.assert_close(
        triplet_margin_loss(x, y, mining=mining, margin=1.0, reduction="mean"), none.mean()
    )
    distinct = torch.arange(8)
    out = triplet_margin_loss(x, distinct)
    assert out == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mining", ["all", "hard"])
def test_half_precision(dtype, mining):
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=4)
    xh = (10 * x).to(dtype).requires_grad_(True)
    out = triplet_margin_loss(xh, y, mining=mining, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = triplet_margin_loss(xh.detach().float(), y, mining=mining, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((x[0], y), {}, "embeddings"),
        ((x.long(), y), {}, "embeddings"),
        ((x, y[:3]), {}, "labels"),
        ((x, y.float()), {}, "labels"),
        ((torch.full_like(x, float("nan")), y), {}, "embeddings"),
        ((x[:0], y[:0]), {}, "embeddings"),
        ((x, y), {"ref_embeddings": r}, "ref_labels"),
        ((x, y), {"ref_embeddings": r[:, :2], "ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"ref_embeddings": r, "ref_labels": ry[:4]}, "ref_labels"),
        ((x, y), {"margin": -0.1}, "margin"),
        ((x, y), {"margin": float("nan")}, "margin"),
        ((x, y), {"mining": "semihard"}, "mining"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            triplet_margin_loss(*args, **kw)
    with pytest.raises(ValueError, match="margin"):
        TripletMarginLoss(margin=-1.0)
    with pytest.raises(ValueError, match="mining"):
        TripletMarginLoss(mining="easy")


def test_module_and_registry():
    x, y = batch()
    torch.testing.assert_close(
        TripletMarginLoss(0.4, mining="hard", reduction="none")(x, y),
        triplet_margin_loss(x, y, margin=0.4, mining="hard", reduction="none"),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "triplet_margin"]
    assert entry.module is TripletMarginLoss and entry.papers == ()
    assert entry.build().margin == 0.2 and entry.build().mining == "all"
