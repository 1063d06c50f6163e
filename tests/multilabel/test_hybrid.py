import math

import pytest
import torch

from losskit.multilabel.bce import binary_cross_entropy
from losskit.multilabel.hybrid import (
    HybridLoss,
    hybrid_loss,
    inverse_frequency_weights,
    label_correlation,
    label_correlation_from_labels,
)
from tests.contract import check_gradcheck, check_matches_reference, check_reductions
from tests.multilabel.contract import (
    check_bad_inputs,
    check_half_precision,
    check_mask_zero_grad,
    random_multilabel,
    slow_known_mean,
)


def slow_hybrid(x, y, mask, w, corr, feats, alpha, beta, gamma, t):
    n, num_labels = x.shape
    p = 1 / (1 + torch.exp(-x))
    bce = slow_known_mean(
        lambda i, j: (
            w[j] * -(y[i, j] * torch.log(p[i, j]) + (1 - y[i, j]) * torch.log(1 - p[i, j]))
        ),
        mask,
    )
    gap, pairs = x.new_zeros(()), 0
    for a in range(num_labels):
        for b in range(num_labels):
            both = [i for i in range(n) if mask[i, a] and mask[i, b]]
            if both:
                c_hat = sum(p[i, a] * p[i, b] for i in both) / len(both)
                c = (
                    corr[a, b]
                    if corr is not None
                    else sum(y[i, a] * y[i, b] for i in both) / len(both)
                )
                gap, pairs = gap + (c_hat - c) ** 2, pairs + 1
    gap = gap / pairs
    z = feats if feats is not None else torch.where(mask, p, torch.zeros_like(p))
    z = [z[i] / z[i].norm() for i in range(n)]
    labels = [{j for j in range(num_labels) if mask[i, j] and y[i, j] == 1} for i in range(n)]
    con = []
    for a in range(n):
        denom = sum(torch.exp(z[a] @ z[b] / t) for b in range(n) if b != a)
        pos = [b for b in range(n) if b != a and labels[a] & labels[b]]
        terms = [torch.log(torch.exp(z[a] @ z[b] / t) / denom) for b in pos]
        con.append(-sum(terms) / len(pos) if pos else x.new_zeros(()))
    return torch.stack([alpha * bce[i] + beta * gap + gamma * con[i] for i in range(n)])


@pytest.mark.parametrize("use_features", [False, True])
def test_matches_slow_reference(use_features):
    x, y, mask = random_multilabel(6, 5)
    g = torch.Generator().manual_seed(4)
    w = torch.rand(5, generator=g, dtype=x.dtype) + 0.5
    corr = torch.rand(5, 5, generator=g, dtype=x.dtype) * 0.5
    feats = torch.randn(6, 3, generator=g, dtype=x.dtype) if use_features else None
    kw = {"alpha": 0.7, "beta": 2.0, "gamma": 0.3, "temperature": 0.5}
    for c in (corr, None):
        check_matches_reference(
            lambda z, c=c: hybrid_loss(
                z,
                y,
                mask=mask,
                class_weight=w,
                correlation=c,
                features=feats,
                reduction="none",
                **kw,
            ),
            lambda z, c=c: slow_hybrid(
                z, y, mask, w, c, feats, kw["alpha"], kw["beta"], kw["gamma"], 0.5
            ),
            x,
        )


def test_without_correlation_and_contrast_it_is_bce():
    x, y, mask = random_multilabel(8, 6)
    bce = binary_cross_entropy(x, y, mask=mask, reduction="none")
    only_bce = {"beta": 0.0, "gamma": 0.0}
    torch.testing.assert_close(hybrid_loss(x, y, mask=mask, reduction="none", **only_bce), bce)
    uniform = inverse_frequency_weights(torch.full((6,), 7))
    torch.testing.assert_close(uniform, torch.ones(6))
    torch.testing.assert_close(
        hybrid_loss(x, y, mask=mask, class_weight=uniform.double(), alpha=2.5, **only_bce),
        2.5 * binary_cross_entropy(x, y, mask=mask),
    )
    w = torch.linspace(0.5, 3.0, 6, dtype=x.dtype)
    torch.testing.assert_close(
        hybrid_loss(x, y, mask=mask, class_weight=w, **only_bce),
        binary_cross_entropy(x, y, mask=mask, weight=w),
    )


