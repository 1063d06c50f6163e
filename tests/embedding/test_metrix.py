"""Metrix (paper 11): pairings and mixing against loops, mixed-target losses against slow
references, lam = 0 / 1 giving the plain losses on the un-mixed examples, linearity in the
targets, weight = 0 giving the clean loss, utilization, gradcheck, half precision, bad
inputs, reductions, modules and registry."""

from __future__ import annotations

import pytest
import torch

from losskit import catalog
from losskit.diagnostics.embedding import utilization
from losskit.embedding.metrix import MetrixLoss, metrix_loss
from losskit.embedding.metrix_mix import metrix_mix, metrix_pairs
from losskit.embedding.mixed_targets import (
    MixedContrastiveLoss,
    MixedMultiSimilarityLoss,
    MixedProxyAnchorLoss,
    mixed_contrastive_loss,
    mixed_multi_similarity_loss,
    mixed_proxy_anchor_loss,
)
from losskit.embedding.multi_similarity import multi_similarity_loss
from losskit.embedding.proxy_anchor import proxy_anchor_loss
from tests.contract import check_matches_reference


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.arange(n) % classes


def soft(n, m, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, m, generator=g).to(dtype)
    t[:, ::3] = 0.0  # exact zeros and ones too
    t[:, 1::5] = 1.0
    return t


def unit(v):
    return v / v.norm()


def slow_contrastive(x, z, t, keep=None, pm=0.0, nm=0.5):
    out = []
    for a in range(x.shape[0]):
        total = x.sum() * 0 + z.sum() * 0
        for k in range(z.shape[0]):
            if keep is None or keep[a, k]:
                d = (unit(x[a]) - unit(z[k])).norm()
                total = total + t[a, k] * torch.relu(d - pm) + (1 - t[a, k]) * torch.relu(nm - d)
        out.append(total)
    return torch.stack(out)


def slow_ms(x, z, t, keep=None, al=2.0, be=50.0, base=0.5):
    out = []
    for a in range(x.shape[0]):
        pos = neg = x.sum() * 0 + z.sum() * 0
        for k in range(z.shape[0]):
            if keep is None or keep[a, k]:
                s = torch.dot(unit(x[a]), unit(z[k]))
                pos = pos + t[a, k] * torch.exp(-al * (s - base))
                neg = neg + (1 - t[a, k]) * torch.exp(be * (s - base))
        out.append(torch.log(1 + pos) / al + torch.log(1 + neg) / be)
    return torch.stack(out)


def slow_pa(z, t, p, alpha=32.0, margin=0.1):
    pos, neg = [], []
    for c in range(p.shape[0]):
        sp = sn = z.sum() * 0 + p.sum() * 0
        for k in range(z.shape[0]):
            s = torch.dot(unit(p[c]), unit(z[k]))
            sp = sp + t[c, k] * torch.exp(-alpha * (s - margin))
            sn = sn + (1 - t[c, k]) * torch.exp(alpha * (s + margin))
        pos.append(torch.log(1 + sp))
        neg.append(torch.log(1 + sn))
    return torch.stack(pos), torch.stack(neg)


def slow_plain_contrastive(x, y, refs, ref_y, keep, pm=0.0, nm=0.5):
    """The plain (label) contrastive loss of each anchor over its candidate references."""
    out = []
    for a in range(x.shape[0]):
        total = x.sum() * 0
        for k in range(refs.shape[0]):
            if keep[a, k]:
                d = (unit(x[a]) - unit(refs[k])).norm()
                total = total + (torch.relu(d - pm) if ref_y[k] == y[a] else torch.relu(nm - d))
        out.append(total)
    return torch.stack(out)


# --- pairs and mixing -------------------------------------------------------------------


def test_pairs_match_loops():
    _, y = batch(9)
    n = 9
    pn = [
        (a, p, q)
        for a in range(n)
        for p in range(n)
        if p != a and y[p] == y[a]
        for q in range(n)
        if y[q] != y[a]
    ]
    got = list(zip(*(t.tolist() for t in metrix_pairs(y)), strict=True))
    assert got == pn
    an = [(a, a, q) for a in range(n) for q in range(n) if y[q] != y[a]]
    got = metrix_pairs(y, pairing="anchor_negative")
    assert list(zip(*(t.tolist() for t in got), strict=True)) == an


