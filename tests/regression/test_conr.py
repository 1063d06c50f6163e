"""ConR (paper 53): slow reference, exact properties, gradcheck, half precision, bad inputs,
reductions, registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit import get
from losskit.embedding import supcon_loss
from losskit.regression import ConRLoss, conr_loss
from tests.contract import check_matches_reference

KW = {"label_similarity_threshold": 1.0, "prediction_threshold": 1.5, "temperature": 0.3}


def batch(b=5, d=4, *, dtype=torch.float64, seed=0):
    """Two views of ``b`` samples: features [2b, d], predictions and integer-valued targets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * b, d, generator=g).to(dtype)
    y = torch.randint(0, 6, (b,), generator=g).to(dtype).repeat(2)
    yhat = (y + 1.5 * torch.randn(2 * b, generator=g).to(dtype)).to(dtype)
    return x, yhat, y


def slow_conr(x, yhat, y, *, omega, delta, t, beta, plus_one=False, require_negative=True):
    """Loop reference of the paper's per-anchor ConR."""
    n = x.shape[0]
    z = [x[i] / x[i].norm() for i in range(n)]
    out = []
    for j in range(n):
        others = [k for k in range(n) if k != j]
        pos = [k for k in others if abs(float(y[j] - y[k])) <= omega]
        neg = [
            k
            for k in others
            if abs(float(y[j] - y[k])) > omega and abs(float(yhat[j] - yhat[k])) <= delta
        ]
        if not pos or (require_negative and not neg):
            out.append(x.sum() * 0.0)
            continue
        s = {k: torch.dot(z[j], z[k]) / t for k in others}
        den = sum(torch.exp(s[p]) for p in pos)
        for k in neg:
            den = den + math.exp(beta * abs(float(y[j] - y[k]))) * torch.exp(s[k])
        if plus_one:
            den = den + (n - len(pos))
        out.append(sum(torch.log(den) - s[p] for p in pos) / len(pos))
    return torch.stack(out)


