import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.multilabel.decoupled_softmax import (
    DecoupledSoftmaxLoss,
    decoupled_softmax_loss,
    sample_positive_entries,
)
from losskit.multilabel.softmax import multi_positive_softmax_loss
from tests.contract import check_matches_reference
from tests.multilabel.contract import (
    check_positive_averaged,
    check_row_without_positives,
    mask_with_positives,
    random_multilabel,
)


def slow_decoupled(x, y, mask):
    out = []
    for i in range(x.shape[0]):
        known = [j for j in range(x.shape[1]) if mask[i, j]]
        pos = [j for j in known if y[i, j] == 1]
        neg = [j for j in known if y[i, j] == 0]
        terms = []
        for j in pos:
            denom = torch.exp(x[i, j]) + sum(torch.exp(x[i, k]) for k in neg)
            terms.append(-torch.log(torch.exp(x[i, j]) / denom))
        out.append(sum(terms) / len(pos))
    return torch.stack(out)


def test_matches_slow_reference():
    x, y, mask = random_multilabel(6, 7)
    mask = mask_with_positives(y, mask)
    check_matches_reference(
        lambda z: decoupled_softmax_loss(z, y, mask=mask, reduction="none"),
        lambda z: slow_decoupled(z, y, mask),
        x,
    )


def test_one_positive_is_cross_entropy():
    x, _, _ = random_multilabel(8, 6)
    cls = torch.arange(8) % 6
    y = F.one_hot(cls, 6).to(x.dtype)
    torch.testing.assert_close(decoupled_softmax_loss(x, y), F.cross_entropy(x, cls))
    torch.testing.assert_close(decoupled_softmax_loss(x, y), multi_positive_softmax_loss(x, y))


def test_separated_positives_tend_to_zero():
    y = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    dec = [decoupled_softmax_loss(T * (2 * y - 1), y).item() for T in (1.0, 5.0, 20.0)]
    soft = [multi_positive_softmax_loss(T * (2 * y - 1), y).item() for T in (1.0, 5.0, 20.0)]
    assert dec[0] > dec[1] > dec[2] and dec[2] < 1e-15
    assert soft[2] == pytest.approx(math.log(3), abs=1e-12)


def test_each_term_ignores_the_other_positives():
    """L = (1/|P|) sum_j l_j where l_j (positive j against the negatives) does not depend on
    the other positives: the gradient on positive j is that of l_j alone."""
    x, y, _ = random_multilabel(5, 8)
    xg = x.clone().requires_grad_(True)
    decoupled_softmax_loss(xg, y, reduction="sum").backward()
    for i in range(5):
        pos = y[i].nonzero().flatten()
        neg_grad = torch.zeros(8, dtype=x.dtype)
        for j in pos:
            alone = (y[i] == 0) | (torch.arange(8) == j)  # the other positives unknown
            xj = x[i : i + 1].clone().requires_grad_(True)
            decoupled_softmax_loss(xj, y[i : i + 1], mask=alone[None]).backward()
            assert (xj.grad[0, pos[pos != j]] == 0).all()
            torch.testing.assert_close(xg.grad[i, j], xj.grad[0, j] / len(pos))
            neg_grad += xj.grad[0] * (y[i] == 0) / len(pos)
        torch.testing.assert_close(xg.grad[i] * (y[i] == 0), neg_grad)


def test_shortlist_is_the_full_loss_restricted_to_its_columns():
    x, y, _ = random_multilabel(4, 30, seed=3)
    g = torch.Generator().manual_seed(0)
    cols = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(4)])
    cols[:, 0] = y.argmax(dim=1)  # every shortlist holds a positive
    mask = torch.zeros(4, 30, dtype=torch.bool).scatter_(1, cols, True)
    xg = x.clone().requires_grad_(True)
    short = decoupled_softmax_loss(xg.gather(1, cols), y.gather(1, cols), reduction="none")
    xf = x.clone().requires_grad_(True)
    full = decoupled_softmax_loss(xf, y, mask=mask, reduction="none")
    torch.testing.assert_close(short, full)
    short.sum().backward()
    full.sum().backward()
    torch.testing.assert_close(xg.grad, xf.grad)


def test_sample_positive_entries():
    rows = torch.tensor([0, 0, 0, 1, 2, 2])
    count = torch.tensor([3.0, 1.0, 2.0])
    a = sample_positive_entries(rows, count, 1, torch.Generator().manual_seed(5))
    b = sample_positive_entries(rows, count, 1, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.bincount(rows[a], minlength=3).tolist() == [1, 1, 1]
    two = sample_positive_entries(rows, count, 2, torch.Generator().manual_seed(5))
    assert torch.bincount(rows[two], minlength=3).tolist() == [2, 1, 2]
    # uniform: 3000 rows with 3 positives each, every slot picked about 1/3 of the time
    many = torch.arange(3000).repeat_interleave(3)
    pick = sample_positive_entries(many, torch.full((3000,), 3.0), 1, torch.Generator())
    freq = pick.view(3000, 3).double().mean(dim=0)
    assert ((freq - 1 / 3).abs() < 0.04).all()


def test_sampling_keeps_one_positive_per_row():
    x, y, _ = random_multilabel(6, 7, min_pos=2)
    out = decoupled_softmax_loss(
        x, y, sample_positives=True, generator=torch.Generator().manual_seed(1), reduction="none"
    )
    again = decoupled_softmax_loss(
        x, y, sample_positives=True, generator=torch.Generator().manual_seed(1), reduction="none"
    )
    torch.testing.assert_close(out, again)
    for i in range(6):  # the row's value is the term of one of its positives, alone
        pos = y[i].nonzero().flatten()
        terms = [
            decoupled_softmax_loss(
                x[i : i + 1], y[i : i + 1], mask=((y[i] == 0) | (torch.arange(7) == j))[None]
            )
            for j in pos
        ]
        assert min((t - out[i]).abs().item() for t in terms) < 1e-12
    module = DecoupledSoftmaxLoss(
        sample_positives=True, generator=torch.Generator().manual_seed(1), reduction="none"
    )
    torch.testing.assert_close(module(x, y), out)


def test_contract():
    check_positive_averaged(decoupled_softmax_loss, DecoupledSoftmaxLoss)
    with pytest.raises(ValueError, match="sample_positives"):
        DecoupledSoftmaxLoss(sample_positives="yes")
    entry = get("decoupled_softmax")
    assert entry.papers == (3,) and entry.function is decoupled_softmax_loss


def test_rows_without_positives_or_negatives():
    x, y, _ = random_multilabel()
    y[1] = 0
    y[3] = 1
    none, grad = check_row_without_positives(decoupled_softmax_loss, x, y, 1)
    assert none[3] == 0 and (grad[3] == 0).all()  # no negatives: every positive is alone


def test_second_backward_with_retained_graph():
    """The backward scales the forward's buffer in place once; a second one recomputes it."""
    x, y, mask = random_multilabel(4, 9, seed=7)
    for kw in ({}, {"mask": mask_with_positives(y, mask), "empty": "skip"}):
        xg = x.clone().requires_grad_(True)
        out = decoupled_softmax_loss(xg, y, **kw)
        out.backward(retain_graph=True)
        first = xg.grad.clone()
        out.backward()
        torch.testing.assert_close(xg.grad, 2 * first)
