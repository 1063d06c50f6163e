"""TCM loss: slow loop reference (batch value and per-anchor shares), pytorch-metric-learning's
unit-test value, zero region, separability of the two parts, gradcheck, half precision, bad
inputs, reductions, module and registry."""

from __future__ import annotations

import math

import pytest
import torch

from losskit import catalog
from losskit.embedding.tcm import TCMLoss, tcm_loss
from tests.contract import check_gradcheck, check_matches_reference


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.arange(n) % classes
    return x, y


def _pairs(x, y, ref, ref_y):
    """Cosine similarities of every (anchor with a positive, candidate) pair, with kind."""
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    out = []
    for i in range(x.shape[0]):
        cand = [a for a in range(ref.shape[0]) if not (self_excluded and a == i)]
        if not any(ref_y[a] == y[i] for a in cand):
            continue
        for a in cand:
            s = torch.dot(x[i], ref[a]) / (x[i].norm() * ref[a].norm())
            out.append((i, bool(ref_y[a] == y[i]), s))
    return out


def slow_tcm(x, y, lp=1.0, lm=1.0, mp=0.9, mm=0.5, ref=None, ref_y=None, per_anchor=False):
    """Loop reference of the paper's batch formula; ``per_anchor`` gives the A-scaled shares."""
    pairs = _pairs(x, y, ref, ref_y)
    hp = [(i, mp - s) for i, p, s in pairs if p and s.item() <= mp]
    hn = [(i, s - mm) for i, p, s in pairs if not p and s.item() >= mm]
    anchors = sorted({i for i, _, _ in pairs})
    zero = x.sum() * 0
    if not per_anchor:
        pos = sum((v for _, v in hp), zero) / max(len(hp), 1)
        neg = sum((v for _, v in hn), zero) / max(len(hn), 1)
        return lp * pos + lm * neg
    a = len(anchors)
    out = []
    for i in range(x.shape[0]):
        pos = sum((v for j, v in hp if j == i), zero) / max(len(hp), 1)
        neg = sum((v for j, v in hn if j == i), zero) / max(len(hn), 1)
        out.append(a * (lp * pos + lm * neg))
    return torch.stack(out)


def test_matches_slow_reference():
    x, y = batch()
    check_matches_reference(lambda a: tcm_loss(a, y), lambda a: slow_tcm(a, y), x)
    check_matches_reference(
        lambda a: tcm_loss(a, y, reduction="none"), lambda a: slow_tcm(a, y, per_anchor=True), x
    )
    kw = {"lambda_plus": 0.7, "lambda_minus": 2.0, "margin_plus": 0.3, "margin_minus": -0.2}
    check_matches_reference(
        lambda a: tcm_loss(a, y, **kw),
        lambda a: slow_tcm(a, y, lp=0.7, lm=2.0, mp=0.3, mm=-0.2),
        x,
    )
    r, ry = batch(6, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: tcm_loss(a, y, ref_embeddings=b, ref_labels=ry, margin_minus=0.0),
        lambda a, b: slow_tcm(a, y, mm=0.0, ref=b, ref_y=ry),
        x,
        r,
    )
    check_matches_reference(
        lambda a, b: tcm_loss(a, y, ref_embeddings=b, ref_labels=ry, reduction="none"),
        lambda a, b: slow_tcm(a, y, ref=b, ref_y=ry, per_anchor=True),
        x,
        r,
    )


def _pml_contrastive(x, y, pos_margin=0.9, neg_margin=0.4):
    """pytorch-metric-learning's ContrastiveLoss with CosineSimilarity (AvgNonZeroReducer)."""
    s = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    same = y[:, None] == y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool)
    lp = torch.relu(pos_margin - s[same & off])
    ln = torch.relu(s[~same] - neg_margin)
    return lp[lp > 0].mean() + ln[ln > 0].mean()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_pytorch_metric_learning_unit_test_value(dtype):
    # tests/losses/test_tcm_loss.py of KevinMusgrave/pytorch-metric-learning: the total with
    # ContrastiveLoss(pos_margin=0.9, neg_margin=0.4) is 1.0045; the TCM part is
    # (0.9 - 0.7071) + ((0.7071 - 0.5) + (0.9429 - 0.5)) / 2 = 0.518.
    embs = torch.tensor([[0.00, 1.00], [0.43, 0.90], [1.00, 0.00], [0.50, 0.50]], dtype=dtype)
    labels = torch.tensor([0, 0, 1, 1])
    out = tcm_loss(embs, labels)
    assert out.dtype == dtype
    cos13 = (0.43 * 0.5 + 0.9 * 0.5) / (math.hypot(0.43, 0.9) * math.sqrt(0.5))
    exact = (0.9 - math.sqrt(0.5)) + ((math.sqrt(0.5) - 0.5) + (cos13 - 0.5)) / 2
    rtol = 1e-2 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(
        out.double(), torch.tensor(exact, dtype=torch.float64), rtol=rtol, atol=1e-4
    )
    assert abs(exact - 0.518) < 5e-4
    total = _pml_contrastive(embs.double(), labels) + out.double()
    torch.testing.assert_close(
        total, torch.tensor(1.0045, dtype=torch.float64), rtol=rtol, atol=1e-4
    )


