import math

import pytest
import torch
import torch.nn.functional as F

from losskit.multilabel.cluster_discrimination import (
    ClusterDiscriminationHead,
    ClusterDiscriminationLoss,
    cluster_discrimination_loss,
)
from tests.contract import check_gradcheck, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
)

PLAIN = {"scale": 1.0, "margin": 0.0}  # Eq. 5 on the given scores


def slow_mlcd(c, y, mask, scale, margin):
    """Loop form of Eq. 5 with s_i = scale*cos(theta_i + margin) on positives, and ArcFace's
    c - margin*sin(margin) where theta_i + margin passes pi."""
    out = []
    for i in range(c.shape[0]):
        pos_sum, neg_sum = c.new_zeros(()), c.new_zeros(())
        for j in range(c.shape[1]):
            if not mask[i, j]:
                continue
            if y[i, j] == 1:
                theta = torch.acos(c[i, j])
                if theta + margin <= math.pi:
                    s = scale * torch.cos(theta + margin)
                else:
                    s = scale * (c[i, j] - margin * math.sin(margin))
                pos_sum = pos_sum + torch.exp(-s)
            else:
                neg_sum = neg_sum + torch.exp(scale * c[i, j])
        out.append(torch.log(1 + pos_sum) + torch.log(1 + neg_sum))
    return torch.stack(out)


def cosines(n=6, num_labels=5, seed=0):
    x, y, mask = random_multilabel(n, num_labels, seed=seed)
    return torch.tanh(x / 2), y, mask  # in (-1, 1), away from the ends


@pytest.mark.parametrize(("scale", "margin"), [(1.0, 0.0), (8.0, 0.3), (3.0, 0.5)])
def test_matches_slow_reference(scale, margin):
    c, y, mask = cosines()
    c = c.clamp(-0.95, 0.95)  # away from |c| = 1, where acos has an infinite slope
    cg = c.clone().requires_grad_(True)
    cr = c.clone().requires_grad_(True)
    out = cluster_discrimination_loss(
        cg, y, mask=mask, scale=scale, margin=margin, reduction="none"
    )
    ref = slow_mlcd(cr, y, mask, scale, margin)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(cg.grad, cr.grad)


def test_one_positive_one_negative_is_two_softplus():
    s = torch.randn(10, 2, dtype=torch.float64) * 5
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(10, 2)
    out = cluster_discrimination_loss(s, y, reduction="none", **PLAIN)
    torch.testing.assert_close(out, F.softplus(s[:, 1]) + F.softplus(-s[:, 0]))


def test_decomposition_gradient_of_each_part_ignores_the_other():
    c, y, _ = cosines(5, 7)
    pos = y > 0
    base = c.clone().requires_grad_(True)
    moved = torch.where(pos, -c, c).clone().requires_grad_(True)  # change positives only
    cluster_discrimination_loss(base, y, scale=4.0, margin=0.3, reduction="sum").backward()
    cluster_discrimination_loss(moved, y, scale=4.0, margin=0.3, reduction="sum").backward()
    assert torch.equal(base.grad[~pos], moved.grad[~pos])
    assert not torch.allclose(base.grad[pos], moved.grad[pos])
    # and the positive-part gradient ignores the negative scores
    other = torch.where(pos, c, c.flip(1)).clone().requires_grad_(True)
    cluster_discrimination_loss(other, y, scale=4.0, margin=0.3, reduction="sum").backward()
    assert torch.equal(base.grad[pos], other.grad[pos])


