"""Negative filters (papers 24 and 42): loop references, positives never removed,
monotonicity and limits, chaining, no gradient, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from losskit.mining.negative_filters import (
    adaptive_margin_filter,
    false_negative_filter,
    hardest_negatives,
)


def sims(n=6, m=9, *, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(n, m, generator=g) - 1).to(dtype)


def multi_mask(n=6, m=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, m, generator=g) < 0.25
    mask[torch.arange(n), torch.arange(n)] = True
    return mask


def slow_threshold_filter(sim, pos, rule, reference="max"):
    """Loop reference: keep candidate j of anchor i unless it is a negative and
    rule(s_ij, s+) says drop, with s+ the reference over the anchor's positives."""
    n, m = sim.shape
    out = torch.ones(n, m, dtype=torch.bool)
    for i in range(n):
        ps = [sim[i, j].item() for j in range(m) if pos[i, j]]
        if not ps:
            continue
        ref = {"max": max(ps), "min": min(ps), "mean": sum(ps) / len(ps)}[reference]
        for j in range(m):
            if not pos[i, j] and rule(sim[i, j].item(), ref):
                out[i, j] = False
    return out


def slow_hardest(sim, pos, base, k):
    n, m = sim.shape
    out = pos & base
    for i in range(n):
        negs = sorted(
            (j for j in range(m) if base[i, j] and not pos[i, j]), key=lambda j: -sim[i, j]
        )
        for j in negs[:k]:
            out[i, j] = True
    return out


@pytest.mark.parametrize("reference", ["max", "min", "mean"])
def test_adaptive_margin_matches_loop(reference):
    s, mask = sims(), multi_mask()
    got = adaptive_margin_filter(s, positive_mask=mask, margin=0.9, reference=reference)
    assert torch.equal(got, slow_threshold_filter(s, mask, lambda x, r: x > 0.9 * r, reference))
    got = adaptive_margin_filter(
        s, positive_mask=mask, margin=0.05, relative=False, reference=reference
    )
    want = slow_threshold_filter(s, mask, lambda x, r: x > r - 0.05, reference)
    assert torch.equal(got, want)


@pytest.mark.parametrize("reference", ["max", "min", "mean"])
def test_false_negative_matches_loop(reference):
    s, mask = sims(seed=1), multi_mask(seed=1)
    got = false_negative_filter(s, positive_mask=mask, threshold=0.1, reference=reference)
    want = slow_threshold_filter(s, mask, lambda x, r: x > r + 0.1, reference)
    assert torch.equal(got, want)
    assert (~got).any() and got[~mask].any()  # the case removes some and keeps some


def test_positive_index_form_equals_mask_form():
    s = sims()
    idx = torch.tensor([3, 0, 8, 2, 2, 5])
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[torch.arange(6), idx] = True
    for f in (adaptive_margin_filter, false_negative_filter, hardest_negatives):
        assert torch.equal(f(s, idx), f(s, positive_mask=mask))
    eye = torch.eye(6, 9, dtype=torch.bool)
    for f in (adaptive_margin_filter, false_negative_filter, hardest_negatives):
        assert torch.equal(f(s), f(s, positive_mask=eye))


def test_positives_never_removed():
    s, mask = sims(seed=2), multi_mask(seed=2)
    s = s.masked_fill(mask, -0.9)  # positives scoring below every negative
    for keep in (
        adaptive_margin_filter(s, positive_mask=mask, margin=0.0),
        adaptive_margin_filter(s, positive_mask=mask, margin=5.0, relative=False),
        false_negative_filter(s, positive_mask=mask, threshold=-1.0),
        hardest_negatives(s, positive_mask=mask, k=1),
    ):
        assert keep[mask].all()


def test_adaptive_margin_monotone_and_limits():
    s = sims(8, 12, seed=3).abs()  # positive reference scores
    prev = None
    for margin in (0.0, 0.3, 0.6, 0.9, 0.95, 1.0, 1.5):
        keep = adaptive_margin_filter(s, margin=margin)
        if prev is not None:
            assert (keep | ~prev).all()  # larger margin keeps a superset
        prev = keep
    assert adaptive_margin_filter(s, margin=1e6).all()
    # absolute form: larger margin drops more
    loose = adaptive_margin_filter(s, margin=-0.5, relative=False)
    tight = adaptive_margin_filter(s, margin=0.2, relative=False)
    assert (loose | ~tight).all() and not torch.equal(loose, tight)


