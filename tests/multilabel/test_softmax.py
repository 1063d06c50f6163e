import math

import pytest
import torch
import torch.nn.functional as F

from losskit._core.registry import get
from losskit.multilabel.softmax import (
    MultiPositiveSoftmaxLoss,
    masked_logsumexp,
    multi_positive_softmax_loss,
)
from tests.multilabel.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_mask_zero_grad,
    check_reductions,
    random_multilabel,
)


def slow_softmax(x, y, mask):
    out = []
    for i in range(x.shape[0]):
        known = [j for j in range(x.shape[1]) if mask[i, j]]
        pos = [j for j in known if y[i, j] == 1]
        log_denom = torch.log(sum(torch.exp(x[i, j]) for j in known))
        out.append(sum(log_denom - x[i, j] for j in pos) / len(pos))
    return torch.stack(out)


def mask_with_positives(y, mask):
    """The random mask, with each row's first positive known."""
    mask = mask.clone()
    mask[torch.arange(y.shape[0]), y.argmax(dim=1)] = True
    return mask


def test_matches_slow_reference():
    x, y, mask = random_multilabel(6, 7)
    mask = mask_with_positives(y, mask)
    xg = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    out = multi_positive_softmax_loss(xg, y, mask=mask, reduction="none")
    ref = slow_softmax(xr, y, mask)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_equals_cross_entropy_with_soft_targets():
    x, y, _ = random_multilabel(8, 6)
    torch.testing.assert_close(
        multi_positive_softmax_loss(x, y), F.cross_entropy(x, y / y.sum(1, keepdim=True))
    )
    one = torch.zeros_like(y)
    cls = torch.arange(8) % 6
    one[torch.arange(8), cls] = 1
    torch.testing.assert_close(multi_positive_softmax_loss(x, one), F.cross_entropy(x, cls))


def test_separated_positives_tend_to_log_p():
    y = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    values = [multi_positive_softmax_loss(T * (2 * y - 1), y).item() for T in (1.0, 5.0, 20.0)]
    assert values[0] > values[1] > values[2]
    assert values[2] == pytest.approx(math.log(3), abs=1e-12)


def test_masked_logsumexp_empty_rows():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1] = False
    out = masked_logsumexp(x, keep)
    assert out[1] == -math.inf
    torch.testing.assert_close(out[[0, 2]], torch.logsumexp(x[[0, 2]], dim=1))
    out[[0, 2]].sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all()


def test_contract():
    x, y, mask = random_multilabel()
    known = mask_with_positives(y, mask)
    check_reductions(multi_positive_softmax_loss, x, y)
    check_reductions(multi_positive_softmax_loss, x, y, mask=known)
    check_gradcheck(multi_positive_softmax_loss, x, y, mask=known)
    check_mask_zero_grad(multi_positive_softmax_loss, x, y, mask, empty="skip")
    check_half_precision(multi_positive_softmax_loss, y.float())
    check_bad_inputs(multi_positive_softmax_loss)
    with pytest.raises(ValueError, match="empty"):
        multi_positive_softmax_loss(x, y, empty="zero")
    with pytest.raises(ValueError, match="empty"):
        MultiPositiveSoftmaxLoss(empty="zero")
    module = MultiPositiveSoftmaxLoss(reduction="sum")
    torch.testing.assert_close(
        module(x, y, known), multi_positive_softmax_loss(x, y, mask=known, reduction="sum")
    )
    assert get("multilabel_softmax").function is multi_positive_softmax_loss


def test_rows_without_positives():
    x, y, _ = random_multilabel()
    y[2] = 0
    with pytest.raises(ValueError, match="row 2 has none"):
        multi_positive_softmax_loss(x, y)
    xg = x.clone().requires_grad_(True)
    none = multi_positive_softmax_loss(xg, y, empty="skip", reduction="none")
    assert none[2] == 0
    keep = torch.arange(6) != 2
    torch.testing.assert_close(multi_positive_softmax_loss(x, y, empty="skip"), none[keep].mean())
    none.sum().backward()
    assert (xg.grad[2] == 0).all()
