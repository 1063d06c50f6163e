import pytest
import torch

from losskit.multilabel.bce import binary_cross_entropy
from losskit.multilabel.focal import FocalBinaryCrossEntropyLoss, focal_binary_cross_entropy
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
    slow_known_mean,
)


def slow_focal(x, y, mask, gamma, alpha, weight):
    a_pos = 1.0 if alpha is None else alpha
    a_neg = 1.0 if alpha is None else 1 - alpha

    def term(i, j):
        p = 1 / (1 + torch.exp(-x[i, j]))
        focal = -(
            a_pos * y[i, j] * (1 - p) ** gamma * torch.log(p)
            + a_neg * (1 - y[i, j]) * p**gamma * torch.log(1 - p)
        )
        return weight[j] * focal

    return slow_known_mean(term, mask)


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, None), (3.0, 0.8)])
def test_matches_slow_reference(gamma, alpha):
    x, y, mask = random_multilabel(6, 5)
    w = torch.linspace(0.5, 2.0, 5, dtype=x.dtype)
    check_matches_reference(
        lambda z: focal_binary_cross_entropy(
            z, y, mask=mask, gamma=gamma, alpha=alpha, weight=w, reduction="none"
        ),
        lambda z: slow_focal(z, y, mask, gamma, alpha, w),
        x,
    )


def test_gamma_zero_is_bce_and_alpha_balances():
    x, y, mask = random_multilabel(8, 6)
    bce = binary_cross_entropy(x, y, mask=mask, reduction="none")
    torch.testing.assert_close(
        focal_binary_cross_entropy(x, y, mask=mask, gamma=0.0, reduction="none"), bce
    )
    torch.testing.assert_close(
        focal_binary_cross_entropy(x, y, mask=mask, gamma=0.0, alpha=0.5, reduction="none"),
        0.5 * bce,
    )
    # alpha = 1 keeps only the positive terms, alpha = 0 only the negative ones
    pos_only = focal_binary_cross_entropy(x, y, gamma=0.0, alpha=1.0, reduction="sum")
    torch.testing.assert_close(
        pos_only, binary_cross_entropy(x * y - 50 * (1 - y), y, reduction="sum")
    )


def test_focusing_down_weights_easy_entries_and_stays_finite():
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    easy = torch.tensor([[4.0, -4.0]], dtype=torch.float64)
    plain = focal_binary_cross_entropy(easy, y, gamma=0.0)
    focused = focal_binary_cross_entropy(easy, y, gamma=2.0)
    assert focused < plain * 0.01
    big = torch.tensor([[-200.0, 200.0]], dtype=torch.float64, requires_grad=True)
    out = focal_binary_cross_entropy(big, y, gamma=0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(big.grad).all()
    torch.testing.assert_close(out, torch.tensor(200.0, dtype=torch.float64))


def test_contract():
    x, y, mask = random_multilabel()
    kw = {"gamma": 2.0, "alpha": 0.25}
    check_reductions(focal_binary_cross_entropy, x, y, **kw)
    check_reductions(focal_binary_cross_entropy, x, y, mask=mask, **kw)
    check_gradcheck(focal_binary_cross_entropy, x, y, mask=mask, **kw)
    check_gradcheck(focal_binary_cross_entropy, x, y, gamma=0.5)
    check_mask_zero_grad(focal_binary_cross_entropy, x, y, mask, **kw)
    # logits of magnitude 30: saturated entries exercise the logsigmoid forms
    check_half_precision(focal_binary_cross_entropy, y.float(), **kw)
    check_half_precision(focal_binary_cross_entropy, y.float(), magnitude=3.0, **kw)
    check_bad_inputs(focal_binary_cross_entropy)
    module = FocalBinaryCrossEntropyLoss(gamma=2.0, alpha=0.25, reduction="sum")
    torch.testing.assert_close(
        module(x, y, mask), focal_binary_cross_entropy(x, y, mask=mask, reduction="sum", **kw)
    )


@pytest.mark.parametrize(
    ("kw", "name"),
    [({"gamma": -1.0}, "gamma"), ({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha")],
)
def test_bad_hyperparameters(kw, name):
    x, y, _ = random_multilabel()
    with pytest.raises(ValueError, match=name):
        focal_binary_cross_entropy(x, y, **kw)
    with pytest.raises(ValueError, match=name):
        FocalBinaryCrossEntropyLoss(**kw)
    with pytest.raises(ValueError, match="weight"):
        focal_binary_cross_entropy(x, y, weight=torch.ones(3, dtype=x.dtype))