def test_terms_are_switchable_and_add_up():
    x, y, mask = random_multilabel(7, 5)
    feats = torch.randn(7, 4, dtype=x.dtype)
    parts = [
        hybrid_loss(x, y, mask=mask, features=feats, alpha=a, beta=b, gamma=g, reduction="none")
        for a, b, g in ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    ]
    assert all((part != 0).any() for part in parts)
    mixed = hybrid_loss(
        x, y, mask=mask, features=feats, alpha=0.5, beta=3.0, gamma=0.2, reduction="none"
    )
    torch.testing.assert_close(mixed, 0.5 * parts[0] + 3.0 * parts[1] + 0.2 * parts[2])
    # the batch-level correlation term is the same for every sample: "mean" is the loss itself
    assert torch.allclose(parts[1], parts[1][0].expand(7))


def test_correlation_term_vanishes_when_predictions_reproduce_it():
    x, y, _ = random_multilabel(9, 5)
    p = torch.sigmoid(x)
    reproduced = p.T @ p / 9
    xg = x.clone().requires_grad_(True)
    out = hybrid_loss(xg, y, correlation=reproduced, alpha=0.0, gamma=0.0)
    out.backward()
    assert out.abs() < 1e-15 and xg.grad.abs().max() < 1e-15
    # without a target matrix the batch's own label co-occurrence is the target
    own = label_correlation_from_labels(y).double()
    torch.testing.assert_close(
        hybrid_loss(x, y, alpha=0.0, gamma=0.0),
        hybrid_loss(x, y, correlation=own, alpha=0.0, gamma=0.0),
    )
    assert hybrid_loss(torch.where(y > 0, 60.0, -60.0).double(), y, alpha=0.0, gamma=0.0) < 1e-20


