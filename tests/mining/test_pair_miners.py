"""Pair miners: slow loops, composition, no gradient, and their masks inside SupCon."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit.embedding.multi_similarity import multi_similarity_loss
from losskit.embedding.supcon import supcon_loss
from losskit.mining.pair_miners import (
    batch_hard_miner,
    multi_similarity_miner,
    semi_hard_miner,
    threshold_miner,
)

MINERS = (batch_hard_miner, semi_hard_miner, multi_similarity_miner, threshold_miner)


def batch(n=10, d=4, *, seed=0, classes=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randint(0, classes, (n,), generator=g)


def slow_pairs(x, y, ref=None, ref_y=None, normalize=True):
    """Python lists: similarity, positives and negatives of every anchor."""
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    out = []
    for i in range(len(x)):
        a = x[i] / x[i].norm() if normalize else x[i]
        row = {}
        for j in range(len(ref)):
            if self_excluded and i == j:
                continue
            b = ref[j] / ref[j].norm() if normalize else ref[j]
            row[j] = (float(a @ b), bool(y[i] == ref_y[j]), float((a - b).norm()))
        out.append(row)
    return out


def slow_distance(sim, euclid, distance):
    return {"cosine": 1 - sim, "euclidean": euclid, "squared_euclidean": euclid**2}[distance]


def to_mask(kept, n, m):
    mask = torch.zeros(n, m, dtype=torch.bool)
    for i, cols in enumerate(kept):
        mask[i, list(cols)] = True
    return mask


def slow_batch_hard(x, y, distance, ref=None, ref_y=None, normalize=True):
    kept = []
    for row in slow_pairs(x, y, ref, ref_y, normalize):
        d = {j: slow_distance(s, e, distance) for j, (s, _, e) in row.items()}
        pos = [j for j, (_, same, _) in row.items() if same]
        neg = [j for j, (_, same, _) in row.items() if not same]
        kept.append(([max(pos, key=lambda j: d[j])] if pos else [])
                    + ([min(neg, key=lambda j: d[j])] if neg else []))  # fmt: skip
    return to_mask(kept, len(x), len(x) if ref is None else len(ref))


def slow_semi_hard(x, y, margin, distance, ref=None, ref_y=None, normalize=True):
    kept, triples = [], set()
    for i, row in enumerate(slow_pairs(x, y, ref, ref_y, normalize)):
        d = {j: slow_distance(s, e, distance) for j, (s, _, e) in row.items()}
        cols = set()
        for p, (_, same_p, _) in row.items():
            for n, (_, same_n, _) in row.items():
                if same_p and not same_n and d[p] < d[n] < d[p] + margin:
                    cols |= {p, n}
                    triples.add((i, p, n))
        kept.append(cols)
    return to_mask(kept, len(x), len(x) if ref is None else len(ref)), triples


def slow_multi_similarity(x, y, eps, ref=None, ref_y=None):
    kept = []
    for row in slow_pairs(x, y, ref, ref_y):
        pos = {j: s for j, (s, same, _) in row.items() if same}
        neg = {j: s for j, (s, same, _) in row.items() if not same}
        min_p = min(pos.values(), default=math.inf)
        max_n = max(neg.values(), default=-math.inf)
        kept.append([j for j, s in neg.items() if s + eps > min_p]
                    + [j for j, s in pos.items() if s - eps < max_n])  # fmt: skip
    return to_mask(kept, len(x), len(x) if ref is None else len(ref))


def slow_threshold(x, y, low, high, pairs, ref=None, ref_y=None):
    kept = []
    for row in slow_pairs(x, y, ref, ref_y):
        cols = []
        for j, (s, same, _) in row.items():
            tested = pairs == "all" or (pairs == "positive") == same
            if not tested or low <= s <= high:
                cols.append(j)
        kept.append(cols)
    return to_mask(kept, len(x), len(x) if ref is None else len(ref))


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "squared_euclidean"])
@pytest.mark.parametrize("normalize", [True, False])
def test_batch_hard_matches_loop(distance, normalize):
    x, y = batch(seed=1)
    r, ry = batch(7, seed=2)
    got = batch_hard_miner(x, y, distance=distance, normalize=normalize)
    assert torch.equal(got, slow_batch_hard(x, y, distance, normalize=normalize))
    assert int(got.sum(1).max()) == 2
    got = batch_hard_miner(
        x, y, ref_embeddings=r, ref_labels=ry, distance=distance, normalize=normalize
    )
    assert torch.equal(got, slow_batch_hard(x, y, distance, r, ry, normalize))


@pytest.mark.parametrize("distance", ["cosine", "squared_euclidean"])
def test_semi_hard_matches_loop(distance):
    x, y = batch(12, seed=3)
    for margin in (0.1, 0.5):
        expected, triples = slow_semi_hard(x, y, margin, distance)
        assert torch.equal(semi_hard_miner(x, y, margin=margin, distance=distance), expected)
        full = semi_hard_miner(x, y, margin=margin, distance=distance, triplets=True)
        assert full.shape == (12, 12, 12)
        assert {tuple(t) for t in full.nonzero().tolist()} == triples and triples
    r, ry = batch(9, seed=4)
    got = semi_hard_miner(x, y, ref_embeddings=r, ref_labels=ry, margin=1.0, normalize=False)
    expected, _ = slow_semi_hard(x, y, 1.0, "squared_euclidean", r, ry, normalize=False)
    assert torch.equal(got, expected)


def test_semi_hard_wider_margin_keeps_more_and_excludes_easy_and_hard():
    x, y = batch(16, seed=5)
    sizes = [int(semi_hard_miner(x, y, margin=m, triplets=True).sum()) for m in (0.05, 0.3, 4.1)]
    assert sizes[0] <= sizes[1] <= sizes[2]
    # margin beyond every distance: exactly the triplets with d(a,n) > d(a,p)
    d = (F.normalize(x, dim=1)[:, None] - F.normalize(x, dim=1)[None]).pow(2).sum(-1)
    same = y[:, None] == y[None]
    eye = torch.eye(16, dtype=torch.bool)
    pos, neg = same & ~eye, ~same
    expected = pos[:, :, None] & neg[:, None, :] & (d[:, None, :] > d[:, :, None])
    assert torch.equal(semi_hard_miner(x, y, margin=4.1, triplets=True), expected)


def test_multi_similarity_matches_loop_and_the_loss_rule():
    x, y = batch(12, seed=6)
    r, ry = batch(8, seed=7)
    for eps in (0.0, 0.1, 0.5):
        assert torch.equal(
            multi_similarity_miner(x, y, epsilon=eps), slow_multi_similarity(x, y, eps)
        )
        got = multi_similarity_miner(x, y, ref_embeddings=r, ref_labels=ry, epsilon=eps)
        assert torch.equal(got, slow_multi_similarity(x, y, eps, r, ry))
    # epsilon larger than any similarity gap keeps every pair of anchors with both kinds
    full = multi_similarity_miner(x, y, epsilon=3.0)
    same = y[:, None] == y[None]
    eye = torch.eye(12, dtype=torch.bool)
    both = (same & ~eye).any(1) & (~same).any(1)
    assert torch.equal(full, ~eye & both[:, None])
    # the loss mines the same pairs internally: feeding the mask back changes nothing
    mask = multi_similarity_miner(x, y)
    torch.testing.assert_close(
        multi_similarity_loss(x, y, candidate_mask=mask, reduction="none"),
        multi_similarity_loss(x, y, reduction="none"),
    )


@pytest.mark.parametrize("pairs", ["all", "positive", "negative"])
def test_threshold_matches_loop(pairs):
    x, y = batch(12, seed=8)
    r, ry = batch(6, seed=9)
    for low, high in ((-0.2, 0.4), (-math.inf, 0.1), (0.3, math.inf)):
        got = threshold_miner(x, y, low=low, high=high, pairs=pairs)
        assert torch.equal(got, slow_threshold(x, y, low, high, pairs))
        got = threshold_miner(
            x, y, ref_embeddings=r, ref_labels=ry, low=low, high=high, pairs=pairs
        )
        assert torch.equal(got, slow_threshold(x, y, low, high, pairs, r, ry))
    eye = torch.eye(12, dtype=torch.bool)
    assert torch.equal(threshold_miner(x, y, pairs=pairs), ~eye)  # default range: all pairs


@pytest.mark.parametrize("miner", MINERS)
def test_self_excluded_no_grad_and_composition(miner):
    x, y = batch(10, seed=10)
    xg = x.clone().requires_grad_(True)
    mask = miner(xg, y)
    assert mask.dtype == torch.bool and mask.shape == (10, 10) and not mask.requires_grad
    assert not mask.diagonal().any()
    # an incoming candidate_mask restricts the candidates before mining
    allowed = torch.rand(10, 10, generator=torch.Generator().manual_seed(0)) < 0.6
    assert not (miner(x, y, candidate_mask=allowed) & ~allowed).any()
    # with reference candidates the anchor's twin is a legitimate candidate
    r = x.clone()
    mask = miner(x, y, ref_embeddings=r, ref_labels=y)
    assert mask.shape == (10, 10)


def test_batch_hard_restricted_candidates_equals_mining_on_the_subset():
    x, y = batch(10, seed=11)
    keep = torch.tensor([0, 2, 3, 5, 6, 8, 9])
    allowed = torch.zeros(10, 10, dtype=torch.bool)
    allowed[:, keep] = True
    full = batch_hard_miner(x, y, ref_embeddings=x, ref_labels=y, candidate_mask=allowed)
    sub = batch_hard_miner(x, y, ref_embeddings=x[keep], ref_labels=y[keep])
    assert torch.equal(full[:, keep], sub) and not full[:, [1, 4, 7]].any()


def masked_supcon(x, y, ref, ref_y, mask, t=0.1):
    """Per-anchor SupCon restricted to the mask's candidates."""
    return supcon_loss(
        x, y, ref_embeddings=ref, ref_labels=ref_y, temperature=t,
        candidate_mask=mask, reduction="none",
    )  # fmt: skip


