"""InfoNCE: slow reference, cross-entropy identity, temperature and hard negatives,
gradcheck, half precision, bad inputs, reductions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding import InfoNCELoss, info_nce_loss
from tests.contract import check_gradcheck, check_matches_reference, check_reductions


def pairs(n=5, m=7, d=4, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randn(m, d, generator=g).to(dtype)


def random_mask(n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, m, generator=g) < 0.3
    mask[torch.arange(n), torch.arange(n) % m] = True
    return mask


def slow_info_nce(q, k, mask, t):
    """Loop reference: the multi-positive average of -log softmax, cosine similarities."""
    out = []
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        s = [torch.dot(qi, k[j] / k[j].norm()) / t for j in range(k.shape[0])]
        log_z = torch.log(sum(torch.exp(x) for x in s))
        terms = [log_z - s[j] for j in range(k.shape[0]) if mask[i, j]]
        out.append(sum(terms) / len(terms) if terms else q.new_zeros(()) * q.sum())
    return torch.stack(out)


def test_matches_slow_reference_single_and_multi_positive():
    q, k = pairs()
    idx = torch.tensor([3, 0, 6, 2, 2])
    one = torch.zeros(5, 7, dtype=torch.bool)
    one[torch.arange(5), idx] = True
    check_matches_reference(
        lambda a, b: info_nce_loss(a, b, idx, temperature=0.3, reduction="none"),
        lambda a, b: slow_info_nce(a, b, one, 0.3),
        q,
        k,
    )
    mask = random_mask(5, 7)
    check_matches_reference(
        lambda a, b: info_nce_loss(a, b, positive_mask=mask, temperature=0.5, reduction="none"),
        lambda a, b: slow_info_nce(a, b, mask, 0.5),
        q,
        k,
    )


def test_one_positive_equals_cross_entropy():
    q, k = pairs(6, 6)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.07
    expected = F.cross_entropy(logits, torch.arange(6), reduction="none")
    torch.testing.assert_close(info_nce_loss(q, k, reduction="none"), expected)
    idx = torch.tensor([5, 4, 3, 2, 1, 0])
    torch.testing.assert_close(
        info_nce_loss(q, k, idx, normalize=False, temperature=2.0),
        F.cross_entropy(q @ k.T / 2.0, idx),
    )


def test_anchor_without_positive_drops_out():
    q, k = pairs()
    mask = random_mask(5, 7)
    mask[2] = False
    qg = q.clone().requires_grad_(True)
    none = info_nce_loss(qg, k, positive_mask=mask, reduction="none")
    assert none[2] == 0
    keep = torch.arange(5) != 2
    torch.testing.assert_close(info_nce_loss(q, k, positive_mask=mask), none[keep].mean())
    none.sum().backward()
    assert (qg.grad[2] == 0).all()
    empty = torch.zeros(5, 7, dtype=torch.bool)
    assert info_nce_loss(q, k, positive_mask=empty) == 0


def hard_negative_share(t):
    """Share of the negatives' gradient norm carried by the most similar negative."""
    q, k = pairs(1, 8, 6, seed=3)
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    kg = k.clone().requires_grad_(True)
    info_nce_loss(q, kg, torch.tensor([0]), temperature=t, normalize=False).backward()
    norms = kg.grad[1:].norm(dim=1)
    hardest = (q @ k[1:].T).argmax()
    return (norms[hardest] / norms.sum()).item()


def test_lower_temperature_concentrates_gradient_on_hardest_negative():
    shares = [hard_negative_share(t) for t in (2.0, 0.5, 0.2, 0.07, 0.02)]
    assert all(a < b for a, b in zip(shares, shares[1:], strict=False)), shares
    assert shares[0] < 0.2 < 0.7 < shares[-1]  # near uniform (1/7) at T=2, one dominates at T=0.02


def test_gradcheck():
    q, k = pairs(4, 5, 3)
    check_gradcheck(lambda a, b, **kw: info_nce_loss(a, b, temperature=0.5, **kw), q, k)
    mask = random_mask(4, 5)
    check_gradcheck(
        lambda a, b, **kw: info_nce_loss(b, a, positive_mask=mask, temperature=0.5, **kw), k, q
    )


def test_reductions():
    q, k = pairs()
    check_reductions(lambda a, b, **kw: info_nce_loss(a, b, **kw), q, k)
    mask = random_mask(5, 7)
    check_reductions(lambda a, b, **kw: info_nce_loss(a, b, positive_mask=mask, **kw), q, k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    q, k = pairs(8, 8, 16, dtype=torch.float32, seed=1)
    q, k = (10 * q).to(dtype).requires_grad_(True), (10 * k).to(dtype)
    out = info_nce_loss(q, k, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = info_nce_loss(q.detach().float(), k.float(), reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_float64_kept():
    q, k = pairs()
    assert info_nce_loss(q, k).dtype == torch.float64


def test_bad_inputs():
    q, k = pairs(4, 6, 3, dtype=torch.float32)
    mask = random_mask(4, 6)
    cases = [
        ((q[0], k), {}, "query"),
        ((q.long(), k), {}, "query"),
        ((q, k[:, :2]), {}, "keys"),
        ((q, k[:3]), {}, "keys"),
        ((torch.full_like(q, float("nan")), k), {}, "query"),
        ((q, k.clone().fill_(float("inf"))), {}, "keys"),
        ((q[:0], k), {}, "query"),
        ((q, k[:0]), {}, "keys"),
        ((q, k, torch.tensor([0.0, 1.0, 2.0, 3.0])), {}, "positives"),
        ((q, k, torch.tensor([0, 1, 2])), {}, "positives"),
        ((q, k, torch.tensor([0, 1, 2, 6])), {}, "positives"),
        ((q, k), {"positive_mask": mask[:, :5]}, "positive_mask"),
        ((q, k), {"positive_mask": mask.float()}, "positive_mask"),
        ((q, k, torch.arange(4)), {"positive_mask": mask}, "positive_mask"),
        ((q, k), {"temperature": 0.0}, "temperature"),
        ((q, k), {"temperature": -1.0}, "temperature"),
        ((q, k), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            info_nce_loss(*args, **kw)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
    with pytest.raises(ValueError, match="reduction"):
        InfoNCELoss(reduction="avg")


def test_module_and_registry():
    q, k = pairs()
    mask = random_mask(5, 7)
    mod = InfoNCELoss(0.2, reduction="sum")
    torch.testing.assert_close(
        mod(q, k, positive_mask=mask),
        info_nce_loss(q, k, positive_mask=mask, temperature=0.2, reduction="sum"),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "info_nce"]
    assert entry.function is info_nce_loss and entry.papers == ()
    assert entry.build().temperature == 0.07
