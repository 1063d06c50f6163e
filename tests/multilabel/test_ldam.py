import math

import pytest
import torch

from losskit import get
from losskit.multilabel.bce import binary_cross_entropy
from losskit.multilabel.ldam import (
    MultiLabelLDAMLoss,
    multilabel_ldam_loss,
    multilabel_ldam_margins,
)
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
    slow_known_mean,
)

COUNTS = torch.tensor([500, 120, 30, 4, 0])


def slow_ldam(x, y, mask, counts, C, weight):
    """TransICD's recipe entry by entry: shift positives by C / n^(1/4), then BCE."""

    def term(i, j):
        n = max(float(counts[j]), 1.0)
        z = x[i, j] - y[i, j] * C / n**0.25
        p = 1 / (1 + torch.exp(-z))
        return weight[j] * -(y[i, j] * torch.log(p) + (1 - y[i, j]) * torch.log(1 - p))

    return slow_known_mean(term, mask)


def test_matches_slow_reference_value_and_gradient():
    x, y, mask = random_multilabel(6, 5)
    w = torch.linspace(0.5, 2.0, 5, dtype=x.dtype)
    kw = {"class_counts": COUNTS, "C": 3.0, "mask": mask, "weight": w}
    check_matches_reference(
        lambda z: multilabel_ldam_loss(z, y, reduction="none", **kw),
        lambda z: slow_ldam(z, y, mask, COUNTS, 3.0, w),
        x,
    )


def test_margins_zero_count_as_one_and_decrease_with_frequency():
    m = multilabel_ldam_margins(COUNTS, 3.0)
    assert m.dtype == torch.float64
    torch.testing.assert_close(m[-1], torch.tensor(3.0, dtype=torch.float64))  # n = 0 -> 1
    torch.testing.assert_close(m[0], torch.tensor(3.0 / 500**0.25, dtype=torch.float64))
    sorted_counts = torch.tensor([1, 2, 10, 100, 10_000])
    assert (multilabel_ldam_margins(sorted_counts, 3.0).diff() < 0).all()


def test_c_zero_is_bce():
    x, y, mask = random_multilabel()
    torch.testing.assert_close(
        multilabel_ldam_loss(x, y, class_counts=COUNTS, C=0.0, mask=mask, reduction="none"),
        binary_cross_entropy(x, y, mask=mask, reduction="none"),
    )


def test_only_positive_entries_are_shifted():
    x, y, _ = random_multilabel()
    # negatives alone: every entry of the row a known negative gives plain BCE
    neg = y < 0.5
    torch.testing.assert_close(
        multilabel_ldam_loss(x, y, class_counts=COUNTS, mask=neg, reduction="none"),
        binary_cross_entropy(x, y, mask=neg, reduction="none"),
    )
    # positives alone: BCE on logits shifted by the margins
    pos = y > 0.5
    shifted = x - multilabel_ldam_margins(COUNTS, 3.0)
    torch.testing.assert_close(
        multilabel_ldam_loss(x, y, class_counts=COUNTS, mask=pos, reduction="none"),
        binary_cross_entropy(shifted, y, mask=pos, reduction="none"),
    )


def test_gradient_of_negative_entries_unchanged():
    x, y, _ = random_multilabel(8, 5)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    multilabel_ldam_loss(xa, y, class_counts=COUNTS, C=3.0, reduction="sum").backward()
    binary_cross_entropy(xb, y, reduction="sum").backward()
    neg = y < 0.5
    torch.testing.assert_close(xa.grad[neg], xb.grad[neg])
    # positives: the margin makes them harder, so their gradient pushes up more strongly
    assert (xa.grad[~neg] < xb.grad[~neg]).all()


def test_contract():
    x, y, mask = random_multilabel()
    kw = {"class_counts": COUNTS}
    check_reductions(multilabel_ldam_loss, x, y, **kw)
    check_reductions(multilabel_ldam_loss, x, y, mask=mask, **kw)
    check_gradcheck(multilabel_ldam_loss, x, y, mask=mask, **kw)
    check_mask_zero_grad(multilabel_ldam_loss, x, y, mask, **kw)
    # BCE grows linearly in |logit|, like BCE itself; 30 exercises large half-precision logits
    check_half_precision(multilabel_ldam_loss, y.float(), **kw)
    check_bad_inputs(multilabel_ldam_loss, **kw)


def test_module_matches_function_and_registry():
    x, y, mask = random_multilabel(dtype=torch.float32)
    module = MultiLabelLDAMLoss(COUNTS, C=2.0, reduction="sum")
    assert "margins" in dict(module.named_buffers())
    torch.testing.assert_close(
        module(x, y, mask),
        multilabel_ldam_loss(x, y, class_counts=COUNTS, C=2.0, mask=mask, reduction="sum"),
    )
    entry = get("multilabel_ldam")
    assert entry.papers == (14,) and entry.defaults["C"] == 3.0
    built = entry.build(class_counts=COUNTS)
    torch.testing.assert_close(built(x, y), multilabel_ldam_loss(x, y, class_counts=COUNTS))


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"C": -1.0}, "C"),
        ({"C": math.nan}, "C"),
        ({"class_counts": torch.tensor([1, 2, 3])}, "class_counts"),
        ({"class_counts": torch.tensor([1, -2, 3, 4, 5])}, "class_counts"),
        ({"class_counts": torch.ones(5, 1)}, "class_counts"),
        ({"class_counts": "many"}, "class_counts"),
    ],
)
def test_bad_hyperparameters(kw, name):
    x, y, _ = random_multilabel(dtype=torch.float32)
    with pytest.raises(ValueError, match=name):
        multilabel_ldam_loss(x, y, **{"class_counts": COUNTS, **kw})
    with pytest.raises(ValueError, match=name):  # at construction, or at the call for length
        MultiLabelLDAMLoss(**{"class_counts": COUNTS, **kw})(x, y)