@pytest.mark.parametrize("miner", MINERS)
def test_mask_in_supcon_removes_candidates(miner):
    x, y = batch(8, seed=12)
    r, ry = batch(12, seed=13)
    kw = {"low": -0.3, "high": 0.5} if miner is threshold_miner else {}
    mask = miner(x, y, ref_embeddings=r, ref_labels=ry, **kw)
    assert mask.any() and not mask.all()
    for i in range(len(x)):
        ref = r.clone().requires_grad_(True)
        out = masked_supcon(x[i : i + 1], y[i : i + 1], ref, ry, mask[i : i + 1])
        kept = mask[i].nonzero().flatten()
        # equal to plain SupCon on the kept candidates only
        expected = supcon_loss(
            x[i : i + 1], y[i : i + 1], ref_embeddings=r[kept], ref_labels=ry[kept],
            reduction="none",
        ) if len(kept) else torch.zeros(1, dtype=x.dtype)  # fmt: skip
        torch.testing.assert_close(out, expected)
        out.sum().backward()
        assert (ref.grad[~mask[i]] == 0).all()
        if bool((ry[kept] == y[i]).any()):
            assert (ref.grad[kept].norm(dim=1) > 0).all()


def test_batch_hard_mask_turns_supcon_into_one_pair_infonce():
    x, y = batch(8, seed=14)
    r, ry = batch(12, seed=15)
    mask = batch_hard_miner(x, y, ref_embeddings=r, ref_labels=ry, distance="cosine")
    out = masked_supcon(x, y, r, ry, mask, t=0.2)
    s = F.normalize(x, dim=1) @ F.normalize(r, dim=1).T / 0.2
    for i in range(len(x)):
        pos = [j for j in mask[i].nonzero().flatten().tolist() if ry[j] == y[i]]
        neg = [j for j in mask[i].nonzero().flatten().tolist() if ry[j] != y[i]]
        if pos and neg:
            expected = F.softplus(s[i, neg[0]] - s[i, pos[0]])
            torch.testing.assert_close(out[i], expected)


