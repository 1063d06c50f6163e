"""LDAM and DRW (paper 14, multiclass LDAM-DRW form) against slow references and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.classification.ldam import LDAMLoss, drw_weights, ldam_loss, ldam_margins
from tests.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_weight_and_ignore,
    random_batch,
)

COUNTS = [500, 120, 40, 9, 2]


def _ldam_ref(x, y, counts, max_margin, scale, weight=None):
    """m_j = C / n_j^(1/4) with C set so that max_j m_j = max_margin; loop over samples."""
    c = max_margin / max(n**-0.25 for n in counts)
    out = []
    for i in range(x.shape[0]):
        z = [
            x[i, k] - (c / counts[k] ** 0.25 if k == int(y[i]) else 0.0) for k in range(len(counts))
        ]
        z = scale * torch.stack(z)
        w = 1.0 if weight is None else weight[y[i]]
        out.append(-w * (z[y[i]] - torch.log(torch.exp(z).sum())))
    return torch.stack(out)


def _value_and_grad(fn, x):
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg)
    out.sum().backward()
    return out.detach(), xg.grad


@pytest.mark.parametrize(("max_margin", "scale"), [(0.5, 30.0), (0.2, 1.0), (2.0, 5.0)])
def test_ldam_matches_reference(max_margin, scale):
    x, y, _ = random_batch(8, 5, seed=1, scale=0.5)
    w = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    for weight in (None, w):
        ours = _value_and_grad(
            lambda z, wt=weight: ldam_loss(
                z,
                y,
                class_counts=COUNTS,
                max_margin=max_margin,
                scale=scale,
                weight=wt,
                reduction="none",
            ),
            x,
        )
        ref = _value_and_grad(
            lambda z, wt=weight: _ldam_ref(z, y, COUNTS, max_margin, scale, wt), x
        )
        torch.testing.assert_close(ours, ref)


def test_zero_margin_is_scaled_cross_entropy():
    x, y, _ = random_batch(9, 5, seed=2)
    y[3] = -100
    w = torch.rand(5, dtype=torch.float64)
    for reduction in ("none", "mean", "sum"):
        torch.testing.assert_close(
            ldam_loss(
                x, y, class_counts=COUNTS, max_margin=0.0, scale=7.0, weight=w, reduction=reduction
            ),
            F.cross_entropy(7.0 * x, y, weight=w, reduction=reduction),
        )


def test_margins_decrease_with_count_and_peak_at_max_margin():
    m = ldam_margins(COUNTS, max_margin=0.5)
    assert (m[1:] > m[:-1]).all()  # COUNTS decrease, margins grow
    torch.testing.assert_close(m.max(), torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(
        m * torch.tensor(COUNTS, dtype=torch.float64) ** 0.25,
        torch.full((5,), 0.5 * 2**0.25, dtype=torch.float64),
    )
    torch.testing.assert_close(
        ldam_margins([7, 7, 7], max_margin=0.3), torch.full((3,), 0.3, dtype=torch.float64)
    )


def test_only_the_target_logit_is_shifted():
    x, y, _ = random_batch(6, 5, seed=3)
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    # classes 2..4 never are targets: changing their counts (not the minimum) changes nothing
    other = [500, 120, 90, 3, 2]
    torch.testing.assert_close(
        ldam_loss(x, y, class_counts=COUNTS, reduction="none"),
        ldam_loss(x, y, class_counts=other, reduction="none"),
    )
    # and the margin can only raise the loss above cross-entropy on scale * z
    full = ldam_loss(x, y, class_counts=COUNTS, reduction="none")
    assert (full > F.cross_entropy(30.0 * x, y, reduction="none")).all()
    # the gradient of a non-target logit is scale * softmax of the shifted logits
    xg = x.clone().requires_grad_(True)
    ldam_loss(xg, y, class_counts=COUNTS, reduction="sum").backward()
    m = ldam_margins(COUNTS)
    shifted = x - F.one_hot(y, 5) * m[y][:, None]
    expected = 30.0 * (torch.softmax(30.0 * shifted, dim=1) - F.one_hot(y, 5))
    torch.testing.assert_close(xg.grad, expected)


def test_ldam_contract():
    x, y, p = random_batch(scale=0.5)
    kw = {"class_counts": COUNTS}
    check_reductions(ldam_loss, x, y, **kw)
    check_weight_and_ignore(ldam_loss, x, y, **kw)
    check_gradcheck(ldam_loss, x, y, **kw)
    # LDAM is not scale-free: the loss grows like scale * (logit gap). With scale=1 it is as
    # scale-free as cross-entropy; at the paper's scale=30 the reference feeds cosine logits
    # in [-1, 1], so magnitude 100 (already 100x that) keeps the fp16 result below its max.
    check_half_precision(ldam_loss, y, scale=1.0, **kw)
    check_half_precision(ldam_loss, y, magnitude=100.0, **kw)
    check_bad_inputs(ldam_loss, soft=False, **kw)
    with pytest.raises(ValueError, match="target"):
        ldam_loss(x, p, **kw)


def test_ldam_bad_hyperparameters():
    x, y, _ = random_batch()
    for counts in (
        [3, 0, 2, 1, 1],
        [3, -1, 2, 1, 1],
        [1.0, math.nan, 1, 1, 1],
        [[1, 2]],
        [],
        "abc",
    ):
        with pytest.raises(ValueError, match="class_counts"):
            ldam_loss(x, y, class_counts=counts)
        with pytest.raises(ValueError, match="class_counts"):
            LDAMLoss(counts)
    with pytest.raises(ValueError, match="class_counts"):
        ldam_loss(x, y, class_counts=[1, 2, 3])
    for name, value in (
        ("scale", 0.0),
        ("scale", -1.0),
        ("max_margin", -0.1),
        ("max_margin", math.inf),
    ):
        with pytest.raises(ValueError, match=name):
            ldam_loss(x, y, class_counts=COUNTS, **{name: value})
        with pytest.raises(ValueError, match=name):
            LDAMLoss(COUNTS, **{name: value})


def test_ldam_module_buffers_and_drw():
    m = LDAMLoss(torch.tensor(COUNTS), max_margin=0.4, scale=10.0)
    assert set(m.state_dict()) == {"margins", "class_counts"}
    x, y, _ = random_batch(dtype=torch.float32)
    torch.testing.assert_close(
        m(x, y), ldam_loss(x, y, class_counts=COUNTS, max_margin=0.4, scale=10.0)
    )
    m.weight = drw_weights(COUNTS, 170)
    assert "weight" in m.state_dict()
    torch.testing.assert_close(
        m(x, y),
        ldam_loss(
            x, y, class_counts=COUNTS, max_margin=0.4, scale=10.0, weight=drw_weights(COUNTS, 170)
        ),
    )
    assert m.to(torch.float64).margins.dtype == torch.float64
    entry = get("ldam")
    assert entry.papers == (14,) and dict(entry.defaults) == {"max_margin": 0.5, "scale": 30.0}
    assert isinstance(entry.build(class_counts=COUNTS), LDAMLoss)
    drw = get("drw")
    assert drw.kind == "procedure" and drw.defaults["start_epoch"] == 160
    assert drw.defaults["beta"] == 0.9999


def _drw_ref(counts, epoch):
    """kaidic/LDAM-DRW cifar_train.py: beta = [0, 0.9999][epoch // 160]."""
    beta = [0.0, 0.9999][epoch // 160]
    w = [(1 - beta) / (1 - beta**n) for n in counts]
    return torch.tensor([v / sum(w) * len(counts) for v in w], dtype=torch.float64)


def test_drw_schedule():
    for epoch in (0, 100, 159, 160, 199, 319):
        w = drw_weights(COUNTS, epoch, dtype=torch.float64)
        torch.testing.assert_close(w, _drw_ref(COUNTS, epoch))
        torch.testing.assert_close(w.sum(), torch.tensor(5.0, dtype=torch.float64))
    assert (drw_weights(COUNTS, 159) == 1).all() and drw_weights(COUNTS, 0).dtype == torch.float32
    late = drw_weights(COUNTS, 400)  # stays on after the reference's last epoch
    assert (late[1:] > late[:-1]).all()  # rarer classes weigh more
    torch.testing.assert_close(drw_weights(COUNTS, 5, start_epoch=5), drw_weights(COUNTS, 200))
    torch.testing.assert_close(drw_weights(COUNTS, 300, beta=0.0), torch.ones(5))
    for name, kw in (
        ("epoch", {"epoch": -1}),
        ("epoch", {"epoch": 1.5}),
        ("start_epoch", {"epoch": 3, "start_epoch": -2}),
        ("beta", {"epoch": 3, "beta": 1.0}),
        ("beta", {"epoch": 3, "beta": -0.1}),
    ):
        with pytest.raises(ValueError, match=name):
            drw_weights(COUNTS, **kw)
    with pytest.raises(ValueError, match="class_counts"):
        drw_weights([1, 0, 3], 200)


def test_ldam_module_drw_schedule_sets_weights_by_epoch():
    counts = torch.tensor([400, 100, 20, 5])
    m = LDAMLoss(counts, drw_start=3, drw_beta=0.999)
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])
    m.set_epoch(2)
    torch.testing.assert_close(m(x, y), ldam_loss(x, y, class_counts=counts))
    m.set_epoch(3)
    w = drw_weights(counts, 3, start_epoch=3, beta=0.999)
    torch.testing.assert_close(m.weight, w.to(m.weight.dtype))
    assert m.weight[3] > m.weight[0]  # the rare class is up-weighted
    torch.testing.assert_close(
        m(x, y), ldam_loss(x, y, class_counts=counts, weight=w.to(torch.float64))
    )
    assert "class_counts" in m.state_dict()
    with pytest.raises(ValueError, match="weight"):
        LDAMLoss(counts, drw_start=3, weight=torch.ones(4))
    with pytest.raises(ValueError, match="start_epoch"):
        LDAMLoss(counts, drw_start=-1)
