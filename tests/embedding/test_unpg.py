"""UNPG: slow loop reference, no extra negatives = plain ArcFace/CosFace cross-entropy,
the box-and-whisker filter (interpolated and index quartiles), monotonicity in the number of
negatives, gradcheck, half precision, bad inputs, reductions, module and registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.margin_heads import ArcFaceHead, CosFaceHead
from losskit.embedding.unpg import UNPGLoss, box_whisker_filter, unpg_loss, unpg_negatives
from tests.contract import check_matches_reference


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.arange(n) % classes
    return x, y


def slow_quartile(values, q, quartiles):
    v = sorted(values)
    if quartiles == "index":
        return v[int(q * len(v))]
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def slow_unpg(logits, x, y, scale, whisker=1.5, quartiles="interpolate", ref=None, ref_y=None):
    """Loop reference: collect negative pairs, filter with the whiskers, append to each row."""
    pairs = []
    if ref is None:
        for i in range(x.shape[0]):
            for j in range(i + 1, x.shape[0]):
                if y[i] != y[j]:
                    pairs.append(torch.dot(x[i], x[j]) / (x[i].norm() * x[j].norm()))
    else:
        for i in range(x.shape[0]):
            for a in range(ref.shape[0]):
                if y[i] != ref_y[a]:
                    pairs.append(torch.dot(x[i], ref[a]) / (x[i].norm() * ref[a].norm()))
    kept = pairs
    if pairs and not math.isinf(whisker):
        vals = [p.item() for p in pairs]
        q1, q3 = slow_quartile(vals, 0.25, quartiles), slow_quartile(vals, 0.75, quartiles)
        lo, hi = q1 - whisker * (q3 - q1), q3 + whisker * (q3 - q1)
        kept = [p for p, v in zip(pairs, vals, strict=True) if lo <= v <= hi]
    out = []
    for i in range(logits.shape[0]):
        row = list(logits[i]) + [scale * s for s in kept]
        denom = sum(torch.exp(r) for r in row)
        out.append(torch.log(denom) - logits[i, y[i]])
    return torch.stack(out)


def test_matches_slow_reference():
    x, y = batch(9)
    g = torch.Generator().manual_seed(3)
    logits = 3.0 * torch.randn(9, 4, generator=g, dtype=torch.float64)
    for whisker, quartiles in [(1.5, "interpolate"), (0.0, "index"), (0.3, "interpolate")]:
        check_matches_reference(
            lambda z, a, w=whisker, q=quartiles: unpg_loss(
                z, a, y, scale=5.0, whisker=w, quartiles=q, reduction="none"
            ),
            lambda z, a, w=whisker, q=quartiles: slow_unpg(z, a, y, 5.0, w, q),
            logits,
            x,
        )
    r, ry = batch(5, seed=1, classes=4)
    check_matches_reference(
        lambda z, a, b: unpg_loss(
            z, a, y, scale=4.0, whisker=0.5, ref_embeddings=b, ref_labels=ry, reduction="none"
        ),
        lambda z, a, b: slow_unpg(z, a, y, 4.0, 0.5, ref=b, ref_y=ry),
        logits,
        x,
        r,
    )


def test_filter_removes_outliers_in_the_reference():
    # in 64 dimensions random pairs have cosines near 0; a near-duplicate of a different
    # identity is an abnormal negative that the default whiskers drop
    x, y = batch(16, 64, seed=7, classes=8)
    x[0] = x[1] * 1.0001
    sn_all = unpg_negatives(x, y, whisker=math.inf)
    sn = unpg_negatives(x, y)
    assert sn_all.max() > 0.99 and sn.max() < 0.9 and sn.numel() < sn_all.numel()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        unpg_loss(logits, x, y, scale=3.0, reduction="none"), slow_unpg(logits, x, y, 3.0)
    )


@pytest.mark.parametrize("head_cls", [ArcFaceHead, CosFaceHead])
def test_no_extra_negatives_is_plain_margin_softmax(head_cls):
    torch.manual_seed(0)
    head = head_cls(4, 5, scale=16.0).double()
    x, _ = batch(6)
    cases = [
        (x, torch.full((6,), 2)),  # one identity: no negative pair
        (x[:1], torch.tensor([3])),  # one sample
    ]
    for xi, yi in cases:
        xg = xi.clone().requires_grad_(True)
        out = unpg_loss(head(xg, yi), xg, yi, scale=16.0, reduction="none")
        xr = xi.clone().requires_grad_(True)
        ref = F.cross_entropy(head(xr, yi), yi, reduction="none")
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        out.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad)
    # every pair masked out by a miner
    y = torch.arange(6) % 3
    none = torch.zeros(6, 6, dtype=torch.bool)
    torch.testing.assert_close(
        unpg_loss(head(x, y), x, y, scale=16.0, candidate_mask=none),
        F.cross_entropy(head(x, y), y),
        rtol=0,
        atol=0,
    )
    # the module with its own head
    module = UNPGLoss(4, 5, head="arcface" if head_cls is ArcFaceHead else "cosface", scale=16.0)
    module = module.double()
    same = torch.full((6,), 1)
    torch.testing.assert_close(module(x, same), F.cross_entropy(module.head(x, same), same))


def test_more_negatives_increase_the_loss():
    x, y = batch(10, seed=4)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 3, generator=g, dtype=torch.float64)
    base = F.cross_entropy(logits, y, reduction="none")
    few = torch.zeros(10, 10, dtype=torch.bool)
    few[0, 1] = True  # one negative pair: y = 0, 1
    one = unpg_loss(logits, x, y, scale=2.0, candidate_mask=few, reduction="none")
    all_ = unpg_loss(logits, x, y, scale=2.0, whisker=math.inf, reduction="none")
    assert (one > base).all() and (all_ > one).all()
    # the appended set is the same for every row: exp(-l) differences are row constants
    extra = torch.exp(all_ - base) - 1  # = sum_n e^{s s_n} / sum_c e^{z_c}
    row_z = torch.logsumexp(logits, dim=1).exp()
    torch.testing.assert_close(extra * row_z, (extra * row_z)[:1].expand(10))


def test_box_whisker_filter():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(41, generator=g, dtype=torch.float64)
    v[3], v[7] = 9.0, -8.0
    q1, q3 = torch.quantile(v, 0.25), torch.quantile(v, 0.75)
    for w in (0.0, 0.5, 1.5):
        lo, hi = q1 - w * (q3 - q1), q3 + w * (q3 - q1)
        assert torch.equal(box_whisker_filter(v, w), (v >= lo) & (v <= hi))
    keep = box_whisker_filter(v)
    assert not keep[3] and not keep[7] and keep.sum() >= 39
    assert keep[v == v.median()].all()
    assert box_whisker_filter(v, math.inf).all()
    # the released code's quartiles: sorted[int(0.25 L)], sorted[int(0.75 L)]
    s = v.sort().values
    iq1, iq3 = s[int(0.25 * 41)], s[int(0.75 * 41)]
    expected = (v >= iq1 - 0.5 * (iq3 - iq1)) & (v <= iq3 + 0.5 * (iq3 - iq1))
    assert torch.equal(box_whisker_filter(v, 0.5, quartiles="index"), expected)
    for n in (1, 3, 5, 7):  # the median entry survives even for tiny sets and whisker 0
        u = torch.randn(n, generator=g)
        for q in ("interpolate", "index"):
            assert box_whisker_filter(u, 0.0, quartiles=q)[u == u.median()].all()
    assert box_whisker_filter(v[:0]).shape == (0,)
    w1 = box_whisker_filter(v, 0.2)
    w2 = box_whisker_filter(v, 1.0)
    assert (w1 <= w2).all()  # wider whiskers keep a superset


def test_gradcheck():
    x, y = batch(6, 3)
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z, a: unpg_loss(z, a, y, scale=3.0, whisker=1.0, reduction="sum"), (logits, xg)
    )
    head = ArcFaceHead(3, 3, scale=4.0).double()
    assert torch.autograd.gradcheck(
        lambda a, w: unpg_loss(head(a, y), a, y, scale=4.0), (xg, head.weight)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    torch.manual_seed(0)
    module = UNPGLoss(16, 10, reduction="none")
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=10)
    xh = x.to(dtype).requires_grad_(True)
    out = module(xh, y)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = module(xh.detach().float(), y)
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=0.5)
    out.float().sum().backward()
    assert torch.isfinite(xh.grad).all() and torch.isfinite(module.head.weight.grad).all()


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    logits = torch.randn(4, 3)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((logits, x[0], y), {}, "embeddings"),
        ((logits, x, y[:3]), {}, "labels"),
        ((logits, x, y.float()), {}, "labels"),
        ((logits, x, torch.tensor([0, 1, 3, 0])), {}, "labels"),
        ((logits, x, torch.tensor([0, -1, 2, 0])), {}, "labels"),
        ((logits, torch.full_like(x, float("nan")), y), {}, "embeddings"),
        ((logits * float("inf"), x, y), {}, "logits"),
        ((logits[:3], x, y), {}, "logits"),
        ((logits[0], x, y), {}, "logits"),
        ((logits[:0], x[:0], y[:0]), {}, "embeddings"),
        ((logits, x, y), {"ref_labels": ry}, "ref_embeddings"),
        ((logits, x, y), {"ref_embeddings": r[:, :2], "ref_labels": ry}, "ref_embeddings"),
        ((logits, x, y), {"candidate_mask": torch.ones(4, 4)}, "candidate_mask"),
        ((logits, x, y), {"scale": 0.0}, "scale"),
        ((logits, x, y), {"whisker": -1.0}, "whisker"),
        ((logits, x, y), {"whisker": float("nan")}, "whisker"),
        ((logits, x, y), {"quartiles": "exact"}, "quartiles"),
        ((logits, x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            unpg_loss(*args, **kw)
    for kw, name in [
        ({"head": "sphereface"}, "head"),
        ({"whisker": -0.5}, "whisker"),
        ({"scale": -1.0}, "scale"),
        ({"margin": -0.1}, "margin"),
        ({"quartiles": "exact"}, "quartiles"),
        ({"reduction": "avg"}, "reduction"),
    ]:
        with pytest.raises(ValueError, match=name):
            UNPGLoss(3, 3, **kw)
    with pytest.raises(ValueError, match="similarities"):
        box_whisker_filter(torch.zeros(2, 2))


def test_reductions():
    x, y = batch()
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    none = unpg_loss(logits, x, y, scale=2.0, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(unpg_loss(logits, x, y, scale=2.0, reduction="sum"), none.sum())
    torch.testing.assert_close(unpg_loss(logits, x, y, scale=2.0), none.mean())


def test_module_and_registry():
    torch.manual_seed(0)
    x, y = batch(8, 4, classes=4)
    m = UNPGLoss(4, 4, head="cosface", scale=8.0, margin=0.2, whisker=1.0).double()
    assert isinstance(m.head, CosFaceHead) and m.head.margin == 0.2 and m.head.scale == 8.0
    torch.testing.assert_close(m(x, y), unpg_loss(m.head(x, y), x, y, scale=8.0, whisker=1.0))
    assert UNPGLoss(4, 4).head.margin == 0.5
    assert UNPGLoss(4, 4, head="cosface").head.margin == 0.35
    (entry,) = [e for e in catalog(family="embedding") if e.name == "unpg"]
    assert entry.module is UNPGLoss and entry.function is unpg_loss and entry.papers == (18,)
    built = entry.build(in_features=4, num_classes=4)
    assert isinstance(built.head, ArcFaceHead)
    assert (built.head.scale, built.head.margin, built.whisker) == (64.0, 0.5, 1.5)
    assert built.reduction == "mean" and built.quartiles == "interpolate"