def test_bad_inputs():
    x, y = batch(5, dtype=torch.float32)
    for miner in MINERS:
        for args, kw, name in [
            ((x[0], y), {}, "embeddings"),
            ((x, y[:3]), {}, "labels"),
            ((x * float("nan"), y), {}, "embeddings"),
            ((x, y), {"ref_embeddings": x}, "ref_labels"),
            ((x, y), {"candidate_mask": torch.ones(5, 4, dtype=torch.bool)}, "candidate_mask"),
        ]:
            with pytest.raises(ValueError, match=name):
                miner(*args, **kw)
    for miner, kw, name in [
        (batch_hard_miner, {"distance": "manhattan"}, "distance"),
        (semi_hard_miner, {"distance": "l1"}, "distance"),
        (semi_hard_miner, {"margin": 0.0}, "margin"),
        (multi_similarity_miner, {"epsilon": -0.1}, "epsilon"),
        (threshold_miner, {"low": 0.5, "high": 0.1}, "low"),
        (threshold_miner, {"high": float("nan")}, "high"),
        (threshold_miner, {"pairs": "hard"}, "pairs"),
    ]:
        with pytest.raises(ValueError, match=name):
            miner(x, y, **kw)


def test_half_precision_inputs():
    x, y = batch(16, 8, seed=16, dtype=torch.float32)
    for miner in MINERS:
        assert torch.equal(miner(x.to(torch.bfloat16), y), miner(x.to(torch.bfloat16).float(), y))