def test_negative_identical_to_positive_is_filtered():
    g = torch.Generator().manual_seed(4)
    q = torch.nn.functional.normalize(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    k[0] = q[0]  # query 0's positive
    k = torch.cat([k, k[:1]])  # key 6 duplicates it
    s = q @ k.T
    for keep in (
        adaptive_margin_filter(s, margin=0.95),
        adaptive_margin_filter(s, margin=1e-3, relative=False),
    ):
        assert keep[0, 0] and not keep[0, 6]
    # the false-negative filter only drops what beats the positive by more than alpha
    assert false_negative_filter(s, threshold=0.1)[0, 6]
    assert not false_negative_filter(s, threshold=-1e-3)[0, 6]


def test_false_negative_is_adaptive_margin_with_negated_absolute_margin():
    s, mask = sims(seed=5), multi_mask(seed=5)
    for alpha in (-0.2, 0.0, 0.1, 0.4):
        assert torch.equal(
            false_negative_filter(s, positive_mask=mask, threshold=alpha),
            adaptive_margin_filter(s, positive_mask=mask, margin=-alpha, relative=False),
        )
    assert false_negative_filter(s, threshold=math.inf).all()


def test_hardest_negatives_matches_loop_and_counts():
    s, mask = sims(seed=6), multi_mask(seed=6)
    base = torch.rand(6, 9, generator=torch.Generator().manual_seed(7)) < 0.8
    for k in (1, 3, 8, 20):
        got = hardest_negatives(s, positive_mask=mask, k=k, candidate_mask=base)
        assert torch.equal(got, slow_hardest(s, mask, base, k))
        negs = (got & ~mask).sum(dim=1)
        avail = (base & ~mask).sum(dim=1)
        assert torch.equal(negs, avail.clamp_max(k))
    assert hardest_negatives(s, positive_mask=mask, k=9).all()


def test_candidate_mask_respected_and_chaining():
    s, mask = sims(seed=8), multi_mask(seed=8)
    base = torch.rand(6, 9, generator=torch.Generator().manual_seed(9)) < 0.7
    for f in (adaptive_margin_filter, false_negative_filter, hardest_negatives):
        keep = f(s, positive_mask=mask, candidate_mask=base)
        assert not (keep & ~base).any()  # never re-adds a removed candidate
        assert keep[mask & base].all()
    # UniME's pipeline: filter, then the k hardest of what is left
    fn = false_negative_filter(s, positive_mask=mask, threshold=0.1)
    both = hardest_negatives(s, positive_mask=mask, k=2, candidate_mask=fn)
    assert not (both & ~fn).any()
    assert torch.equal(both, slow_hardest(s, mask, fn, 2))
    # a positive removed by the incoming mask no longer sets the reference
    only = torch.zeros(6, 9, dtype=torch.bool)
    only[:, 0] = True
    keep = false_negative_filter(s, positive_mask=only, threshold=-5.0, candidate_mask=~only)
    assert torch.equal(keep, ~only)


def test_anchor_without_positive_keeps_candidates():
    s = sims()
    mask = multi_mask()
    mask[2] = False
    assert adaptive_margin_filter(s, positive_mask=mask, margin=0.0)[2].all()
    assert false_negative_filter(s, positive_mask=mask, threshold=-5.0)[2].all()
    assert hardest_negatives(s, positive_mask=mask, k=1)[2].sum() == 1  # still its k hardest


def test_no_gradient_and_dtypes():
    s = sims(dtype=torch.float32).requires_grad_(True)
    for f in (adaptive_margin_filter, false_negative_filter, hardest_negatives):
        keep = f(s)
        assert keep.dtype == torch.bool and not keep.requires_grad
        for dtype in (torch.bfloat16, torch.float16):
            assert f(s.detach().to(dtype)).shape == (6, 9)


def test_bad_inputs():
    s, mask = sims(4, 6, dtype=torch.float32), multi_mask(4, 6)
    cases = [
        ((s[0],), {}, "sim"),
        ((s.long(),), {}, "sim"),
        ((s[:0],), {}, "sim"),
        ((torch.full_like(s, float("nan")),), {}, "sim"),
        ((s[:, :3],), {}, "sim"),
        ((s, torch.tensor([0, 1, 2])), {}, "positives"),
        ((s, torch.tensor([0, 1, 2, 6])), {}, "positives"),
        ((s, torch.tensor([0.0, 1.0, 2.0, 3.0])), {}, "positives"),
        ((s,), {"positive_mask": mask[:, :5]}, "positive_mask"),
        ((s,), {"positive_mask": mask.float()}, "positive_mask"),
        ((s, torch.arange(4)), {"positive_mask": mask}, "positive_mask"),
        ((s,), {"candidate_mask": mask[:3]}, "candidate_mask"),
        ((s,), {"candidate_mask": mask.int()}, "candidate_mask"),
    ]
    for f in (adaptive_margin_filter, false_negative_filter, hardest_negatives):
        for args, kw, name in cases:
            with pytest.raises(ValueError, match=name):
                f(*args, **kw)
    for kw in ({"margin": -0.1}, {"margin": float("nan")}, {"margin": "x"}):
        with pytest.raises(ValueError, match="margin"):
            adaptive_margin_filter(s, **kw)
    with pytest.raises(ValueError, match="reference"):
        adaptive_margin_filter(s, reference="median")
    with pytest.raises(ValueError, match="reference"):
        false_negative_filter(s, reference="median")
    with pytest.raises(ValueError, match="threshold"):
        false_negative_filter(s, threshold=float("nan"))
    for k in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="k"):
            hardest_negatives(s, k=k)
