"""Proto-Triplet loss (paper 31): slow reference, episodic prototypes, hand-computed hinge,
invariances, candidate mask, gradcheck, half precision, bad inputs, reductions."""

from __future__ import annotations

import math

import pytest
import torch

from losskit import catalog
from losskit.embedding.proto_triplet import ProtoTripletLoss, proto_triplet_loss
from tests.contract import check_gradcheck, check_matches_reference


def batch(n=9, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.arange(n) % classes


def slow_proto_triplet(x, y, margin, eps=1e-6, ref=None, ref_y=None, mask=None, normalize=False):
    """Per anchor: prototypes = means of its candidates per class, then the hinge."""
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    if normalize:
        x, ref = x / x.norm(dim=1, keepdim=True), ref / ref.norm(dim=1, keepdim=True)
    out = []
    for i in range(x.shape[0]):
        cand = [
            a
            for a in range(ref.shape[0])
            if not (self_excluded and a == i) and (mask is None or bool(mask[i, a]))
        ]
        dist = {}
        for c in sorted({int(ref_y[a]) for a in cand}):
            proto = torch.stack([ref[a] for a in cand if int(ref_y[a]) == c]).mean(dim=0)
            dist[c] = torch.sqrt(((x[i] - proto) ** 2).sum() + eps)
        own, others = dist.get(int(y[i])), [v for c, v in dist.items() if c != int(y[i])]
        if own is None or not others:
            out.append(x.new_zeros(()) * x.sum())
        else:
            out.append(torch.relu(own - torch.stack(others).min() + margin))
    return torch.stack(out)


def test_matches_slow_reference():
    x, y = batch()
    check_matches_reference(
        lambda a: proto_triplet_loss(a, y, margin=1.0, reduction="none"),
        lambda a: slow_proto_triplet(a, y, 1.0),
        x,
    )
    r, ry = batch(10, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: proto_triplet_loss(
            a, y, ref_embeddings=b, ref_labels=ry, margin=2.0, reduction="none"
        ),
        lambda a, b: slow_proto_triplet(a, y, 2.0, ref=b, ref_y=ry),
        x,
        r,
    )
    check_matches_reference(
        lambda a: proto_triplet_loss(a, y, margin=0.3, normalize=True, reduction="none"),
        lambda a: slow_proto_triplet(a, y, 0.3, normalize=True),
        x,
    )


def test_candidate_mask_matches_reference():
    x, y = batch(8, seed=2)
    r, ry = batch(12, seed=3, classes=4)
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(8, 12, generator=g) > 0.35
    check_matches_reference(
        lambda a, b: proto_triplet_loss(
            a, y, ref_embeddings=b, ref_labels=ry, candidate_mask=mask, reduction="none"
        ),
        lambda a, b: slow_proto_triplet(a, y, 0.5, ref=b, ref_y=ry, mask=mask),
        x,
        r,
    )
    # all-True mask keeps the default self-exclusion
    full = torch.ones(8, 8, dtype=torch.bool)
    torch.testing.assert_close(
        proto_triplet_loss(x, y, candidate_mask=full, reduction="none"),
        proto_triplet_loss(x, y, reduction="none"),
    )
    # a masked candidate gets no gradient and equals dropping it from the reference set
    keep = torch.ones(12, dtype=torch.bool)
    keep[[2, 7]] = False
    rg = r.clone().requires_grad_(True)
    got = proto_triplet_loss(
        x, y, ref_embeddings=rg, ref_labels=ry, candidate_mask=keep.expand(8, 12).clone()
    )
    torch.testing.assert_close(
        got, proto_triplet_loss(x, y, ref_embeddings=r[keep], ref_labels=ry[keep])
    )
    got.backward()
    assert torch.all(rg.grad[~keep] == 0) and rg.grad.abs().sum() > 0


def test_episode_prototypes_equal_support_set():
    """The paper's episode: queries against support means; passing the means themselves
    (one row per class) gives the same loss."""
    support, ys = batch(15, 5, seed=5, classes=5)  # 5-way 3-shot, classes interleaved
    query, yq = batch(10, 5, seed=6, classes=5)
    protos = torch.stack([support[ys == c].mean(dim=0) for c in range(5)])
    torch.testing.assert_close(
        proto_triplet_loss(query, yq, ref_embeddings=support, ref_labels=ys, reduction="none"),
        proto_triplet_loss(
            query, yq, ref_embeddings=protos, ref_labels=torch.arange(5), reduction="none"
        ),
    )


def test_hand_computed_hinge():
    # class 0 support (0,0),(2,0) -> prototype (1,0); class 1 at (0,4); class 2 at (5,0)
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [5.0, 0.0]], dtype=torch.float64)
    ys = torch.tensor([0, 0, 1, 2])
    query = torch.tensor([[1.0, 1.0], [4.0, 1.0]], dtype=torch.float64)
    yq = torch.tensor([0, 0])
    out = proto_triplet_loss(
        query, yq, ref_embeddings=support, ref_labels=ys, margin=2.5, eps=0.0, reduction="none"
    )
    # query 0: d_pos = 1, nearest other prototype (0,4) at sqrt(10)
    # query 1: d_pos = sqrt(10), nearest other prototype (5,0) at sqrt(2)
    expected = torch.tensor(
        [max(0.0, 1.0 - math.sqrt(10) + 2.5), max(0.0, math.sqrt(10) - math.sqrt(2) + 2.5)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected)


def test_one_candidate_per_class_is_euclidean_triplet_to_nearest_negative():
    x, y = batch(6, 3, seed=7, classes=4)
    r, ry = batch(4, 3, seed=8, classes=4)  # distinct labels: prototypes are the rows
    d = torch.cdist(x, r)
    own = d[torch.arange(6), y]
    nearest_other = d.masked_fill(ry[None, :] == y[:, None], float("inf")).amin(dim=1)
    torch.testing.assert_close(
        proto_triplet_loss(x, y, ref_embeddings=r, ref_labels=ry, eps=0.0, reduction="none"),
        torch.relu(own - nearest_other + 0.5),
    )


def test_invariances():
    x, y = batch(12, 4, seed=9, classes=3)
    base = proto_triplet_loss(x, y, eps=0.0, reduction="none")
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    torch.testing.assert_close(proto_triplet_loss(x @ q + 3.0, y, eps=0.0, reduction="none"), base)
    scaled = proto_triplet_loss(2.5 * x, y, margin=2.5 * 0.5, eps=0.0, reduction="none")
    torch.testing.assert_close(scaled, 2.5 * base)


def test_zero_when_classes_are_separated_by_the_margin():
    g = torch.Generator().manual_seed(10)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    y = torch.arange(12) % 3
    x = centres[y] + 0.01 * torch.randn(12, 2, generator=g, dtype=torch.float64)
    assert torch.equal(proto_triplet_loss(x, y, reduction="none"), torch.zeros(12).double())
    assert proto_triplet_loss(x, y, margin=20.0) > 0


def test_anchor_without_positive_or_negative():
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 2, 2])  # anchor 2 alone in its class
    xg = x.clone().requires_grad_(True)
    none = proto_triplet_loss(xg, y, margin=3.0, reduction="none")
    assert none[2] == 0
    keep = torch.arange(5) != 2
    torch.testing.assert_close(proto_triplet_loss(x, y, margin=3.0), none[keep].mean())
    none.sum().backward()
    assert torch.isfinite(xg.grad).all()
    same = torch.zeros(4, dtype=torch.long)  # a positive prototype but no other class
    assert torch.equal(proto_triplet_loss(x[:4], same, reduction="none"), torch.zeros(4).double())
    xd = x.clone().requires_grad_(True)
    out = proto_triplet_loss(xd, torch.arange(5))  # distinct labels: 0 with zero gradient
    out.backward()
    assert out == 0 and torch.all(xd.grad == 0)