def test_inverse_frequency_and_correlation_helpers():
    counts = torch.tensor([100, 10, 1, 0, 40])
    w = inverse_frequency_weights(counts)
    scaled = w * counts.clamp_min(1)
    torch.testing.assert_close(scaled, scaled[0].expand(5))
    assert w[3] == w[2]  # a label never seen is treated as seen once
    y = (torch.rand(20, 4, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    torch.testing.assert_close(label_correlation(y.T @ y, 20), label_correlation_from_labels(y))
    torch.testing.assert_close(torch.diag(label_correlation_from_labels(y)), y.mean(0))


def test_contrastive_term():
    x, y, _ = random_multilabel(6, 5)
    feats = torch.randn(6, 3, dtype=x.dtype)
    con = hybrid_loss(x, y, features=feats, alpha=0.0, beta=0.0, gamma=1.0, reduction="none")
    torch.testing.assert_close(
        con,
        hybrid_loss(x, y, features=7 * feats, alpha=0.0, beta=0.0, gamma=1.0, reduction="none"),
    )
    assert (con > 0).all()
    alone = y.clone()
    alone[0] = 0  # an anchor with no positive label shares nothing: 0
    out = hybrid_loss(x, alone, features=feats, alpha=0.0, beta=0.0, gamma=1.0, reduction="none")
    assert out[0] == 0
    # one sample: no pairs, no contrastive term
    assert hybrid_loss(x[:1], y[:1], alpha=0.0, beta=0.0, gamma=1.0) == 0
    # features get a gradient; the bound log(N - 1) when every sample is a positive of each other
    fg = feats.clone().requires_grad_(True)
    hybrid_loss(x, torch.ones_like(y), features=fg, alpha=0.0, beta=0.0, gamma=1.0).backward()
    assert torch.isfinite(fg.grad).all() and fg.grad.abs().sum() > 0
    same = torch.ones(6, 3, dtype=x.dtype)
    torch.testing.assert_close(
        hybrid_loss(x, torch.ones_like(y), features=same, alpha=0.0, beta=0.0, gamma=1.0),
        torch.tensor(math.log(5), dtype=x.dtype),
    )


def test_module_from_arena_context():
    x, y, mask = random_multilabel(8, 5)
    train = (torch.rand(50, 5, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    counts = train.sum(0).long()
    module = HybridLoss(class_counts=counts, label_cooccurrence=train.T @ train, num_samples=50)
    assert set(dict(module.named_buffers())) == {"class_weight", "correlation"}
    torch.testing.assert_close(
        module(x, y, mask),
        hybrid_loss(
            x,
            y,
            mask=mask,
            class_weight=inverse_frequency_weights(counts).double(),
            correlation=label_correlation_from_labels(train).double(),
        ),
    )
    plain = HybridLoss(reduction="sum")
    torch.testing.assert_close(plain(x, y, mask), hybrid_loss(x, y, mask=mask, reduction="sum"))
    with pytest.raises(ValueError, match="num_samples"):
        HybridLoss(label_cooccurrence=train.T @ train)
    with pytest.raises(ValueError, match="label"):
        HybridLoss(class_counts=counts[:3], label_cooccurrence=train.T @ train, num_samples=50)


def test_contract():
    x, y, mask = random_multilabel()
    feats = torch.randn(6, 3, dtype=x.dtype)
    check_reductions(hybrid_loss, x, y)
    check_reductions(hybrid_loss, x, y, mask=mask, features=feats)
    check_gradcheck(hybrid_loss, x, y, mask=mask, temperature=0.5)
    fg = feats.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: hybrid_loss(x, y, mask=mask, features=f, gamma=1.0, reduction="sum"), (fg,)
    )
    check_mask_zero_grad(hybrid_loss, x, y, mask)
    # logits of magnitude 30 saturate the sigmoids the correlation and contrastive terms use
    check_half_precision(hybrid_loss, y.float())
    check_half_precision(hybrid_loss, y.float(), magnitude=3.0)
    check_bad_inputs(hybrid_loss)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"beta": -1.0}, "beta"),
        ({"gamma": -0.1}, "gamma"),
        ({"temperature": 0.0}, "temperature"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_hyperparameters(kw, name):
    x, y, _ = random_multilabel()
    with pytest.raises(ValueError, match=name):
        hybrid_loss(x, y, **kw)
    with pytest.raises(ValueError, match=name):
        HybridLoss(**kw)


def test_bad_context_tensors():
    x, y, _ = random_multilabel()
    with pytest.raises(ValueError, match="class_weight"):
        hybrid_loss(x, y, class_weight=torch.ones(3, dtype=x.dtype))
    with pytest.raises(ValueError, match="correlation"):
        hybrid_loss(x, y, correlation=torch.ones(5, 4, dtype=x.dtype))
    with pytest.raises(ValueError, match="correlation"):
        hybrid_loss(x, y, correlation=torch.full((5, 5), math.nan, dtype=x.dtype))
    with pytest.raises(ValueError, match="features"):
        hybrid_loss(x, y, features=torch.ones(5, 3, dtype=x.dtype))
    with pytest.raises(ValueError, match="class_counts"):
        inverse_frequency_weights(torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="num_samples"):
        label_correlation(torch.ones(3, 3), 0)
    with pytest.raises(ValueError, match="cooccurrence"):
        label_correlation(torch.full((3, 3), 5.0), 2)
    with pytest.raises(ValueError, match="labels"):
        label_correlation_from_labels(torch.full((3, 3), 0.5))


def test_pairs_never_known_together_are_left_out():
    x, y, mask = random_multilabel(6, 5)
    mask[:, 2] = ~mask[:, 1]  # labels 1 and 2 are never known in the same sample
    assert ((mask[:, 1] & mask[:, 2]).sum() == 0) and mask[:, 1].any() and mask[:, 2].any()
    corr = torch.full((5, 5), 0.3, dtype=x.dtype)
    out = hybrid_loss(x, y, mask=mask, correlation=corr, alpha=0.0, gamma=0.0, reduction="none")
    ref = slow_hybrid(x, y, mask, torch.ones(5), corr, None, 0.0, 1.0, 0.0, 1.0)
    torch.testing.assert_close(out, ref)
    # the left-out pair's target entry does not matter
    corr[1, 2] = corr[2, 1] = 5.0
    torch.testing.assert_close(
        hybrid_loss(x, y, mask=mask, correlation=corr, alpha=0.0, gamma=0.0, reduction="none"),
        out,
    )
