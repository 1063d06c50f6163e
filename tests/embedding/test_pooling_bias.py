"""Pooling-bias correction, CET (paper 38): slow reference, no-bias and one-negative limits,
the weight formula, gradient share of trusted vs possibly false negatives, candidate mask,
gradcheck, half precision, bad inputs, reductions."""

from __future__ import annotations

import pytest
import torch

from losskit import catalog
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.pooling_bias import (
    PoolingBiasLoss,
    pooling_bias_loss,
    pooling_bias_weights,
)
from tests.contract import check_gradcheck, check_matches_reference


def pairs(n=5, m=8, d=4, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    s = 2 * torch.randn(n, m, generator=g)
    return q.to(dtype), k.to(dtype), s.to(dtype)


def random_mask(n, m, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, m, generator=g) < p
    mask[torch.arange(n), torch.arange(n) % m] = True
    return mask


def slow_cet(q, k, pos, sel, t=1.0, tau=2.0, normalize=False, cand=None):
    """Loop reference: every (positive, negative) pair's two-way softmax cross-entropy,
    weighted by 1 / (1 - sigmoid(S / tau)) of the negative."""
    if normalize:
        q, k = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    out = []
    for i in range(q.shape[0]):
        keep = [j for j in range(k.shape[0]) if cand is None or bool(cand[i, j])]
        ps = [j for j in keep if pos[i, j]]
        ns = [j for j in keep if not pos[i, j]]
        terms = []
        for p in ps:
            for j in ns:
                w = 1.0 if sel is None else 1 / (1 - torch.sigmoid(sel[i, j] / tau))
                sp, sj = torch.dot(q[i], k[p]) / t, torch.dot(q[i], k[j]) / t
                terms.append(-w * torch.log(torch.exp(sp) / (torch.exp(sp) + torch.exp(sj))))
        out.append(sum(terms) / len(terms) if terms else q.new_zeros(()) * q.sum())
    return torch.stack(out)


def index_mask(idx, m):
    mask = torch.zeros(idx.shape[0], m, dtype=torch.bool)
    mask[torch.arange(idx.shape[0]), idx] = True
    return mask


def test_matches_slow_reference():
    q, k, s = pairs()
    idx = torch.tensor([3, 0, 7, 2, 2])
    check_matches_reference(
        lambda a, b: pooling_bias_loss(a, b, idx, selection_logits=s, reduction="none"),
        lambda a, b: slow_cet(a, b, index_mask(idx, 8), s),
        q,
        k,
    )
    mask = random_mask(5, 8)
    check_matches_reference(
        lambda a, b: pooling_bias_loss(
            a,
            b,
            positive_mask=mask,
            selection_logits=s,
            temperature=0.2,
            selection_temperature=1.5,
            normalize=True,
            reduction="none",
        ),
        lambda a, b: slow_cet(a, b, mask, s, t=0.2, tau=1.5, normalize=True),
        q,
        k,
    )


def test_candidate_mask_matches_reference():
    q, k, s = pairs(6, 9, seed=1)
    cand = random_mask(6, 9, seed=2, p=0.6)
    cand[1, 1] = False  # query 1 loses its positive
    check_matches_reference(
        lambda a, b: pooling_bias_loss(
            a, b, selection_logits=s, candidate_mask=cand, reduction="none"
        ),
        lambda a, b: slow_cet(a, b, index_mask(torch.arange(6), 9), s, cand=cand),
        q,
        k,
    )


def test_single_positive_path_equals_mask_path():
    q, k, s = pairs(5, 8, seed=3)
    idx = torch.tensor([1, 4, 0, 7, 4])
    torch.testing.assert_close(
        pooling_bias_loss(q, k, idx, selection_logits=s, reduction="none"),
        pooling_bias_loss(
            q, k, positive_mask=index_mask(idx, 8), selection_logits=s, reduction="none"
        ),
    )


def test_no_bias_is_the_plain_pairwise_softmax_loss():
    q, k, _ = pairs(5, 8, seed=4)
    plain = pooling_bias_loss(q, k, reduction="none")
    torch.testing.assert_close(plain, slow_cet(q, k, index_mask(torch.arange(5), 8), None))
    # selection probabilities ~0 (nothing looks judged): weights exactly 1 in float64
    never = torch.full((5, 8), -2000.0, dtype=torch.float64)
    torch.testing.assert_close(
        pooling_bias_loss(q, k, selection_logits=never, reduction="none"), plain
    )


def test_one_negative_per_query_is_weighted_info_nce():
    """With one negative per query the pair loss is InfoNCE over (positive, negative), times
    that negative's weight."""
    q, k, s = pairs(4, 8, seed=5)
    cand = torch.zeros(4, 8, dtype=torch.bool)
    cand[torch.arange(4), torch.arange(4)] = True
    neg = torch.tensor([5, 4, 7, 6])
    cand[torch.arange(4), neg] = True
    nce = info_nce_loss(
        q, k, temperature=1.0, normalize=False, candidate_mask=cand, reduction="none"
    )
    torch.testing.assert_close(pooling_bias_loss(q, k, candidate_mask=cand, reduction="none"), nce)
    w = 1 / (1 - torch.sigmoid(s[torch.arange(4), neg] / 2.0))
    torch.testing.assert_close(
        pooling_bias_loss(q, k, selection_logits=s, candidate_mask=cand, reduction="none"),
        w * nce,
    )


def test_weights_formula_and_no_gradient():
    _, _, s = pairs()
    sg = s.clone().requires_grad_(True)
    w = pooling_bias_weights(sg, selection_temperature=0.5)
    torch.testing.assert_close(w, 1 / (1 - torch.sigmoid(s / 0.5)))
    assert not w.requires_grad and bool((w >= 1).all())
    q, k, _ = pairs()
    pooling_bias_loss(q.requires_grad_(), k, selection_logits=sg).backward()
    assert sg.grad is None
    wh = pooling_bias_weights(s.half())
    assert wh.dtype == torch.float32 and torch.isfinite(wh).all()


def test_judged_negative_pushes_harder_than_a_possible_false_negative():
    """Two negatives at the same similarity: their gradients differ exactly by the ratio of
    their weights, the one the pool probably judged (high selection logit) weighing more."""
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.2], [0.3, 1.0], [0.3, -1.0]], dtype=torch.float64)
    sel = torch.tensor([[0.0, 3.0, -3.0]], dtype=torch.float64)  # key 1 judged, key 2 not
    kg = k.clone().requires_grad_(True)
    pooling_bias_loss(q, kg, torch.tensor([0]), selection_logits=sel).backward()
    w = pooling_bias_weights(sel)
    ratio = kg.grad[1].norm() / kg.grad[2].norm()
    torch.testing.assert_close(ratio, w[0, 1] / w[0, 2])
    assert ratio > 1


