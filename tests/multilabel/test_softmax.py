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
from tests.contract import check_matches_reference
from tests.multilabel.contract import (
    check_positive_averaged,
    check_row_without_positives,
    mask_with_positives,
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


def test_matches_slow_reference():
    x, y, mask = random_multilabel(6, 7)
    mask = mask_with_positives(y, mask)
    check_matches_reference(
        lambda z: multi_positive_softmax_loss(z, y, mask=mask, reduction="none"),
        lambda z: slow_softmax(z, y, mask),
        x,
    )


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
    check_positive_averaged(multi_positive_softmax_loss, MultiPositiveSoftmaxLoss)
    assert get("multilabel_softmax").function is multi_positive_softmax_loss


def test_rows_without_positives():
    x, y, _ = random_multilabel()
    y[2] = 0
    check_row_without_positives(multi_positive_softmax_loss, x, y, 2)