def test_permutation_invariance():
    c, y, mask = cosines(6, 8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    a = cluster_discrimination_loss(c, y, mask=mask, reduction="none")
    b = cluster_discrimination_loss(c[:, perm], y[:, perm], mask=mask[:, perm], reduction="none")
    torch.testing.assert_close(a, b)


def test_separated_limit_goes_to_zero_and_loss_is_positive_otherwise():
    _, y, mask = cosines(4, 6)
    values = []
    for gap in (1.0, 10.0, 50.0):
        s = torch.where(y > 0, gap, -gap).to(torch.float64)
        values.append(cluster_discrimination_loss(s, y, mask=mask, **PLAIN))
    assert values[0] > values[1] > values[2] >= 0
    assert values[1] > 0 and values[2] < 1e-20
    # with the paper's margin, perfectly aligned positives and orthogonal negatives
    s = torch.where(y > 0, 1.0, -1.0).to(torch.float64)
    assert cluster_discrimination_loss(s, y, scale=64.0, margin=0.3) < 1e-20


def test_margin_only_lowers_positive_scores_and_is_monotone():
    c = torch.linspace(-1, 1, 201, dtype=torch.float64)[:, None]
    y = torch.ones_like(c)
    loss = cluster_discrimination_loss(c, y, scale=1.0, margin=0.3, reduction="none")
    plain = cluster_discrimination_loss(c, y, reduction="none", **PLAIN)
    assert (loss > plain).all()  # the margin makes every positive harder
    assert (loss[1:] <= loss[:-1]).all()  # and the loss still falls as the cosine grows
    cg = torch.tensor([[1.0], [-1.0]], dtype=torch.float64, requires_grad=True)
    cluster_discrimination_loss(cg, y[:2], margin=0.3, reduction="sum").backward()
    assert torch.isfinite(cg.grad).all()


def test_negative_sampling():
    c, y, mask = cosines(6, 20)
    full = cluster_discrimination_loss(c, y, mask=mask, reduction="none")
    torch.testing.assert_close(
        cluster_discrimination_loss(c, y, mask=mask, negative_ratio=1.0, reduction="none"), full
    )
    g = torch.Generator().manual_seed(0)
    cg = c.clone().requires_grad_(True)
    out = cluster_discrimination_loss(
        cg, y, mask=mask, negative_ratio=0.3, generator=g, reduction="none"
    )
    out.sum().backward()
    neg = (y < 0.5) & mask
    chosen = (cg.grad != 0) & neg
    expected = torch.round(neg.sum(1).double() * 0.3).clamp_min(1).long()
    assert torch.equal(chosen.sum(1), expected)
    # the sampled loss is the full loss over positives and the chosen negatives
    keep = ((y > 0.5) & mask) | chosen
    torch.testing.assert_close(out, cluster_discrimination_loss(c, y, mask=keep, reduction="none"))
    # same seed, same draw; the module owns a seeded generator
    again = cluster_discrimination_loss(
        c, y, mask=mask, negative_ratio=0.3, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(again, out.mean())
    # a row keeps at least one negative, however small the ratio
    one_neg = torch.tensor([[1.0, 0.0, 1.0]], dtype=c.dtype)
    few = cluster_discrimination_loss(c[:1, :3], one_neg, negative_ratio=0.01, **PLAIN)
    torch.testing.assert_close(few, cluster_discrimination_loss(c[:1, :3], one_neg, **PLAIN))
    m1 = ClusterDiscriminationLoss(negative_ratio=0.3, seed=5)
    m2 = ClusterDiscriminationLoss(negative_ratio=0.3, seed=5)
    torch.testing.assert_close(m1(c, y, mask), m2(c, y, mask))


def test_rows_without_positives_and_without_known_entries():
    c, y, mask = cosines(4, 5)
    y[0] = 0
    mask[1] = False
    none = cluster_discrimination_loss(c, y, mask=mask, reduction="none", **PLAIN)
    torch.testing.assert_close(none[0], torch.log1p(torch.exp(c[0][mask[0]]).sum()))
    assert none[1] == 0
    torch.testing.assert_close(
        cluster_discrimination_loss(c, y, mask=mask, **PLAIN), none[[0, 2, 3]].mean()
    )


def test_head_gives_cosines_for_the_loss():
    torch.manual_seed(0)
    head = ClusterDiscriminationHead(8, 5)
    feats = torch.randn(4, 8)
    cos = head(feats)
    assert cos.shape == (4, 5) and cos.abs().max() <= 1
    ref = F.normalize(feats, dim=1) @ F.normalize(head.weight, dim=1).T
    torch.testing.assert_close(cos, ref)
    y = (torch.rand(4, 5) < 0.5).float()
    cluster_discrimination_loss(cos, y).backward()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    with pytest.raises(ValueError, match="in_features"):
        ClusterDiscriminationHead(0, 5)
    with pytest.raises(ValueError, match="num_classes"):
        ClusterDiscriminationHead(8, 0)


def test_contract():
    c, y, mask = cosines()
    check_reductions(cluster_discrimination_loss, c, y)
    check_reductions(cluster_discrimination_loss, c, y, mask=mask)
    check_gradcheck(cluster_discrimination_loss, c.clamp(-0.9, 0.9), y, mask=mask, scale=4.0)
    check_gradcheck(cluster_discrimination_loss, c * 3, y, mask=mask, **PLAIN)
    check_mask_zero_grad(cluster_discrimination_loss, c, y, mask, **PLAIN)
    # with a margin the scores must stay cosines, so move the unknown ones within [-1, 1]
    kw = {"scale": 16.0, "margin": 0.3}
    cg = c.clone().requires_grad_(True)
    cluster_discrimination_loss(cg, y, mask=mask, reduction="sum", **kw).backward()
    assert (cg.grad[~mask] == 0).all()
    c2, y2 = c.clone(), y.clone()
    c2[~mask] = -c2[~mask]
    y2[~mask] = 1 - y2[~mask]
    torch.testing.assert_close(
        cluster_discrimination_loss(c2, y2, mask=mask, reduction="none", **kw),
        cluster_discrimination_loss(c, y, mask=mask, reduction="none", **kw),
    )
    # not scale-free: cosines (magnitude 0.25 keeps them in [-1, 1]) at the paper's scale, and
    # raw logits of magnitude 30 without margin
    check_half_precision(cluster_discrimination_loss, y.float(), magnitude=0.25)
    check_half_precision(cluster_discrimination_loss, y.float(), magnitude=30.0, **PLAIN)
    check_bad_inputs(cluster_discrimination_loss, **PLAIN)
    module = ClusterDiscriminationLoss(scale=8.0, reduction="sum")
    torch.testing.assert_close(
        module(c, y, mask), cluster_discrimination_loss(c, y, mask=mask, scale=8.0, reduction="sum")
    )


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"scale": 0.0}, "scale"),
        ({"margin": -0.1}, "margin"),
        ({"margin": math.pi}, "margin"),
        ({"negative_ratio": 0.0}, "negative_ratio"),
        ({"negative_ratio": 1.5}, "negative_ratio"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_hyperparameters(kw, name):
    c, y, _ = cosines()
    with pytest.raises(ValueError, match=name):
        cluster_discrimination_loss(c, y, **kw)
    with pytest.raises(ValueError, match=name):
        ClusterDiscriminationLoss(**kw)


def test_scores_outside_unit_interval_with_margin():
    c, y, _ = cosines()
    with pytest.raises(ValueError, match="scores"):
        cluster_discrimination_loss(c * 3, y, margin=0.3)
    cluster_discrimination_loss(c * 3, y, margin=0.0)  # any real scores without a margin