def test_top_k_keeps_hardest_negatives():
    x, y = batch(10, 5, seed=2)
    for k in (1, 3):
        anchor, first, second = metrix_pairs(y, embeddings=x, top_k=k)
        for a in range(10):
            negs = [q for q in range(10) if y[q] != y[a]]
            sims = {q: float(torch.dot(unit(x[a]), unit(x[q]))) for q in negs}
            hard = sorted(negs, key=lambda q: -sims[q])[:k]
            for p in (p for p in range(10) if p != a and y[p] == y[a]):
                kept = sorted(second[(anchor == a) & (first == p)].tolist())
                assert kept == sorted(hard)


def test_mix_interpolates_and_keeps_gradients():
    x, y = batch(6, 3)
    images = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = metrix_mix(images, y, lam=0.3)
    torch.testing.assert_close(b.mixed, 0.3 * images[b.first] + 0.7 * images[b.second])
    b.mixed.sum().backward()
    assert images.grad is not None and (images.grad != 0).any()
    torch.manual_seed(0)
    drawn = metrix_mix(x, y)
    assert drawn.lam.unique().numel() == 1 and 0.0 < float(drawn.lam[0]) < 1.0
    # targets: lam [y_first = y_a] + (1 - lam) [y_second = y_a], by a loop
    t = b.targets(y)
    for a in range(6):
        for k in range(len(b.first)):
            expect = 0.3 * float(y[b.first[k]] == y[a]) + 0.7 * float(y[b.second[k]] == y[a])
            assert abs(float(t[a, k]) - expect) < 1e-12
    u = b.unique()
    pairs = set(zip(b.first.tolist(), b.second.tolist(), strict=True))
    assert sorted(zip(u.first.tolist(), u.second.tolist(), strict=True)) == sorted(pairs)
    torch.testing.assert_close(u.mixed, 0.3 * images[u.first] + 0.7 * images[u.second])
    own = b.anchor_mask(6)
    assert own.sum(0).eq(1).all() and (own.float().argmax(0) == b.anchor).all()
    torch.testing.assert_close(t[own], b.lam)  # for its own anchor a mixed example has lam


# --- mixed losses against slow references -----------------------------------------------


def test_mixed_losses_match_slow_references():
    x, _ = batch(5, 3)
    z, _ = batch(7, 3, seed=3)
    t = soft(5, 7)
    keep = torch.rand(5, 7, generator=torch.Generator().manual_seed(4)) > 0.3
    check_matches_reference(
        lambda a, b: mixed_contrastive_loss(a, b, t, candidate_mask=keep, reduction="none"),
        lambda a, b: slow_contrastive(a, b, t, keep),
        x,
        z,
    )
    check_matches_reference(
        lambda a, b: mixed_contrastive_loss(a, b, t, pos_margin=0.2, neg_margin=1.1),
        lambda a, b: slow_contrastive(a, b, t, pm=0.2, nm=1.1).mean(),
        x,
        z,
    )
    check_matches_reference(
        lambda a, b: mixed_multi_similarity_loss(a, b, t, candidate_mask=keep, reduction="none"),
        lambda a, b: slow_ms(a, b, t, keep),
        x,
        z,
    )
    check_matches_reference(
        lambda a, b: mixed_multi_similarity_loss(a, b, t, alpha=3.0, beta=9.0, base=0.1),
        lambda a, b: slow_ms(a, b, t, al=3.0, be=9.0, base=0.1).mean(),
        x,
        z,
    )
    p, _ = batch(4, 3, seed=5)
    tp = soft(4, 7, seed=6)
    tp[3] = 0.0  # a proxy with no positive mass
    check_matches_reference(
        lambda a, b: mixed_proxy_anchor_loss(a, tp, b, reduction="none"),
        lambda a, b: sum(slow_pa(a, tp, b)),
        z,
        p,
    )

    def slow_mean(a, b):
        pos, neg = slow_pa(a, tp, b, alpha=5.0, margin=0.2)
        return pos.sum() / 3 + neg.sum() / 4

    check_matches_reference(
        lambda a, b: mixed_proxy_anchor_loss(a, tp, b, alpha=5.0, margin=0.2), slow_mean, z, p
    )


