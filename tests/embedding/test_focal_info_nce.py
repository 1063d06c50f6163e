"""Focal InfoNCE (paper 9): slow reference, gamma=0 is InfoNCE, weight properties,
gradcheck, half precision, bad inputs, reductions; hard-negative mixing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding import info_nce_loss
from losskit.embedding.focal_info_nce import (
    FocalInfoNCELoss,
    focal_info_nce_loss,
    mix_hard_negatives,
)
from tests.contract import check_gradcheck, check_matches_reference, check_reductions


def pairs(n=5, m=7, d=4, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randn(m, d, generator=g).to(dtype)


def slow_focal(q, k, idx, t, gamma):
    """Loop reference: -(1 - p)^gamma * log p of each query's positive, cosine similarities."""
    out = []
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        s = [torch.dot(qi, k[j] / k[j].norm()) / t for j in range(k.shape[0])]
        z = sum(torch.exp(x) for x in s)
        p = torch.exp(s[int(idx[i])]) / z
        out.append(-((1 - p) ** gamma) * torch.log(p))
    return torch.stack(out)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
def test_matches_slow_reference(gamma):
    q, k = pairs()
    idx = torch.tensor([3, 0, 6, 2, 2])
    check_matches_reference(
        lambda a, b: focal_info_nce_loss(a, b, idx, temperature=0.3, gamma=gamma, reduction="none"),
        lambda a, b: slow_focal(a, b, idx, 0.3, gamma),
        q,
        k,
    )


def test_gamma_zero_equals_info_nce():
    q, k = pairs()
    idx = torch.tensor([3, 0, 6, 2, 2])
    for red in ("none", "sum", "mean"):
        torch.testing.assert_close(
            focal_info_nce_loss(q, k, idx, temperature=0.2, gamma=0.0, reduction=red),
            info_nce_loss(q, k, idx, temperature=0.2, reduction=red),
        )
    torch.testing.assert_close(
        focal_info_nce_loss(q, k, gamma=0.0, normalize=False, temperature=2.0),
        F.cross_entropy(q @ k.T / 2.0, torch.arange(5)),
    )


def test_weight_in_unit_interval_and_decreasing():
    q, k = pairs(6, 9, 5, seed=2)
    plain = info_nce_loss(q, k, temperature=0.5, reduction="none")
    p = torch.exp(-plain)
    for gamma in (0.5, 1.0, 2.0):
        focal = focal_info_nce_loss(q, k, temperature=0.5, gamma=gamma, reduction="none")
        w = focal / plain
        assert ((w > 0) & (w <= 1)).all()
        torch.testing.assert_close(w, (1 - p) ** gamma)
        order = p.argsort()
        assert (w[order].diff() <= 0).all()  # larger p, smaller weight


def test_confident_query_finite_gradient():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    k = q.detach().clone()
    for gamma in (0.5, 2.0):
        out = focal_info_nce_loss(q, k, temperature=1e-3, gamma=gamma)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(q.grad).all()
        q.grad = None


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.5])
def test_gradcheck(gamma):
    q, k = pairs(4, 5, 3)
    idx = torch.tensor([4, 1, 0, 3])
    check_gradcheck(
        lambda a, b, **kw: focal_info_nce_loss(a, b, idx, temperature=0.5, gamma=gamma, **kw),
        q,
        k,
    )
    check_gradcheck(
        lambda a, b, **kw: focal_info_nce_loss(b, a, temperature=0.5, gamma=gamma, **kw), k, q
    )


