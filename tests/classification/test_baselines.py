"""cross_entropy, focal_loss and logsumexp_penalty against torch and slow references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit.classification import CrossEntropyLoss, cross_entropy, focal_loss, logsumexp_penalty
from tests.contract import (
    check_bad_inputs,
    check_gradcheck,
    check_half_precision,
    check_reductions,
    check_weight_and_ignore,
    random_batch,
)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_matches_torch(smoothing, reduction):
    x, y, p = random_batch(9, 6)
    y[2] = -100
    w = torch.rand(6, dtype=torch.float64)
    for target in (y, p):
        ours = cross_entropy(x, target, weight=w, reduction=reduction, label_smoothing=smoothing)
        ref = F.cross_entropy(x, target, weight=w, reduction=reduction, label_smoothing=smoothing)
        torch.testing.assert_close(ours, ref)


def test_cross_entropy_contract():
    x, y, p = random_batch()
    check_reductions(cross_entropy, x, y)
    check_reductions(cross_entropy, x, p)
    check_weight_and_ignore(cross_entropy, x, y)
    check_gradcheck(cross_entropy, x, y, label_smoothing=0.1)
    check_gradcheck(cross_entropy, x, p)
    check_half_precision(cross_entropy, y)
    check_bad_inputs(cross_entropy)
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(x, y, label_smoothing=1.5)


def test_cross_entropy_module_moves_weight_with_state_dict():
    m = CrossEntropyLoss(weight=torch.ones(5))
    assert "weight" in m.state_dict()
    x, y, _ = random_batch(dtype=torch.float32)
    torch.testing.assert_close(m(x, y), F.cross_entropy(x, y))


def _focal_reference(x, y, gamma, alpha):
    out = []
    for i in range(x.shape[0]):
        p = torch.softmax(x[i], 0)[y[i]]
        a = 1.0 if alpha is None else alpha[y[i]]
        out.append(-a * (1 - p) ** gamma * torch.log(p))
    return torch.stack(out)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_reference_and_ce_limit(gamma):
    x, y, _ = random_batch()
    alpha = torch.linspace(0.25, 1.0, 5, dtype=torch.float64)
    torch.testing.assert_close(
        focal_loss(x, y, gamma=gamma, alpha=alpha, reduction="none"),
        _focal_reference(x, y, gamma, alpha),
    )
    if gamma == 0:
        torch.testing.assert_close(focal_loss(x, y, gamma=0.0), F.cross_entropy(x, y))
    # focusing only ever lowers the loss below cross-entropy
    assert (
        focal_loss(x, y, gamma=gamma, reduction="none")
        <= F.cross_entropy(x, y, reduction="none") + 1e-12
    ).all()


def test_focal_contract():
    x, y, p = random_batch()
    check_reductions(focal_loss, x, y)
    check_reductions(focal_loss, x, p)
    check_weight_and_ignore(focal_loss, x, y)
    check_gradcheck(focal_loss, x, y, gamma=1.5)
    check_half_precision(focal_loss, y)
    check_bad_inputs(focal_loss)
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(x, y, alpha=torch.ones(3, dtype=torch.float64))


def test_logsumexp_penalty():
    x, y, _ = random_batch()
    ref = 1e-3 * torch.stack([torch.log(torch.exp(r).sum()) ** 2 for r in x])
    torch.testing.assert_close(logsumexp_penalty(x, coef=1e-3, reduction="none"), ref)
    y[1] = -100
    torch.testing.assert_close(
        logsumexp_penalty(x, y, coef=1e-3, reduction="mean"), ref[y != -100].mean()
    )
    check_reductions(lambda z, t, **k: logsumexp_penalty(z, t, coef=1e-3, **k), x, y.clamp(min=0))
    check_gradcheck(lambda z, t, **k: logsumexp_penalty(z, **k), x, y)
    check_half_precision(lambda z, t, **k: logsumexp_penalty(z, **k), y, magnitude=10.0)
    with pytest.raises(ValueError, match="coef"):
        logsumexp_penalty(x, coef=-1)
    with pytest.raises(ValueError, match="logits"):
        logsumexp_penalty(x[0])


def test_focal_confident_rows_have_finite_gradients():
    """gamma < 1: (1 - p)^gamma has an infinite derivative where p rounds to 1, where the
    loss is flat; the gradient there is 0, not NaN (hard and soft targets)."""
    x = torch.tensor([[50.0, -50.0, 0.0], [1.0, 2.0, 3.0]])
    y = torch.tensor([0, 1])
    for gamma in (0.5, 2.0):
        for target in (y, F.one_hot(y, 3).float()):
            xg = x.clone().requires_grad_(True)
            focal_loss(xg, target, gamma=gamma, reduction="sum").backward()
            assert torch.isfinite(xg.grad).all()
            assert xg.grad[0].abs().max() < 1e-6 and xg.grad[1].abs().max() > 1e-2


def test_target_nll_and_row_dot_helpers():
    from losskit.classification._common import prepare, row_dot, target_nll

    x, y, p = random_batch(6, 4)
    y[1] = -100
    b = prepare(x, y, ignore_index=-100)
    ref = F.cross_entropy(x, y.clamp(min=0), reduction="none")
    torch.testing.assert_close(target_nll(b), ref)  # ignored samples read class 0
    with pytest.raises(ValueError, match="class-index"):
        target_nll(prepare(x, p))
    a = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(row_dot(a, x[:5, :1].expand(5, 7)), (a * x[:5, :1]).sum(1))
    torch.testing.assert_close(row_dot(a, a.t().contiguous().t()), (a * a).sum(1))