def test_anchor_without_positive_or_negative():
    q, k, s = pairs()
    mask = random_mask(5, 8)
    mask[2] = False
    qg = q.clone().requires_grad_(True)
    none = pooling_bias_loss(qg, k, positive_mask=mask, selection_logits=s, reduction="none")
    assert none[2] == 0
    keep = torch.arange(5) != 2
    torch.testing.assert_close(
        pooling_bias_loss(q, k, positive_mask=mask, selection_logits=s), none[keep].mean()
    )
    none.sum().backward()
    assert torch.all(qg.grad[2] == 0)
    all_pos = torch.ones(5, 8, dtype=torch.bool)  # positives but no negative: 0, counted
    assert torch.equal(
        pooling_bias_loss(q, k, positive_mask=all_pos, reduction="none"), torch.zeros(5).double()
    )
    empty = torch.zeros(5, 8, dtype=torch.bool)
    qe = q.clone().requires_grad_(True)
    out = pooling_bias_loss(qe, k, positive_mask=empty)
    out.backward()
    assert out == 0 and torch.all(qe.grad == 0)


def test_gradcheck():
    q, k, s = pairs(4, 5, 3)
    check_gradcheck(lambda a, b, **kw: pooling_bias_loss(a, b, selection_logits=s, **kw), q, k)
    mask = random_mask(4, 5)
    check_gradcheck(
        lambda a, b, **kw: pooling_bias_loss(
            b, a, positive_mask=mask, selection_logits=s, normalize=True, temperature=0.5, **kw
        ),
        k,
        q,
    )


