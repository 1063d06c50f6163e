"""UniME loss (paper 42): slow reference, reduction to InfoNCE, false negatives never in the
denominator, fewer survivors than k, gradcheck, half precision, bad inputs, reductions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.unime import UniMELoss, unime_loss
from losskit.mining.negative_filters import false_negative_filter, hardest_negatives
from tests.contract import check_gradcheck, check_matches_reference, check_reductions


def pairs(n=6, m=10, d=4, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randn(m, d, generator=g).to(dtype)


def slow_unime(q, k, idx, t, alpha, topk, normalize=True):
    """Loop reference, one positive per query: drop keys with s > s_pos + alpha, sort the
    other negatives by similarity, keep the first topk, cross-entropy with the positive."""
    out = []
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm() if normalize else q[i]
        s = [torch.dot(qi, k[j] / k[j].norm() if normalize else k[j]) for j in range(k.shape[0])]
        p = int(idx[i])
        negs = [j for j in range(k.shape[0]) if j != p and s[j].item() <= s[p].item() + alpha]
        negs = sorted(negs, key=lambda j: -s[j].item())[:topk]
        logits = torch.stack([s[p]] + [s[j] for j in negs]) / t
        out.append(torch.logsumexp(logits, 0) - logits[0])
    return torch.stack(out)


@pytest.mark.parametrize(("alpha", "topk"), [(0.1, 3), (-0.2, 2), (0.3, 8), (math.inf, 4)])
def test_matches_slow_reference(alpha, topk):
    q, k = pairs()
    idx = torch.tensor([3, 0, 9, 2, 2, 7])
    check_matches_reference(
        lambda a, b: unime_loss(
            a, b, idx, temperature=0.3, threshold=alpha, k=topk, reduction="none"
        ),
        lambda a, b: slow_unime(a, b, idx, 0.3, alpha, topk),
        q,
        k,
    )
    check_matches_reference(
        lambda a, b: unime_loss(
            a, b, temperature=0.5, threshold=alpha, k=topk, normalize=False, reduction="none"
        ),
        lambda a, b: slow_unime(a, b, torch.arange(6), 0.5, alpha, topk, normalize=False),
        q,
        k,
    )


def test_reference_case_filters_something():
    q, k = pairs()
    s = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T
    assert (~false_negative_filter(s, threshold=0.1)).any()  # the test above is not vacuous


def test_no_filter_all_negatives_equals_info_nce():
    q, k = pairs()
    idx = torch.tensor([3, 0, 9, 2, 2, 7])
    mask = torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) < 0.3
    mask[torch.arange(6), idx] = True
    for red in ("none", "sum", "mean"):
        for kw in ({"threshold": None, "k": None}, {"threshold": math.inf, "k": 9}):
            torch.testing.assert_close(
                unime_loss(q, k, idx, temperature=0.2, reduction=red, **kw),
                info_nce_loss(q, k, idx, temperature=0.2, reduction=red),
            )
            torch.testing.assert_close(
                unime_loss(q, k, positive_mask=mask, temperature=0.2, reduction=red, **kw),
                info_nce_loss(q, k, positive_mask=mask, temperature=0.2, reduction=red),
            )


def test_equals_info_nce_on_the_selected_mask():
    q, k = pairs(seed=2)
    s = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T
    keep = hardest_negatives(s, k=3, candidate_mask=false_negative_filter(s, threshold=0.05))
    expected = [
        -torch.log_softmax(s[i][keep[i]] / 0.1, 0)[keep[i][: i + 1].sum() - 1] for i in range(6)
    ]
    torch.testing.assert_close(
        unime_loss(q, k, temperature=0.1, threshold=0.05, k=3, reduction="none"),
        torch.stack(expected),
    )


def test_false_negatives_get_no_gradient():
    q, k = pairs(4, 8, 3, seed=3)
    k = k.clone()
    k[5] = q[0] * 3.0  # far more similar to query 0 than its positive: a false negative
    s = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T
    assert s[0, 5] > s[0, 0] + 0.1
    kg = k.clone().requires_grad_(True)
    out = unime_loss(q[:1], kg, torch.tensor([0]), temperature=0.1, threshold=0.1, k=8)
    out.backward()
    assert (kg.grad[5] == 0).all() and (kg.grad[0] != 0).any()
    # and changing it further leaves the loss unchanged
    k2 = k.clone()
    k2[5] = q[0] * 5.0 + 0.01
    torch.testing.assert_close(
        unime_loss(q[:1], k2, torch.tensor([0]), temperature=0.1, threshold=0.1, k=8), out
    )


def test_fewer_survivors_than_k_uses_what_is_left():
    q, k = pairs(3, 4, 3, seed=4)
    # k=8 > M-1=3 negatives: all three are used, the positive never reappears as a negative
    torch.testing.assert_close(
        unime_loss(q, k, temperature=0.3, threshold=None, k=8, reduction="none"),
        info_nce_loss(q, k, temperature=0.3, reduction="none"),
    )
    # every negative filtered: only the positive is left, loss 0 with zero gradient
    qg = q.clone().requires_grad_(True)
    out = unime_loss(qg, k, temperature=0.3, threshold=-5.0, k=8, reduction="none")
    assert (out == 0).all()
    out.sum().backward()
    assert (qg.grad == 0).all()


def test_candidate_mask_and_anchor_without_positive():
    q, k = pairs()
    cand = torch.ones(6, 10, dtype=torch.bool)
    cand[1, 1] = False  # removes query 1's positive
    cand[0, 4] = False
    qg = q.clone().requires_grad_(True)
    none = unime_loss(qg, k, temperature=0.2, k=3, candidate_mask=cand, reduction="none")
    assert none[1] == 0
    keep = torch.arange(6) != 1
    torch.testing.assert_close(
        unime_loss(q, k, temperature=0.2, k=3, candidate_mask=cand), none[keep].mean()
    )
    none.sum().backward()
    assert (qg.grad[1] == 0).all()
    # a removed candidate is never picked as a hard negative: query 0 as if key 4 were absent
    rest = torch.arange(10) != 4
    torch.testing.assert_close(
        none[0], slow_unime(q[:1], k[rest], torch.tensor([0]), 0.2, 0.1, 3)[0]
    )


def test_gradcheck():
    q, k = pairs(4, 7, 3)
    check_gradcheck(lambda a, b, **kw: unime_loss(a, b, temperature=0.5, k=3, **kw), q, k)
    check_gradcheck(lambda a, b, **kw: unime_loss(q, a, temperature=0.5, k=3, **kw), k, None)


def test_reductions():
    q, k = pairs()
    check_reductions(lambda a, b, **kw: unime_loss(a, b, k=3, **kw), q, k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    q, k = pairs(8, 12, 16, dtype=torch.float32, seed=1)
    q, k = (10 * q).to(dtype).requires_grad_(True), (10 * k).to(dtype)
    out = unime_loss(q, k, k=4, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = unime_loss(q.detach().float(), k.float(), k=4, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_float64_kept():
    q, k = pairs()
    assert unime_loss(q, k).dtype == torch.float64


def test_bad_inputs():
    q, k = pairs(4, 6, 3, dtype=torch.float32)
    cases = [
        ((q[0], k), {}, "query"),
        ((q.long(), k), {}, "query"),
        ((q, k[:, :2]), {}, "keys"),
        ((q, k[:3]), {}, "keys"),
        ((torch.full_like(q, float("nan")), k), {}, "query"),
        ((q[:0], k), {}, "query"),
        ((q, k, torch.tensor([0, 1, 2, 6])), {}, "positives"),
        ((q, k), {"positive_mask": torch.ones(4, 5, dtype=torch.bool)}, "positive_mask"),
        ((q, k), {"candidate_mask": torch.ones(4, 6)}, "candidate_mask"),
        ((q, k), {"temperature": 0.0}, "temperature"),
        ((q, k), {"threshold": float("nan")}, "threshold"),
        ((q, k), {"threshold": "x"}, "threshold"),
        ((q, k), {"k": 0}, "k"),
        ((q, k), {"k": 2.5}, "k"),
        ((q, k), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            unime_loss(*args, **kw)
    for kw, name in (
        ({"temperature": -1.0}, "temperature"),
        ({"threshold": float("nan")}, "threshold"),
        ({"k": 0}, "k"),
        ({"reduction": "avg"}, "reduction"),
    ):
        with pytest.raises(ValueError, match=name):
            UniMELoss(**kw)


def test_module_and_registry():
    q, k = pairs()
    cand = torch.rand(6, 10, generator=torch.Generator().manual_seed(5)) < 0.9
    mod = UniMELoss(0.2, threshold=0.05, k=3, reduction="sum")
    torch.testing.assert_close(
        mod(q, k, candidate_mask=cand),
        unime_loss(
            q, k, temperature=0.2, threshold=0.05, k=3, candidate_mask=cand, reduction="sum"
        ),
    )
    assert UniMELoss(threshold=None).threshold is None
    (entry,) = [e for e in catalog(family="embedding") if e.name == "unime"]
    assert entry.function is unime_loss and entry.papers == (42,)
    built = entry.build()
    assert (built.temperature, built.threshold, built.k) == (0.02, 0.1, 8)
    torch.testing.assert_close(built(q, k), unime_loss(q, k))
