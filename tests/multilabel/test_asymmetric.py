import pytest
import torch

from losskit.multilabel.asymmetric import AsymmetricLoss, asymmetric_loss
from losskit.multilabel.bce import binary_cross_entropy
from losskit.multilabel.focal import focal_binary_cross_entropy
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
    slow_known_mean,
)


def slow_asl(x, y, mask, gamma_pos, gamma_neg, clip, detach=False):
    def term(i, j):
        p = 1 / (1 + torch.exp(-x[i, j]))
        if y[i, j] == 1:
            w = (1 - p) ** gamma_pos
            return -(w.detach() if detach else w) * torch.log(p)
        pm = torch.clamp_min(p - clip, 0.0)
        w = pm**gamma_neg
        return -(w.detach() if detach else w) * torch.log(1 - pm)

    return slow_known_mean(term, mask)


@pytest.mark.parametrize(
    ("gp", "gn", "clip", "detach"),
    [
        (0.0, 4.0, 0.05, False),
        (1.0, 4.0, 0.05, True),
        (0.5, 2.5, 0.2, False),
        (2.0, 1.0, 0.0, False),
    ],
)
def test_matches_slow_reference(gp, gn, clip, detach):
    x, y, mask = random_multilabel(6, 5)
    kw = {"gamma_pos": gp, "gamma_neg": gn, "clip": clip, "detach_focal_weight": detach}
    check_matches_reference(
        lambda z: asymmetric_loss(z, y, mask=mask, reduction="none", **kw),
        lambda z: slow_asl(z, y, mask, gp, gn, clip, detach),
        x,
    )


def test_official_sum_is_n_times_l_times_mean():
    # the released code returns the sum over all entries of the same per-entry terms
    x, y, _ = random_multilabel(7, 4)
    p = torch.sigmoid(x)
    pm = (p - 0.05).clamp_min(0)
    entries = y * (1 - p) ** 0 * torch.log(p) + (1 - y) * pm**4 * torch.log(1 - pm)
    torch.testing.assert_close(-entries.sum(), 7 * 4 * asymmetric_loss(x, y))


def test_reduces_to_bce_and_to_focal():
    x, y, mask = random_multilabel(8, 6)
    torch.testing.assert_close(
        asymmetric_loss(x, y, mask=mask, gamma_pos=0.0, gamma_neg=0.0, clip=0.0),
        binary_cross_entropy(x, y, mask=mask),
    )
    torch.testing.assert_close(
        asymmetric_loss(x, y, mask=mask, gamma_pos=2.0, gamma_neg=2.0, clip=0.0),
        focal_binary_cross_entropy(x, y, mask=mask, gamma=2.0),
    )


def test_probability_shift_discards_easy_negatives():
    clip = 0.05
    logit_at_clip = torch.logit(torch.tensor(clip, dtype=torch.float64))
    x = torch.tensor([[logit_at_clip - 0.1, logit_at_clip - 3.0, 0.5]], dtype=torch.float64)
    y = torch.zeros_like(x)
    xg = x.clone().requires_grad_(True)
    out = asymmetric_loss(xg, y, clip=clip, gamma_neg=0.0, reduction="sum")
    out.backward()
    assert (xg.grad[0, :2] == 0).all() and xg.grad[0, 2] > 0
    p_m = torch.sigmoid(x[0, 2]) - clip
    torch.testing.assert_close(out, -torch.log(1 - p_m) / 3)


def test_extreme_logits_stay_finite():
    x = torch.tensor([[200.0, -200.0, 200.0, -200.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    for clip in (0.0, 0.05):
        out = asymmetric_loss(x, y, gamma_pos=0.5, gamma_neg=4.0, clip=clip, reduction="sum")
        (g,) = torch.autograd.grad(out, x)
        assert torch.isfinite(out) and torch.isfinite(g).all()
    # a confident "negative" that the shift keeps from dominating: weight (1 - clip)^4, log clip
    one = asymmetric_loss(x[:, :1].detach(), y[:, :1], clip=0.05)
    torch.testing.assert_close(one, -(0.95**4) * torch.log(torch.tensor(0.05, dtype=x.dtype)))


def test_detached_weight_keeps_the_value_and_changes_the_gradient():
    x, y, _ = random_multilabel(5, 4)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    a = asymmetric_loss(xa, y, gamma_pos=1.0)
    b = asymmetric_loss(xb, y, gamma_pos=1.0, detach_focal_weight=True)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    assert not torch.allclose(xa.grad, xb.grad)


def test_contract():
    x, y, mask = random_multilabel()
    check_reductions(asymmetric_loss, x, y)
    check_reductions(asymmetric_loss, x, y, mask=mask)
    check_gradcheck(asymmetric_loss, x, y, mask=mask)
    check_gradcheck(asymmetric_loss, x, y, gamma_pos=1.0, gamma_neg=2.0, clip=0.0)
    check_mask_zero_grad(asymmetric_loss, x, y, mask)
    # magnitude 30 saturates p: the shifted log(1 - p_m) must stay finite in half inputs
    check_half_precision(asymmetric_loss, y.float())
    check_half_precision(asymmetric_loss, y.float(), magnitude=3.0, gamma_pos=1.0)
    check_bad_inputs(asymmetric_loss)
    w = torch.linspace(1.0, 2.0, 5, dtype=x.dtype)
    module = AsymmetricLoss(weight=w, reduction="sum")
    torch.testing.assert_close(
        module(x, y, mask), asymmetric_loss(x, y, mask=mask, weight=w, reduction="sum")
    )


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"gamma_pos": -1.0}, "gamma_pos"),
        ({"gamma_neg": -0.5}, "gamma_neg"),
        ({"clip": 1.0}, "clip"),
        ({"clip": -0.1}, "clip"),
    ],
)
def test_bad_hyperparameters(kw, name):
    x, y, _ = random_multilabel()
    with pytest.raises(ValueError, match=name):
        asymmetric_loss(x, y, **kw)
    with pytest.raises(ValueError, match=name):
        AsymmetricLoss(**kw)