def test_reductions():
    q, k, s = pairs()
    none = pooling_bias_loss(q, k, selection_logits=s, reduction="none")
    assert none.shape == (5,)
    torch.testing.assert_close(
        pooling_bias_loss(q, k, selection_logits=s, reduction="sum"), none.sum()
    )
    torch.testing.assert_close(pooling_bias_loss(q, k, selection_logits=s), none.mean())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    q, k, s = pairs(8, 10, 16, dtype=torch.float32, seed=1)
    qh, kh, sh = q.to(dtype).requires_grad_(True), k.to(dtype), s.to(dtype)
    out = pooling_bias_loss(
        qh, kh, selection_logits=sh, normalize=True, temperature=0.1, reduction="none"
    )
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = pooling_bias_loss(
        qh.detach().float(),
        kh.float(),
        selection_logits=sh.float(),
        normalize=True,
        temperature=0.1,
        reduction="none",
    )
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(qh.grad).all()
    assert pooling_bias_loss(q.double(), k.double()).dtype == torch.float64


def test_bad_inputs():
    q, k, s = pairs(4, 6, 3, dtype=torch.float32)
    cases = [
        ((q[0], k), {}, "query"),
        ((q.long(), k), {}, "query"),
        ((q, k[:, :2]), {}, "keys"),
        ((q, k[:3]), {}, "keys"),
        ((torch.full_like(q, float("nan")), k), {}, "query"),
        ((q[:0], k), {}, "query"),
        ((q, k, torch.tensor([0, 1, 2, 6])), {}, "positives"),
        ((q, k), {"positive_mask": torch.ones(4, 6)}, "positive_mask"),
        ((q, k), {"candidate_mask": torch.ones(4, 5, dtype=torch.bool)}, "candidate_mask"),
        ((q, k), {"selection_logits": s[:, :5]}, "selection_logits"),
        ((q, k), {"selection_logits": s.long()}, "selection_logits"),
        ((q, k), {"selection_logits": s.clone().fill_(float("inf"))}, "selection_logits"),
        ((q, k), {"temperature": 0.0}, "temperature"),
        ((q, k), {"selection_temperature": -1.0}, "selection_temperature"),
        ((q, k), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            pooling_bias_loss(*args, **kw)
    with pytest.raises(ValueError, match="selection_temperature"):
        pooling_bias_weights(s, selection_temperature=0.0)
    with pytest.raises(ValueError, match="selection_logits"):
        pooling_bias_weights(s.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="selection_temperature"):
        PoolingBiasLoss(selection_temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        PoolingBiasLoss(temperature=-1.0)


def test_module_and_registry():
    q, k, s = pairs()
    cand = random_mask(5, 8, p=0.7)
    torch.testing.assert_close(
        PoolingBiasLoss(0.5, selection_temperature=3.0, reduction="none")(
            q, k, None, None, s, cand
        ),
        pooling_bias_loss(
            q,
            k,
            selection_logits=s,
            temperature=0.5,
            selection_temperature=3.0,
            candidate_mask=cand,
            reduction="none",
        ),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "pooling_bias"]
    assert entry.module is PoolingBiasLoss and entry.papers == (38,)
    built = entry.build()
    assert (built.temperature, built.selection_temperature, built.normalize) == (1.0, 2.0, False)
