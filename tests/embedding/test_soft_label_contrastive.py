"""Soft-label contrastive loss (paper 24): slow reference, one-hot targets give InfoNCE,
soft cross-entropy identity, teacher temperature, candidate mask, gradcheck, half precision,
bad inputs, reductions; with the adaptive-margin filter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.soft_label_contrastive import (
    SoftLabelContrastiveLoss,
    soft_label_contrastive_loss,
)
from losskit.mining.negative_filters import adaptive_margin_filter
from tests.contract import check_gradcheck, check_matches_reference, check_reductions


def pairs(n=5, m=7, d=4, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.randn(m, d, generator=g).to(dtype)


def teacher(n=5, m=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.rand(n, m, generator=g).to(dtype)


def slow_soft(q, k, r, t, tau=None, keep=None):
    """Loop reference: targets from the teacher over the kept candidates, then
    -sum_j q_j log softmax_j(cos/t); a query without a target gives 0."""
    out = []
    for i in range(q.shape[0]):
        cols = [j for j in range(k.shape[0]) if keep is None or keep[i, j]]
        qi = q[i] / q[i].norm()
        s = [torch.dot(qi, k[j] / k[j].norm()) / t for j in cols]
        if tau is None:
            w = [r[i, j].item() for j in cols]
        else:
            w = [torch.exp(r[i, j] / tau).item() for j in cols]
        total = sum(w)
        if not cols or total == 0:
            out.append(q.new_zeros(()) * q.sum())
            continue
        log_z = torch.log(sum(torch.exp(x) for x in s))
        out.append(sum((wj / total) * (log_z - sj) for wj, sj in zip(w, s, strict=True)))
    return torch.stack(out)


@pytest.mark.parametrize("tau", [None, 0.5, 2.0])
def test_matches_slow_reference(tau):
    q, k = pairs()
    r = teacher()
    keep = torch.rand(5, 7, generator=torch.Generator().manual_seed(3)) < 0.7
    check_matches_reference(
        lambda a, b: soft_label_contrastive_loss(
            a, b, r, temperature=0.3, teacher_temperature=tau, reduction="none"
        ),
        lambda a, b: slow_soft(a, b, r, 0.3, tau),
        q,
        k,
    )
    check_matches_reference(
        lambda a, b: soft_label_contrastive_loss(
            a,
            b,
            r,
            temperature=0.3,
            teacher_temperature=tau,
            candidate_mask=keep,
            reduction="none",
        ),
        lambda a, b: slow_soft(a, b, r, 0.3, tau, keep),
        q,
        k,
    )


def test_one_hot_teacher_equals_info_nce():
    q, k = pairs()
    idx = torch.tensor([3, 0, 6, 2, 2])
    one_hot = F.one_hot(idx, 7).double()
    for red in ("none", "sum", "mean"):
        torch.testing.assert_close(
            soft_label_contrastive_loss(q, k, one_hot, temperature=0.1, reduction=red),
            info_nce_loss(q, k, idx, temperature=0.1, reduction=red),
        )
    # scaled one-hot relevance scores give the same targets
    torch.testing.assert_close(
        soft_label_contrastive_loss(q, k, 4.0 * one_hot, temperature=0.1),
        info_nce_loss(q, k, idx, temperature=0.1),
    )


def test_uniform_weights_on_positives_equal_multi_positive_info_nce():
    q, k = pairs(seed=1)
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(2)) < 0.4
    mask[torch.arange(5), torch.arange(5)] = True
    mask[4] = False  # a query without positive: 0, out of the mean, in both
    for red in ("none", "sum", "mean"):
        torch.testing.assert_close(
            soft_label_contrastive_loss(q, k, mask.double(), temperature=0.2, reduction=red),
            info_nce_loss(q, k, positive_mask=mask, temperature=0.2, reduction=red),
        )


def test_equals_soft_target_cross_entropy_and_kl_plus_entropy():
    q, k = pairs(seed=4)
    r = teacher(seed=4)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.25
    target = r / r.sum(dim=1, keepdim=True)
    out = soft_label_contrastive_loss(q, k, r, temperature=0.25, reduction="none")
    torch.testing.assert_close(out, F.cross_entropy(logits, target, reduction="none"))
    kl = F.kl_div(torch.log_softmax(logits, 1), target, reduction="none").sum(1)
    entropy = -(target * target.log()).sum(1)
    torch.testing.assert_close(out, kl + entropy)
    assert (kl >= 0).all()


def test_teacher_temperature_forms():
    q, k = pairs(seed=5)
    r = 3 * torch.randn(5, 7, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    # softmax targets equal normalised weights exp(r / tau)
    torch.testing.assert_close(
        soft_label_contrastive_loss(q, k, r, temperature=0.2, teacher_temperature=0.7),
        soft_label_contrastive_loss(q, k, torch.exp(r / 0.7), temperature=0.2),
    )
    # a very cold teacher is one-hot on its top key: InfoNCE on the argmax
    torch.testing.assert_close(
        soft_label_contrastive_loss(q, k, r, temperature=0.2, teacher_temperature=1e-4),
        info_nce_loss(q, k, r.argmax(dim=1), temperature=0.2),
    )
    # invariant to a per-row shift of the teacher scores in the softmax form
    torch.testing.assert_close(
        soft_label_contrastive_loss(q, k, r, temperature=0.2, teacher_temperature=0.7),
        soft_label_contrastive_loss(
            q,
            k,
            r + torch.arange(5.0, dtype=r.dtype)[:, None],
            temperature=0.2,
            teacher_temperature=0.7,
        ),
    )


def test_no_gradient_into_teacher_and_student_matching_teacher_is_stationary():
    q, k = pairs(seed=7)
    r = teacher(seed=7).requires_grad_(True)
    out = soft_label_contrastive_loss(q, k, r)
    assert not out.requires_grad
    # the gradient wrt the logits is p - q: zero when the teacher's target is the student's own
    # distribution, so the loss is stationary in the embeddings
    p = torch.softmax(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.5, dim=1)
    qg, kg = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    soft_label_contrastive_loss(qg, kg, p, temperature=0.5, reduction="sum").backward()
    torch.testing.assert_close(qg.grad, torch.zeros_like(q), atol=1e-12, rtol=0)
    torch.testing.assert_close(kg.grad, torch.zeros_like(k), atol=1e-12, rtol=0)


def test_query_without_target_drops_out():
    q, k = pairs()
    r = teacher()
    r[2] = 0.0
    keep = torch.ones(5, 7, dtype=torch.bool)
    keep[3] = False  # no candidate at all
    qg = q.clone().requires_grad_(True)
    none = soft_label_contrastive_loss(qg, k, r, candidate_mask=keep, reduction="none")
    assert none[2] == 0 and none[3] == 0 and torch.isfinite(none).all()
    sel = torch.tensor([True, True, False, False, True])
    torch.testing.assert_close(
        soft_label_contrastive_loss(q, k, r, candidate_mask=keep), none[sel].mean()
    )
    none.sum().backward()
    assert (qg.grad[2] == 0).all() and (qg.grad[3] == 0).all()
    empty = soft_label_contrastive_loss(q, k, torch.zeros(5, 7, dtype=torch.float64))
    assert empty == 0
    # the softmax form: a query with no candidate has no target either
    out = soft_label_contrastive_loss(
        q, k, r, teacher_temperature=1.0, candidate_mask=keep, reduction="none"
    )
    assert out[3] == 0 and torch.isfinite(out).all()


def test_with_adaptive_margin_filter():
    q, k = pairs(6, 9, 5, seed=8)
    r = teacher(6, 9, seed=8)
    s = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T
    keep = adaptive_margin_filter(s, margin=0.5, relative=False)
    assert (~keep).any()
    check_matches_reference(
        lambda a, b: soft_label_contrastive_loss(
            a, b, r, temperature=0.3, candidate_mask=keep, reduction="none"
        ),
        lambda a, b: slow_soft(a, b, r, 0.3, None, keep),
        q,
        k,
    )


def test_gradcheck():
    q, k = pairs(4, 5, 3)
    r = teacher(4, 5)
    check_gradcheck(
        lambda a, b, **kw: soft_label_contrastive_loss(a, b, r, temperature=0.5, **kw), q, k
    )
    check_gradcheck(
        lambda a, b, **kw: soft_label_contrastive_loss(
            q, a, r, temperature=0.5, teacher_temperature=0.3, **kw
        ),
        k,
        None,
    )


def test_reductions():
    q, k = pairs()
    r = teacher()
    check_reductions(lambda a, b, **kw: soft_label_contrastive_loss(a, b, r, **kw), q, k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    q, k = pairs(8, 10, 16, dtype=torch.float32, seed=1)
    r = teacher(8, 10, seed=1, dtype=dtype)
    q, k = (10 * q).to(dtype).requires_grad_(True), (10 * k).to(dtype)
    out = soft_label_contrastive_loss(q, k, r, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = soft_label_contrastive_loss(q.detach().float(), k.float(), r.float(), reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_float64_kept():
    q, k = pairs()
    assert soft_label_contrastive_loss(q, k, teacher()).dtype == torch.float64


def test_bad_inputs():
    q, k = pairs(4, 6, 3, dtype=torch.float32)
    r = teacher(4, 6, dtype=torch.float32)
    cases = [
        ((q[0], k, r), {}, "query"),
        ((q.long(), k, r), {}, "query"),
        ((q, k[:, :2], r), {}, "keys"),
        ((torch.full_like(q, float("nan")), k, r), {}, "query"),
        ((q, k.clone().fill_(float("inf")), r), {}, "keys"),
        ((q[:0], k, r), {}, "query"),
        ((q, k[:0], r), {}, "keys"),
        ((q, k, r[:, :5]), {}, "teacher_scores"),
        ((q, k, r[:3]), {}, "teacher_scores"),
        ((q, k, (r > 0.5).long()), {}, "teacher_scores"),
        ((q, k, r.numpy()), {}, "teacher_scores"),
        ((q, k, torch.full_like(r, float("nan"))), {}, "teacher_scores"),
        ((q, k, r - 0.5), {}, "teacher_scores"),
        ((q, k, r), {"candidate_mask": torch.ones(4, 5, dtype=torch.bool)}, "candidate_mask"),
        ((q, k, r), {"temperature": 0.0}, "temperature"),
        ((q, k, r), {"teacher_temperature": 0.0}, "teacher_temperature"),
        ((q, k, r), {"teacher_temperature": float("nan")}, "teacher_temperature"),
        ((q, k, r), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            soft_label_contrastive_loss(*args, **kw)
    # negative scores are fine once a teacher temperature turns them into a softmax
    assert torch.isfinite(soft_label_contrastive_loss(q, k, r - 0.5, teacher_temperature=1.0))
    for kw, name in (
        ({"temperature": -1.0}, "temperature"),
        ({"teacher_temperature": -1.0}, "teacher_temperature"),
        ({"reduction": "avg"}, "reduction"),
    ):
        with pytest.raises(ValueError, match=name):
            SoftLabelContrastiveLoss(**kw)


def test_module_and_registry():
    q, k = pairs()
    r = teacher()
    keep = torch.rand(5, 7, generator=torch.Generator().manual_seed(9)) < 0.8
    mod = SoftLabelContrastiveLoss(0.2, teacher_temperature=0.5, reduction="sum")
    torch.testing.assert_close(
        mod(q, k, r, candidate_mask=keep),
        soft_label_contrastive_loss(
            q,
            k,
            r,
            temperature=0.2,
            teacher_temperature=0.5,
            candidate_mask=keep,
            reduction="sum",
        ),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "soft_label_contrastive"]
    assert entry.function is soft_label_contrastive_loss and entry.papers == (24,)
    built = entry.build()
    assert (built.temperature, built.teacher_temperature) == (0.02, None)
    torch.testing.assert_close(built(q, k, r), soft_label_contrastive_loss(q, k, r))