def test_gradcheck():
    x, y = batch(6, 3, classes=2)
    check_gradcheck(lambda a, b, **kw: proto_triplet_loss(a, b, margin=2.0, **kw), x, y)
    check_gradcheck(
        lambda a, b, **kw: proto_triplet_loss(a, b, margin=1.0, normalize=True, **kw), x, y
    )


def test_reductions():
    x, y = batch()
    none = proto_triplet_loss(x, y, margin=2.0, reduction="none")
    assert none.shape == (9,)
    torch.testing.assert_close(proto_triplet_loss(x, y, margin=2.0, reduction="sum"), none.sum())
    torch.testing.assert_close(proto_triplet_loss(x, y, margin=2.0), none.mean())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=4)
    xh = (3 * x).to(dtype).requires_grad_(True)
    out = proto_triplet_loss(xh, y, margin=4.0, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = proto_triplet_loss(xh.detach().float(), y, margin=4.0, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()
    assert proto_triplet_loss(x.double(), y).dtype == torch.float64


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
        ((x, y), {"candidate_mask": torch.ones(4, 5, dtype=torch.bool)}, "candidate_mask"),
        ((x, y), {"margin": -0.1}, "margin"),
        ((x, y), {"margin": float("nan")}, "margin"),
        ((x, y), {"eps": -1e-6}, "eps"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            proto_triplet_loss(*args, **kw)
    with pytest.raises(ValueError, match="margin"):
        ProtoTripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="eps"):
        ProtoTripletLoss(eps=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        ProtoTripletLoss(reduction="avg")


def test_module_and_registry():
    x, y = batch()
    r, ry = batch(7, seed=1)
    mask = torch.ones(9, 7, dtype=torch.bool)
    mask[0, 1] = False
    torch.testing.assert_close(
        ProtoTripletLoss(0.7, reduction="none")(x, y, r, ry, mask),
        proto_triplet_loss(
            x, y, ref_embeddings=r, ref_labels=ry, margin=0.7, candidate_mask=mask, reduction="none"
        ),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "proto_triplet"]
    assert entry.module is ProtoTripletLoss and entry.papers == (31,)
    built = entry.build()
    assert built.margin == 0.5 and built.eps == 1e-6 and built.normalize is False
