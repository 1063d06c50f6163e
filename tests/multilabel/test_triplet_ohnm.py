"""NGAME's triplet margin loss with online hard negative mining (paper 56)."""

from __future__ import annotations

import math

import pytest
import torch

from losskit import get
from losskit.multilabel.triplet_ohnm import TripletOHNMLoss, triplet_ohnm_loss
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
)


def slow_triplet(x, y, mask, margin, k, aggressive, tau):
    """Per-row loss by loops: each known positive against the row's k hardest negatives."""
    out = []
    for i in range(x.shape[0]):
        known = [j for j in range(x.shape[1]) if mask is None or mask[i, j]]
        pos = [j for j in known if y[i, j] == 1]
        neg = sorted((j for j in known if y[i, j] == 0), key=lambda j: -float(x[i, j].detach()))[:k]
        total = x.new_zeros(())
        for p in pos:
            hinge = [torch.clamp(x[i, j] - x[i, p] + margin, min=0) for j in neg]
            if aggressive:
                logits = [
                    x[i, j] / tau if h > 0 else x[i, j] * 0 for j, h in zip(neg, hinge, strict=True)
                ]
                z = torch.stack(logits)
                w = torch.exp(z - z.max())
                hinge = [h * wj for h, wj in zip(hinge, w / w.sum(), strict=True)]
            total = total + sum(hinge)
        out.append(total / max(len(pos) * len(neg), 1))
    return torch.stack(out)


@pytest.mark.parametrize("aggressive", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_slow_reference(aggressive, use_mask):
    x, y, mask = random_multilabel(6, 9, scale=0.5)
    mask = mask if use_mask else None
    kw = {"margin": 0.3, "k": 3, "aggressive": aggressive, "tau": 0.1}
    check_matches_reference(
        lambda z: triplet_ohnm_loss(z, y, mask=mask, reduction="none", **kw),
        lambda z: slow_triplet(z, y, mask, **kw),
        x,
    )


def code_ohnm(sim, margin, k, aggressive, tau):
    """The released code's loss: positive on the diagonal, mean over the N x k terms."""
    target = torch.eye(sim.shape[0], dtype=sim.dtype)
    s_p = sim.diagonal()[:, None]
    masked = torch.where(target == 0, sim, torch.full_like(sim, -10.0))
    s_n = sim.gather(1, masked.topk(k, dim=1).indices)
    loss = torch.clamp(s_n - s_p + margin, min=0)
    if aggressive:
        loss = loss * torch.softmax(s_n / tau * (loss != 0), dim=1)
    return loss.mean()


@pytest.mark.parametrize("aggressive", [False, True])
def test_one_positive_per_row_is_the_released_code(aggressive):
    g = torch.Generator().manual_seed(0)
    sim = torch.nn.functional.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64))
    sim = sim @ sim.roll(1, 0).T  # cosine similarities, in-batch
    target = torch.eye(12, dtype=torch.float64)
    out = triplet_ohnm_loss(sim, target, margin=0.3, k=5, aggressive=aggressive)
    torch.testing.assert_close(out, code_ohnm(sim, 0.3, 5, aggressive, 0.1))


def test_zero_iff_every_positive_beats_its_hardest_negatives_by_the_margin():
    x, y, _ = random_multilabel(40, 7, scale=0.5, seed=3)
    pos = y > 0
    # lift positives of half the rows above their row's hardest negative plus the margin
    hardest = torch.where(pos, -torch.inf, x).amax(dim=1, keepdim=True)
    lift = torch.arange(40)[:, None] % 2 == 0
    x = torch.where(pos & lift, hardest + 0.3 + torch.rand(x.shape, dtype=x.dtype), x)
    gap = torch.where(pos, x, torch.inf).amin(dim=1) - torch.where(pos, -torch.inf, x).amax(dim=1)
    loss = triplet_ohnm_loss(x, y, margin=0.3, k=2, reduction="none")
    assert ((loss == 0) == (gap >= 0.3)).all()
    assert (loss[::2] == 0).all() and (loss[1::2] > 0).any()
    assert triplet_ohnm_loss(x, y, margin=0.3, k=2, aggressive=True) >= 0