# --- the paper's exact properties -------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_lam_zero_or_one_is_the_plain_loss(lam):
    x, y = batch(9, 4, seed=7)
    b = metrix_mix(x, y, lam=lam)
    plain = x[b.first] if lam == 1.0 else x[b.second]
    plain_y = y[b.first] if lam == 1.0 else y[b.second]
    own = b.anchor_mask(9)
    # contrastive on each anchor's own mixed set V(a)
    torch.testing.assert_close(
        mixed_contrastive_loss(x, b.mixed, b.targets(y), candidate_mask=own, reduction="none"),
        slow_plain_contrastive(x, y, plain, plain_y, own),
    )
    # multi-similarity (no mining: epsilon large) and every anchor against every example
    torch.testing.assert_close(
        mixed_multi_similarity_loss(x, b.mixed, b.targets(y), reduction="none"),
        multi_similarity_loss(
            x, y, ref_embeddings=plain, ref_labels=plain_y, epsilon=10.0, reduction="none"
        ),
    )
    # Proxy-Anchor: the mixed examples against the class proxies
    p, _ = batch(3, 4, seed=8)
    classes = torch.arange(3)
    for reduction in ("none", "sum", "mean"):
        torch.testing.assert_close(
            mixed_proxy_anchor_loss(
                b.mixed, b.targets(y, classes), p, alpha=8.0, reduction=reduction
            ),
            proxy_anchor_loss(plain, plain_y, p, alpha=8.0, reduction=reduction),
        )


def test_contrastive_is_linear_in_the_target():
    x, _ = batch(5, 3)
    z, _ = batch(6, 3, seed=2)
    one, zero = torch.ones(5, 6, dtype=x.dtype), torch.zeros(5, 6, dtype=x.dtype)
    f = [mixed_contrastive_loss(x, z, v, reduction="none") for v in (zero, one)]
    for lam in (0.25, 0.6):
        torch.testing.assert_close(
            mixed_contrastive_loss(x, z, lam * one, reduction="none"),
            lam * f[1] + (1 - lam) * f[0],
        )


def test_weight_zero_is_the_clean_loss_and_terms_add():
    x, y = batch(9, 4, seed=9)
    b = metrix_mix(x, y, lam=0.4)
    t, own = b.targets(y), b.anchor_mask(9)
    not_self = ~torch.eye(9, dtype=torch.bool)
    clean = slow_plain_contrastive(x, y, x, y, not_self)
    for reduction, reduce in (("none", lambda v: v), ("sum", torch.sum), ("mean", torch.mean)):
        out = metrix_loss(x, y, b.mixed, t, mixed_mask=own, weight=0.0, reduction=reduction)
        torch.testing.assert_close(out, reduce(clean))
    mixed = mixed_contrastive_loss(x, b.mixed, t, candidate_mask=own, reduction="none")
    torch.testing.assert_close(
        metrix_loss(x, y, b.mixed, t, mixed_mask=own, reduction="none"), clean + 0.4 * mixed
    )
    torch.testing.assert_close(
        metrix_loss(x, y, b.mixed, t, loss="multi_similarity", weight=0.0, beta=10.0),
        multi_similarity_loss(x, y, beta=10.0),
    )
    p, _ = batch(3, 4, seed=10)
    tp = b.targets(y, torch.arange(3))
    torch.testing.assert_close(
        metrix_loss(x, y, b.mixed, tp, loss="proxy_anchor", proxies=p, weight=0.3, alpha=8.0),
        proxy_anchor_loss(x, y, p, alpha=8.0)
        + 0.3 * mixed_proxy_anchor_loss(b.mixed, tp, p, alpha=8.0),
    )


def test_clean_contrastive_matches_pytorch_metric_learning_sum():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    reducers = pytest.importorskip("pytorch_metric_learning.reducers")
    x, y = batch(10, 5, seed=11)
    ref = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5, reducer=reducers.SumReducer())
    out = metrix_loss(x, y, x[:0], torch.zeros(10, 0, dtype=x.dtype), reduction="sum")
    torch.testing.assert_close(out, ref(x, y).to(x.dtype))


# --- utilization --------------------------------------------------------------------------


