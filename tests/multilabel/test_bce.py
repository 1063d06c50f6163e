import torch
import torch.nn.functional as F

from losskit.multilabel import BinaryCrossEntropyLoss, binary_cross_entropy
from tests.multilabel.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_mask_zero_grad,
    check_reductions,
    random_multilabel,
)


def slow_bce(x, y, mask, pos_weight, weight):
    n, num_labels = x.shape
    out = []
    for i in range(n):
        total, count = 0.0, 0
        for j in range(num_labels):
            if not mask[i, j]:
                continue
            p = 1 / (1 + torch.exp(-x[i, j]))
            term = -(pos_weight[j] * y[i, j] * torch.log(p) + (1 - y[i, j]) * torch.log(1 - p))
            total, count = total + weight[j] * term, count + 1
        out.append(total / max(count, 1))
    return torch.stack(out)


def test_matches_slow_reference_and_torch():
    x, y, mask = random_multilabel(6, 5)
    pw = torch.linspace(0.5, 3.0, 5, dtype=x.dtype)
    w = torch.linspace(1.0, 2.0, 5, dtype=x.dtype)
    xg = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    out = binary_cross_entropy(xg, y, mask=mask, pos_weight=pw, weight=w, reduction="none")
    ref = slow_bce(xr, y, mask, pw, w)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
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