def test_aggressive_weights_sum_to_one():
    # all k hardest negatives tie and violate: plain gives h, weighted gives h / k
    x = torch.tensor([[0.1, 0.5, 0.5, 0.5, -0.9]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0, 0, 0, 0]], dtype=torch.float64)
    plain = triplet_ohnm_loss(x, y, margin=0.3, k=3)
    weighted = triplet_ohnm_loss(x, y, margin=0.3, k=3, aggressive=True)
    torch.testing.assert_close(plain, torch.tensor(0.7, dtype=torch.float64))
    torch.testing.assert_close(weighted, plain / 3)
    # one violator and non-violators with logit 0 (the code's choice, not excluded)
    x = torch.tensor([[0.9, 0.8, -0.5, -0.6]], dtype=torch.float64)
    weighted = triplet_ohnm_loss(x, y[:, :4], margin=0.3, k=3, aggressive=True)
    w = math.exp(0.8 / 0.1) / (math.exp(0.8 / 0.1) + 2)
    torch.testing.assert_close(weighted, torch.tensor(0.2 * w / 3, dtype=torch.float64))


def test_k_larger_than_the_negatives_uses_them_all_and_rows_without_pairs_give_zero():
    x, y, _ = random_multilabel(5, 6, scale=0.5, seed=4)
    torch.testing.assert_close(
        triplet_ohnm_loss(x, y, k=50, reduction="none"),
        slow_triplet(x, y, None, 0.3, 50, False, 0.1),
    )
    y[0] = 0  # no positive
    y[1] = 1  # no negative
    for aggressive in (False, True):
        xg = x.clone().requires_grad_(True)
        none = triplet_ohnm_loss(xg, y, k=3, aggressive=aggressive, reduction="none")
        assert none[0] == 0 and none[1] == 0
        none.sum().backward()
        assert torch.isfinite(xg.grad).all() and (xg.grad[:2] == 0).all()


def test_contract():
    x, y, mask = random_multilabel(6, 7, scale=0.5)
    for kw in ({"k": 3}, {"k": 3, "aggressive": True, "tau": 0.5}):
        check_reductions(triplet_ohnm_loss, x, y, **kw)
        check_reductions(triplet_ohnm_loss, x, y, mask=mask, **kw)
        check_gradcheck(triplet_ohnm_loss, x, y, mask=mask, **kw)
        check_mask_zero_grad(triplet_ohnm_loss, x, y, mask, **kw)
        # cosine similarities: magnitude 0.5 keeps them mostly in [-1, 1]
        check_half_precision(triplet_ohnm_loss, y.float(), magnitude=0.5, **kw)
        check_bad_inputs(triplet_ohnm_loss, **kw)
    module = TripletOHNMLoss(k=3, aggressive=True, reduction="sum")
    torch.testing.assert_close(
        module(x, y, mask),
        triplet_ohnm_loss(x, y, mask=mask, k=3, aggressive=True, reduction="sum"),
    )


def test_bad_hyperparameters():
    x, y, _ = random_multilabel(4, 5)
    for kw, name in (
        ({"margin": -0.1}, "margin"),
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"tau": 0.0}, "tau"),
    ):
        with pytest.raises(ValueError, match=name):
            triplet_ohnm_loss(x, y, **kw)
        with pytest.raises(ValueError, match=name):
            TripletOHNMLoss(**kw)


def test_registered_with_the_papers_defaults():
    entry = get("triplet_ohnm")
    assert entry.papers == (56,) and entry.kind == "loss"
    module = entry.build()
    assert (module.margin, module.k, module.aggressive, module.tau) == (0.3, 10, True, 0.1)