def test_utilization_matches_loop():
    q, _ = batch(7, 3, seed=12)
    train, _ = batch(11, 3, seed=13)
    for normalize in (True, False):
        f = unit if normalize else (lambda v: v)
        nearest = [min(float((f(a) - f(b)).square().sum()) for b in train) for a in q]
        u = utilization(q, train, normalize=normalize, chunk_size=3)
        assert u == pytest.approx(sum(nearest) / 7, rel=1e-10)
        plain = utilization(q, train, normalize=normalize, squared=False)
        assert plain == pytest.approx(sum(v**0.5 for v in nearest) / 7, rel=1e-10)
    assert utilization(train[:4], train) == pytest.approx(0.0, abs=1e-12)
    assert utilization(q, train) == pytest.approx(utilization(q, train, chunk_size=1))


# --- numerics and reductions --------------------------------------------------------------


def test_gradcheck():
    x, y = batch(5, 3)
    z, _ = batch(6, 3, seed=2)
    t = soft(5, 6)
    xg, zg = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
    for fn in (mixed_contrastive_loss, mixed_multi_similarity_loss):
        kw = {"beta": 5.0} if fn is mixed_multi_similarity_loss else {"neg_margin": 1.2}
        assert torch.autograd.gradcheck(lambda a, b, fn=fn, kw=kw: fn(a, b, t, **kw), (xg, zg))
    p = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    tp = soft(3, 6, seed=3)
    assert torch.autograd.gradcheck(
        lambda a, b: mixed_proxy_anchor_loss(a, tp, b, alpha=3.0), (zg, p)
    )
    b = metrix_mix(x, y, lam=0.3)
    own = b.anchor_mask(5)
    assert torch.autograd.gradcheck(
        lambda a: metrix_loss(a, y, metrix_mix(a, y, lam=0.3).mixed, b.targets(y), mixed_mask=own),
        (xg,),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(12, 8, dtype=torch.float32, seed=14)
    z, _ = batch(20, 8, dtype=torch.float32, seed=15)
    t = soft(12, 20, dtype=torch.float32)
    p, _ = batch(3, 8, dtype=torch.float32, seed=16)
    tp = soft(3, 20, dtype=torch.float32)
    runs = [
        lambda a, b: mixed_contrastive_loss(a, b, t, reduction="none"),
        lambda a, b: mixed_multi_similarity_loss(a, b, t, reduction="none"),
        lambda a, b: mixed_proxy_anchor_loss(b, tp, p, reduction="none"),
    ]
    for run in runs:
        xh, zh = x.to(dtype).requires_grad_(True), z.to(dtype).requires_grad_(True)
        out = run(xh, zh)
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = run(xh.detach().float(), zh.detach().float())
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
        out.sum().backward()
        grads = [g for g in (xh.grad, zh.grad) if g is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    b = metrix_mix(x.to(dtype), y, lam=0.5)
    assert b.mixed.dtype == dtype and b.lam.dtype == torch.float32
    out = metrix_loss(x.to(dtype), y, b.mixed, b.targets(y), mixed_mask=b.anchor_mask(12))
    assert out.dtype == dtype and torch.isfinite(out)


def test_reductions_and_empty_mixed_sets():
    x, _ = batch(6, 3)
    z, _ = batch(5, 3, seed=2)
    t = soft(6, 5)
    keep = torch.ones(6, 5, dtype=torch.bool)
    keep[0] = False  # anchor 0 has an empty mixed set: 0, and out of the mean
    for fn in (mixed_contrastive_loss, mixed_multi_similarity_loss):
        none = fn(x, z, t, candidate_mask=keep, reduction="none")
        assert none.shape == (6,) and none[0] == 0
        torch.testing.assert_close(fn(x, z, t, candidate_mask=keep, reduction="sum"), none.sum())
        torch.testing.assert_close(fn(x, z, t, candidate_mask=keep), none[1:].mean())
        xg, zg = x.clone().requires_grad_(True), z[:0].clone().requires_grad_(True)
        out = fn(xg, zg, t[:, :0])
        assert out == 0
        out.backward()
        assert (xg.grad == 0).all()
    p, _ = batch(3, 3, seed=3)
    assert mixed_proxy_anchor_loss(z[:0], t[:3, :0], p) == 0


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    z, _ = batch(5, 3, dtype=torch.float32, seed=2)
    t = soft(4, 5, dtype=torch.float32)
    cases = [
        ((x[0], z, t), {}, "embeddings"),
        ((x[:0], z, t[:0]), {}, "embeddings"),
        ((x * float("nan"), z, t), {}, "embeddings"),
        ((x, z[:, :2], t), {}, "mixed"),
        ((x, z[0], t), {}, "mixed"),
        ((x, z * float("inf"), t), {}, "mixed"),
        ((x, z, t[:, :4]), {}, "mixed_targets"),
        ((x, z, t > 0.5), {}, "mixed_targets"),
        ((x, z, t + 1.0), {}, "mixed_targets"),
        ((x, z, t * float("nan")), {}, "mixed_targets"),
        ((x, z, t), {"candidate_mask": torch.ones(4, 4, dtype=torch.bool)}, "candidate_mask"),
        ((x, z, t), {"reduction": "avg"}, "reduction"),
    ]
    for fn, extra in (
        (mixed_contrastive_loss, [({"neg_margin": -1.0}, "neg_margin")]),
        (mixed_multi_similarity_loss, [({"beta": 0.0}, "beta"), ({"alpha": -2.0}, "alpha")]),
    ):
        for args, kw, name in cases + [((x, z, t), k, n) for k, n in extra]:
            with pytest.raises(ValueError, match=name):
                fn(*args, **kw)
    p = torch.randn(3, 3)
    tp = soft(3, 5, dtype=torch.float32)
    for args, kw, name in [
        ((z, tp, p[:, :2]), {}, "proxies"),
        ((z, tp[:2], p), {}, "mixed_targets"),
        ((z, tp, p), {"alpha": 0.0}, "alpha"),
    ]:
        with pytest.raises(ValueError, match=name):
            mixed_proxy_anchor_loss(*args, **kw)
    for kw, name in [
        ({"lam": 1.5}, "lam"),
        ({"alpha": 0.0}, "alpha"),
        ({"pairing": "pos_pos"}, "pairing"),
        ({"top_k": 0, "embeddings": x}, "top_k"),
        ({"top_k": 2}, "embeddings"),
        ({"top_k": 1, "embeddings": x[:3]}, "embeddings"),
    ]:
        with pytest.raises(ValueError, match=name):
            metrix_mix(x, y, **kw)
    with pytest.raises(ValueError, match="labels"):
        metrix_mix(x, y[:3])
    with pytest.raises(ValueError, match="labels"):
        metrix_pairs(y.float())
    with pytest.raises(ValueError, match="x"):
        metrix_mix(x[:0], y[:0])
    b = metrix_mix(x, y, lam=0.5)
    tm = b.targets(y)
    for kw, name in [
        ({"loss": "triplet"}, "loss"),
        ({"weight": -0.1}, "weight"),
        ({"beta": 3.0}, "beta"),
        ({"loss": "proxy_anchor"}, "proxies"),
    ]:
        with pytest.raises(ValueError, match=name):
            metrix_loss(x, y, b.mixed, tm, **kw)
    for args, kw, name in [
        ((x, z[:, :2]), {}, "train_embeddings"),
        ((x[:0], z), {}, "test_embeddings"),
        ((x, z * float("nan")), {}, "train_embeddings"),
        ((x, z), {"chunk_size": 0}, "chunk_size"),
    ]:
        with pytest.raises(ValueError, match=name):
            utilization(*args, **kw)


# --- modules and registry -----------------------------------------------------------------


def test_metrix_module_mixes_embeddings_itself():
    x, y = batch(9, 4, dtype=torch.float32, seed=17)
    for pairing in ("positive_negative", "anchor_negative"):
        m = MetrixLoss(pairing=pairing, weight=0.3)
        torch.manual_seed(1)
        out = m(x, y)
        torch.manual_seed(1)
        b = metrix_mix(x, y, pairing=pairing)
        expected = metrix_loss(x, y, b.mixed, b.targets(y), mixed_mask=b.anchor_mask(9), weight=0.3)
        torch.testing.assert_close(out, expected)
    pa = MetrixLoss("proxy_anchor", num_classes=3, in_features=4, pairing="anchor_negative")
    assert "proxies" in dict(pa.named_parameters())
    torch.manual_seed(2)
    xg = x.clone().requires_grad_(True)
    pa(xg, y).backward()
    assert torch.isfinite(xg.grad).all() and torch.isfinite(pa.proxies.grad).all()
    torch.manual_seed(2)
    b = metrix_mix(x, y, pairing="anchor_negative")
    tp = b.targets(y, torch.arange(3))
    expected = proxy_anchor_loss(x, y, pa.proxies) + 0.4 * mixed_proxy_anchor_loss(
        b.mixed, tp, pa.proxies
    )
    torch.manual_seed(2)
    torch.testing.assert_close(pa(x, y), expected)
    given = MetrixLoss("multi_similarity", beta=10.0)(x, y, b.mixed, b.targets(y))
    torch.testing.assert_close(
        given, metrix_loss(x, y, b.mixed, b.targets(y), loss="multi_similarity", beta=10.0)
    )
    out = MetrixLoss(top_k=1)(x.clone().requires_grad_(True), y)  # random pairing, hardest
    assert torch.isfinite(out)
    for kw, name in [
        ({"loss": "proxy_anchor"}, "num_classes"),
        ({"pairing": "both"}, "pairing"),
        ({"mix_alpha": 0.0}, "mix_alpha"),
        ({"top_k": -1}, "top_k"),
        ({"margin": 0.2}, "margin"),
        ({"weight": -1.0}, "weight"),
        ({"neg_margin": -1.0}, "neg_margin"),
        ({"loss": "multi_similarity", "epsilon": -0.1}, "epsilon"),
        ({"loss": "proxy_anchor", "num_classes": 3, "in_features": 4, "alpha": 0}, "alpha"),
    ]:
        with pytest.raises(ValueError, match=name):
            MetrixLoss(**kw)
    with pytest.raises(ValueError, match="mixed_targets"):
        MetrixLoss()(x, y, b.mixed)


def test_mixed_modules_and_registry():
    x, y = batch(6, 3, dtype=torch.float32)
    b = metrix_mix(x, y, lam=0.7)
    t, own = b.targets(y), b.anchor_mask(6)
    torch.testing.assert_close(
        MixedContrastiveLoss(0.1, 0.8, reduction="sum")(x, b.mixed, t, own),
        mixed_contrastive_loss(
            x, b.mixed, t, pos_margin=0.1, neg_margin=0.8, reduction="sum", candidate_mask=own
        ),
    )
    torch.testing.assert_close(
        MixedMultiSimilarityLoss(beta=7.0)(x, b.mixed, t),
        mixed_multi_similarity_loss(x, b.mixed, t, beta=7.0),
    )
    m = MixedProxyAnchorLoss(3, 3, alpha=4.0)
    tp = b.targets(y, torch.arange(3))
    torch.testing.assert_close(
        m(b.mixed, tp), mixed_proxy_anchor_loss(b.mixed, tp, m.proxies, alpha=4.0)
    )
    with pytest.raises(ValueError, match="pos_margin"):
        MixedContrastiveLoss(pos_margin=-0.1)
    with pytest.raises(ValueError, match="base"):
        MixedMultiSimilarityLoss(base=float("nan"))
    expected = {
        "metrix": (metrix_loss, MetrixLoss),
        "metrix_contrastive": (mixed_contrastive_loss, MixedContrastiveLoss),
        "metrix_multi_similarity": (mixed_multi_similarity_loss, MixedMultiSimilarityLoss),
        "metrix_proxy_anchor": (mixed_proxy_anchor_loss, MixedProxyAnchorLoss),
    }
    entries = {e.name: e for e in catalog(paper=11, kind="loss")}
    assert set(entries) == set(expected)
    for name, (fn, module) in expected.items():
        e = entries[name]
        assert e.papers == (11,) and e.kind == "loss" and e.family == "embedding"
        assert e.function is fn and e.module is module
    assert entries["metrix"].defaults["weight"] == 0.4
    assert entries["metrix"].defaults["mix_alpha"] == 2.0
    assert isinstance(entries["metrix"].build(), MetrixLoss)
    built = entries["metrix_proxy_anchor"].build(num_classes=3, in_features=4)
    assert isinstance(built, MixedProxyAnchorLoss) and built.alpha == 32.0