@pytest.mark.parametrize("plus_one", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_matches_slow_reference(plus_one, beta):
    x, yhat, y = batch()
    kw = dict(KW, beta=beta, reference_plus_one=plus_one)

    def fast(f):
        return conr_loss(f, yhat, y, reduction="none", **kw)

    def ref(f):
        return slow_conr(f, yhat, y, omega=1.0, delta=1.5, t=0.3, beta=beta, plus_one=plus_one)

    check_matches_reference(fast, ref, x)
    assert (fast(x) > 0).any() and (fast(x) == 0).any()  # both kinds of anchor occur


def test_no_negatives_gives_zero_and_supcon_pull_term():
    x, _, y = batch()
    far = torch.arange(x.shape[0], dtype=x.dtype) * 100.0  # no confusable predictions
    kw = dict(KW, label_similarity_threshold=0.5)  # integer targets: positives = equal labels
    assert conr_loss(x, far, y, **kw, reduction="sum").item() == 0.0
    # keeping pull-only anchors gives SupCon with positives as the only candidates
    pull = conr_loss(x, far, y, **kw, require_negative=False, reduction="none")
    same = y[:, None] == y[None, :]
    eye = torch.eye(x.shape[0], dtype=torch.bool)
    z = F.normalize(x, dim=1)
    for j in range(x.shape[0]):
        cand = same[j] & ~eye[j]
        expected = supcon_loss(
            z[j : j + 1],
            y[j : j + 1].long(),
            ref_embeddings=z[cand],
            ref_labels=y[cand].long(),
            temperature=0.3,
            reduction="none",
        )[0]
        torch.testing.assert_close(pull[j], expected)


def test_reference_plus_one_differs_by_count_terms():
    x, yhat, y = batch(seed=3)
    kw = dict(KW, beta=0.2, require_negative=False)
    base = conr_loss(x, yhat, y, reduction="none", **kw)
    plus = conr_loss(x, yhat, y, reduction="none", reference_plus_one=True, **kw)
    n = x.shape[0]
    z = F.normalize(x, dim=1)
    s = z @ z.T / 0.3
    dy = (y[:, None] - y[None, :]).abs()
    dp = (yhat[:, None] - yhat[None, :]).abs()
    eye = torch.eye(n, dtype=torch.bool)
    pos = (dy <= 1.0) & ~eye
    neg = (dy > 1.0) & (dp <= 1.5) & ~eye
    den = (s.exp() * pos).sum(1) + ((0.2 * dy).exp() * s.exp() * neg).sum(1)
    count = (n - pos.sum(1)).to(x.dtype)
    torch.testing.assert_close(plus - base, torch.log1p(count / den))
    # beta = 0 means eta = 1
    e0 = conr_loss(x, yhat, y, reduction="none", **dict(kw, beta=0.0))
    den0 = (s.exp() * pos).sum(1) + (s.exp() * neg).sum(1)
    expected = (den0.log()[:, None] - s).mul(pos).sum(1) / pos.sum(1)
    torch.testing.assert_close(e0, expected)


def test_gradcheck_features():
    x, yhat, y = batch(b=4, d=3, seed=1)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: conr_loss(f, yhat, y, beta=0.2, reduction="sum", **KW), (xg,)
    )
    assert torch.autograd.gradcheck(
        lambda f: conr_loss(f, yhat, y, reference_plus_one=True, reduction="mean", **KW), (xg,)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x, yhat, y = batch(seed=2)
    x = x * 1e3  # large-norm features: normalisation must happen in float32
    ref = conr_loss(x.float(), yhat.float(), y.float(), **KW)
    out = conr_loss(x.to(dtype), yhat.to(dtype), y.to(dtype), **KW)
    assert out.dtype == dtype and torch.isfinite(out)
    torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)
    xh = x.to(dtype).requires_grad_(True)
    conr_loss(xh, yhat, y, **KW).backward()
    assert xh.grad.dtype == dtype and torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, yhat, y = batch()
    with pytest.raises(ValueError, match="features"):
        conr_loss(x[0], yhat, y)
    with pytest.raises(ValueError, match="features"):
        conr_loss(x.long(), yhat, y)
    with pytest.raises(ValueError, match="predictions"):
        conr_loss(x, yhat[:-1], y)
    with pytest.raises(ValueError, match="targets"):
        conr_loss(x, yhat, y[:, None].repeat(1, 2))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="features"):
        conr_loss(bad, yhat, y)
    bad_y = y.clone()
    bad_y[1] = float("inf")
    with pytest.raises(ValueError, match="targets"):
        conr_loss(x, yhat, bad_y)
    bad_p = yhat.clone()
    bad_p[1] = float("nan")
    with pytest.raises(ValueError, match="predictions"):
        conr_loss(x, bad_p, y)
    for name, value in [
        ("label_similarity_threshold", -1.0),
        ("prediction_threshold", -0.1),
        ("prediction_threshold", float("nan")),
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("beta", -0.5),
    ]:
        with pytest.raises(ValueError, match=name):
            conr_loss(x, yhat, y, **{name: value})
        with pytest.raises(ValueError, match=name):
            ConRLoss(**{name: value})
    with pytest.raises(ValueError, match="reduction"):
        conr_loss(x, yhat, y, reduction="avg")


def test_reductions_and_module():
    x, yhat, y = batch(seed=4)
    y = y.clone()
    y[0] = 100.0  # sample 0, view 1: no positive
    y[5] = 50.0  # sample 0, view 2: no positive
    none = conr_loss(x, yhat, y, **KW, reduction="none")
    assert none.shape == (x.shape[0],)
    no_pos = ((y[:, None] - y[None, :]).abs() <= 1.0).sum(1) == 1  # only itself
    assert no_pos.any()
    assert (none[no_pos] == 0).all()
    torch.testing.assert_close(conr_loss(x, yhat, y, **KW, reduction="sum"), none.sum())
    torch.testing.assert_close(
        conr_loss(x, yhat, y, **KW, reduction="mean"), none.sum() / (~no_pos).sum()
    )
    mod = ConRLoss(**KW, reduction="none")
    torch.testing.assert_close(mod(x, yhat[:, None], y[:, None]), none)


def test_registry():
    e = get("conr")
    assert e.family == "regression" and e.papers == (53,) and e.kind == "loss"
    assert dict(e.defaults) == {
        "label_similarity_threshold": 1.0,
        "prediction_threshold": 1.0,
        "temperature": 0.2,
        "beta": 0.01,
    }
    assert isinstance(e.build(), ConRLoss)