def test_reductions():
    q, k = pairs()
    check_reductions(lambda a, b, **kw: focal_info_nce_loss(a, b, temperature=0.3, **kw), q, k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    q, k = pairs(8, 8, 16, dtype=torch.float32, seed=1)
    q, k = (10 * q).to(dtype).requires_grad_(True), (10 * k).to(dtype)
    out = focal_info_nce_loss(q, k, temperature=0.1, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = focal_info_nce_loss(q.detach().float(), k.float(), temperature=0.1, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_float64_kept():
    q, k = pairs()
    assert focal_info_nce_loss(q, k).dtype == torch.float64


def test_bad_inputs():
    q, k = pairs(4, 6, 3, dtype=torch.float32)
    cases = [
        ((q[0], k), {}, "query"),
        ((q.long(), k), {}, "query"),
        ((q, k[:, :2]), {}, "keys"),
        ((q, k[:3]), {}, "keys"),
        ((torch.full_like(q, float("nan")), k), {}, "query"),
        ((q, k.clone().fill_(float("inf"))), {}, "keys"),
        ((q, k, torch.tensor([0.0, 1.0, 2.0, 3.0])), {}, "positives"),
        ((q, k, torch.tensor([0, 1, 2])), {}, "positives"),
        ((q, k, torch.tensor([0, 1, 2, 6])), {}, "positives"),
        ((q, k), {"temperature": 0.0}, "temperature"),
        ((q, k), {"gamma": -1.0}, "gamma"),
        ((q, k), {"gamma": float("nan")}, "gamma"),
        ((q, k), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            focal_info_nce_loss(*args, **kw)
    with pytest.raises(ValueError, match="gamma"):
        FocalInfoNCELoss(gamma=-0.5)
    with pytest.raises(ValueError, match="temperature"):
        FocalInfoNCELoss(temperature=0)
    with pytest.raises(ValueError, match="reduction"):
        FocalInfoNCELoss(reduction="avg")


def test_module_and_registry():
    q, k = pairs()
    mod = FocalInfoNCELoss(0.2, 1.5, reduction="sum")
    torch.testing.assert_close(
        mod(q, k), focal_info_nce_loss(q, k, temperature=0.2, gamma=1.5, reduction="sum")
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "focal_info_nce"]
    assert entry.function is focal_info_nce_loss and entry.papers == (9,)
    built = entry.build()
    assert built.temperature == 0.01 and built.gamma == 2.0


# -- hard-negative mixing ------------------------------------------------------------------


def test_mixed_negatives_unit_norm_deterministic_no_grad():
    q, k = pairs(6, 20, 8, dtype=torch.float32, seed=4)
    kg = k.clone().requires_grad_(True)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return mix_hard_negatives(q, kg, num_mixed=5, num_hardest=4, generator=g)

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (6, 5, 8) and a.dtype == torch.float32 and not a.requires_grad
    torch.testing.assert_close(a.norm(dim=2), torch.ones(6, 5))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_mixed_negatives_are_hard():
    q, k = pairs(8, 40, 16, seed=5)
    idx = torch.arange(8) * 3
    g = torch.Generator().manual_seed(0)
    mixed = mix_hard_negatives(q, k, idx, num_mixed=6, num_hardest=3, generator=g)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    sim = qn @ kn.T
    neg = torch.ones_like(sim, dtype=torch.bool)
    neg[torch.arange(8), idx] = False
    mean_neg = (sim * neg).sum(1) / neg.sum(1)
    mixed_sim = torch.einsum("nd,nkd->nk", qn, mixed)
    assert (mixed_sim.min(dim=1).values > mean_neg).all()
    # each mix lies in the span of two of the query's hardest negatives (positive excluded)
    hardest = sim.masked_fill(~neg, -2).topk(3, dim=1).values
    lowest_hard = hardest[:, -1]
    ok = hardest[:, -1] >= 0
    assert (mixed_sim[ok].min(dim=1).values >= lowest_hard[ok] - 1e-9).all()


def test_mixed_negatives_bad_inputs():
    q, k = pairs(4, 6, 3, dtype=torch.float32)
    for kw, name in [
        ({"num_mixed": 0, "num_hardest": 2}, "num_mixed"),
        ({"num_mixed": 2, "num_hardest": 1}, "num_hardest"),
        ({"num_mixed": 2, "num_hardest": 6}, "num_hardest"),
    ]:
        with pytest.raises(ValueError, match=name):
            mix_hard_negatives(q, k, **kw)
    with pytest.raises(ValueError, match="positives"):
        mix_hard_negatives(q, k, torch.tensor([0, 1, 2, 9]), num_mixed=2, num_hardest=2)