def test_zero_when_no_pair_violates():
    # two tight, well-separated clusters: pos cos > 0.9, neg cos < 0.5
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    xg = x.clone().requires_grad_(True)
    out = tcm_loss(xg, y, reduction="none")
    assert torch.equal(out, torch.zeros(4, dtype=torch.float64))
    out.sum().backward()
    assert torch.equal(xg.grad, torch.zeros_like(x))
    # moving one margin past the similarities switches exactly that part on
    assert tcm_loss(x, y, margin_plus=0.999) > 0
    assert tcm_loss(x, y, margin_minus=-0.5) > 0


def test_positive_and_negative_parts_are_separable():
    x, y = batch(10, 5, seed=2)

    def f(lp, lm):
        return tcm_loss(x, y, lambda_plus=lp, lambda_minus=lm, margin_minus=0.0, reduction="none")

    pos, neg = f(1.0, 0.0), f(0.0, 1.0)
    assert pos.sum() > 0 and neg.sum() > 0
    torch.testing.assert_close(f(1.0, 1.0), pos + neg)
    torch.testing.assert_close(f(0.3, 2.5), 0.3 * pos + 2.5 * neg)
    # the positive part ignores the negative margin and vice versa
    torch.testing.assert_close(
        tcm_loss(x, y, lambda_minus=0.0, margin_minus=0.3, reduction="none"), pos
    )


def test_anchor_without_positive_drops_out():
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 2, 2])
    xg = x.clone().requires_grad_(True)
    none = tcm_loss(xg, y, margin_minus=-1.0, reduction="none")
    assert none[2] == 0
    keep = torch.arange(5) != 2
    torch.testing.assert_close(tcm_loss(x, y, margin_minus=-1.0), none[keep].mean())
    none.sum().backward()
    assert torch.isfinite(xg.grad).all() and torch.all(xg.grad[2] != 0)  # as a candidate
    out = tcm_loss(xg[:1], y[:1])
    assert out == 0 and torch.isfinite(out)
    assert tcm_loss(x, torch.arange(5), margin_minus=-1.0) == 0


def test_gradcheck():
    x, y = batch(6, 3)
    check_gradcheck(lambda a, b, **kw: tcm_loss(a, b, margin_minus=0.0, **kw), x, y)
    r, ry = batch(4, 3, seed=5)
    check_gradcheck(lambda a, b, **kw: tcm_loss(b, y, ref_embeddings=a, ref_labels=ry, **kw), r, x)


def test_reductions():
    x, y = batch()
    none = tcm_loss(x, y, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(tcm_loss(x, y, reduction="sum"), none.sum())
    torch.testing.assert_close(tcm_loss(x, y), none.mean())
    torch.testing.assert_close(tcm_loss(x, y), slow_tcm(x, y))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=4)
    xh = (10 * x).to(dtype).requires_grad_(True)
    out = tcm_loss(xh, y, margin_minus=0.0, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = tcm_loss(xh.detach().float(), y, margin_minus=0.0, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((x[0], y), {}, "embeddings"),
        ((x, y[:3]), {}, "labels"),
        ((x, y.float()), {}, "labels"),
        ((torch.full_like(x, float("nan")), y), {}, "embeddings"),
        ((x[:0], y[:0]), {}, "embeddings"),
        ((x, y), {"ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"ref_embeddings": r, "ref_labels": ry[:4]}, "ref_labels"),
        ((x, y), {"ref_embeddings": r[:, :2], "ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"lambda_plus": -1.0}, "lambda_plus"),
        ((x, y), {"lambda_minus": float("nan")}, "lambda_minus"),
        ((x, y), {"margin_plus": float("nan")}, "margin_plus"),
        ((x, y), {"margin_minus": "a"}, "margin_minus"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            tcm_loss(*args, **kw)
    with pytest.raises(ValueError, match="lambda_minus"):
        TCMLoss(lambda_minus=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        TCMLoss(reduction="avg")


def test_module_and_registry():
    x, y = batch()
    torch.testing.assert_close(
        TCMLoss(0.5, 2.0, 0.8, 0.1, reduction="none")(x, y),
        tcm_loss(
            x,
            y,
            lambda_plus=0.5,
            lambda_minus=2.0,
            margin_plus=0.8,
            margin_minus=0.1,
            reduction="none",
        ),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "tcm"]
    assert entry.module is TCMLoss and entry.function is tcm_loss and entry.papers == (50,)
    m = entry.build()
    assert (m.lambda_plus, m.lambda_minus, m.margin_plus, m.margin_minus) == (1.0, 1.0, 0.9, 0.5)
    assert m.normalize and m.reduction == "mean"
