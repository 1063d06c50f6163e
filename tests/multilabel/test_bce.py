import torch
import torch.nn.functional as F

from losskit.multilabel import BinaryCrossEntropyLoss, binary_cross_entropy
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
    slow_known_mean,
)


def slow_bce(x, y, mask, pos_weight, weight):
    def term(i, j):
        p = 1 / (1 + torch.exp(-x[i, j]))
        bce = -(pos_weight[j] * y[i, j] * torch.log(p) + (1 - y[i, j]) * torch.log(1 - p))
        return weight[j] * bce

    return slow_known_mean(term, mask)


def test_matches_slow_reference_and_torch():
    x, y, mask = random_multilabel(6, 5)
    pw = torch.linspace(0.5, 3.0, 5, dtype=x.dtype)
    w = torch.linspace(1.0, 2.0, 5, dtype=x.dtype)
    check_matches_reference(
        lambda z: binary_cross_entropy(z, y, mask=mask, pos_weight=pw, weight=w, reduction="none"),
        lambda z: slow_bce(z, y, mask, pw, w),
        x,
    )
    torch.testing.assert_close(
        binary_cross_entropy(x, y, pos_weight=pw, weight=w),
        F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, weight=w),
    )


def test_contract():
    x, y, mask = random_multilabel()
    check_reductions(binary_cross_entropy, x, y)
    check_reductions(binary_cross_entropy, x, y, mask=mask)
    check_gradcheck(binary_cross_entropy, x, y, mask=mask)
    check_mask_zero_grad(binary_cross_entropy, x, y, mask)
    check_half_precision(binary_cross_entropy, y.float())
    check_bad_inputs(binary_cross_entropy)
    module = BinaryCrossEntropyLoss(pos_weight=torch.ones(5, dtype=x.dtype), reduction="sum")
    torch.testing.assert_close(
        module(x, y, mask), binary_cross_entropy(x, y, mask=mask, reduction="sum")
    )


def test_rows_without_known_entries_drop_out_of_the_mean():
    x, y, mask = random_multilabel()
    mask[0] = False
    none = binary_cross_entropy(x, y, mask=mask, reduction="none")
    assert none[0] == 0
    torch.testing.assert_close(binary_cross_entropy(x, y, mask=mask), none[1:].mean())
