"""GroCo and its differentiable sorting network: dense-matrix sorting reference, 0-1 principle,
doubly stochastic and hard-sort limits, slow loop reference of the reference code's loss,
closed form for two elements, zero limit, invariance, gradcheck, half precision, bad inputs,
reductions, module and registry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.diffsort import RELAXATIONS, soft_sort, sorting_network
from losskit.embedding.groco import GroCoLoss, groco_loss, groco_views_loss
from tests.contract import check_gradcheck, check_matches_reference

SWAPS = {
    "logistic": lambda d, b: torch.sigmoid(b * d),
    "logistic_phi": lambda d, b: torch.sigmoid(b * d / (d.abs() + 1e-10) ** 0.25),
    "cauchy": lambda d, b: torch.atan(b * d) / math.pi + 0.5,
    "gaussian": lambda d, b: 0.5 * (1 + torch.erf(b * d / math.sqrt(2))),
}


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.arange(n) % classes


def slow_soft_sort(x, relaxation="cauchy", steepness=1.0):
    """Odd-even transposition network applied as one dense mixing matrix per layer."""
    n = x.shape[0]
    v, perm = x, torch.eye(n, dtype=x.dtype)
    for layer in range(n):
        mix = torch.eye(n, dtype=x.dtype)
        for a in range(layer % 2, n - 1, 2):
            al = SWAPS[relaxation](v[a + 1] - v[a], steepness)
            mix[a, a], mix[a + 1, a + 1], mix[a, a + 1], mix[a + 1, a] = al, al, 1 - al, 1 - al
        v, perm = v @ mix, perm @ mix
    return v, perm


def _bce_halves(perm, q):
    """The reference code's loss: mean of the BCE on the top-p and on the bottom-q mass."""
    t = torch.zeros(perm.shape[0], dtype=perm.dtype)
    t[q:] = 1
    top, bottom = perm[:, q:].sum(1), perm[:, :q].sum(1)
    b1 = -(t * torch.log(top) + (1 - t) * torch.log(1 - top)).mean()
    b2 = -((1 - t) * torch.log(bottom) + t * torch.log(1 - bottom)).mean()
    return (b1 + b2) / 2


def _value(t):
    return t.detach().item()


def slow_groco(x, y, k=10, steep=1.0, ref=None, ref_y=None, relaxation="cauchy", mask=None):
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    out = []
    for i in range(x.shape[0]):
        zi = x[i] / x[i].norm()
        cand = [a for a in range(ref.shape[0]) if not (self_excluded and a == i)]
        cand = [a for a in cand if mask is None or mask[i, a]]
        s = {a: torch.dot(zi, ref[a] / ref[a].norm()) for a in cand}
        pos = sorted((s[a] for a in cand if ref_y[a] == y[i]), key=_value)
        neg = sorted((s[a] for a in cand if ref_y[a] != y[i]), key=_value)
        neg = neg if k is None else neg[max(len(neg) - k, 0) :]
        if not pos or not neg:
            out.append(x.sum() * 0)
            continue
        _, perm = slow_soft_sort(torch.stack(neg + pos), relaxation, steep)
        out.append(_bce_halves(perm, len(neg)))
    return torch.stack(out)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_soft_sort_matches_dense_reference(relaxation):
    x = torch.randn(3, 6, dtype=torch.float64)
    for out in (0, 1):
        check_matches_reference(
            lambda v, out=out: soft_sort(v, relaxation=relaxation, steepness=2.0)[out],
            lambda v, out=out: torch.stack([slow_soft_sort(r, relaxation, 2.0)[out] for r in v]),
            x,
        )


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
def test_networks_sort_every_binary_input(network):
    # 0-1 principle: a comparator network sorts every input iff it sorts every 0/1 input
    for n in range(1, 10):
        for bits in itertools.product((0, 1), repeat=n):
            w = list(bits)
            for layer in sorting_network(network, n):
                assert len({i for pair in layer for i in pair}) == 2 * len(layer)
                for a, b in layer:
                    assert a < b
                    w[a], w[b] = min(w[a], w[b]), max(w[a], w[b])
            assert w == sorted(bits)


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_permutation_matrix_is_doubly_stochastic(network, relaxation):
    x = torch.randn(5, 7, dtype=torch.float64)
    s, perm = soft_sort(x, network=network, relaxation=relaxation, steepness=3.0)
    ones = torch.ones(5, 7, dtype=torch.float64)
    torch.testing.assert_close(perm.sum(dim=1), ones)
    torch.testing.assert_close(perm.sum(dim=2), ones)
    assert (perm >= 0).all() and (perm <= 1).all()
    torch.testing.assert_close(s, torch.einsum("bi,bir->br", x, perm))
    # relaxed sorting never leaves the range and keeps the total
    torch.testing.assert_close(s.sum(1), x.sum(1))


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_steep_relaxation_approaches_hard_sort(network, relaxation):
    g = torch.Generator().manual_seed(3)
    x = torch.randperm(6, generator=g).double().reshape(1, 6) + 0.1 * torch.rand(1, 6)
    hard = F.one_hot(x.argsort(dim=1).argsort(dim=1), 6).double()  # hard[b, i, rank of i]
    errors = []
    for beta in (1.0, 1e2, 1e4, 1e7):
        s, perm = soft_sort(x, network=network, relaxation=relaxation, steepness=beta)
        errors.append((perm - hard).abs().max().item())
    assert errors[0] > 1e-2 and errors[-1] < 1e-5
    assert all(a >= b for a, b in itertools.pairwise(errors))
    torch.testing.assert_close(s, x.sort(dim=1).values, atol=1e-5, rtol=0)


def test_matches_slow_reference():
    x, y = batch(9, classes=3)
    y[0] = 1  # unequal class sizes: anchors with 1, 2 and 3 positives
    check_matches_reference(
        lambda a: groco_loss(a, y, topk_negatives=4, reduction="none"),
        lambda a: slow_groco(a, y, k=4),
        x,
    )
    check_matches_reference(
        lambda a: groco_loss(a, y, topk_negatives=None, relaxation="logistic", steepness=3.0),
        lambda a: slow_groco(a, y, k=None, steep=3.0, relaxation="logistic").mean(),
        x,
    )
    r, ry = batch(7, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: groco_loss(a, y, ref_embeddings=b, ref_labels=ry, reduction="none"),
        lambda a, b: slow_groco(a, y, ref=b, ref_y=ry),
        x,
        r,
    )
    mask = torch.rand(9, 9, generator=torch.Generator().manual_seed(4)) > 0.3
    check_matches_reference(
        lambda a: groco_loss(a, y, topk_negatives=3, candidate_mask=mask, reduction="none"),
        lambda a: slow_groco(a, y, k=3, mask=mask),
        x,
    )


def slow_views(views, n_pos, k, detach):
    """The reference code's loop: anchor view, positives among the first ``n_pos`` views,
    negatives the ``k`` hardest other images of the anchor's view; mean over views."""
    v_count, n, _ = views.shape
    z = F.normalize(views, dim=-1)
    cand = z.detach() if detach else z
    per_view = []
    for v in range(v_count):
        losses = []
        for i in range(n):
            pos = sorted((z[v, i] @ cand[u, i] for u in range(n_pos) if u != v), key=_value)
            neg = sorted((z[v, i] @ cand[v, j] for j in range(n) if j != i), key=_value)[-k:]
            _, perm = slow_soft_sort(torch.stack(neg + pos))
            losses.append(_bce_halves(perm, len(neg)))
        per_view.append(torch.stack(losses).mean())
    return torch.stack(per_view).mean()


@pytest.mark.parametrize("stop_grad", [False, True])
def test_views_form_matches_reference_code_loop(stop_grad):
    views = torch.randn(3, 6, 4, dtype=torch.float64)  # 2 full crops + 1 small crop
    check_matches_reference(
        lambda v: groco_views_loss(v, num_positive_views=2, topk_negatives=3, stop_grad=stop_grad),
        lambda v: slow_views(v, 2, 3, stop_grad),
        views,
    )


def test_stop_grad_keeps_value_and_only_anchor_gradient():
    x, y = batch(6, classes=2)
    r, ry = batch(5, seed=2, classes=2)
    torch.testing.assert_close(groco_loss(x, y, stop_grad=True), groco_loss(x, y))
    xg, rg = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    groco_loss(xg, y, ref_embeddings=rg, ref_labels=ry, stop_grad=True).backward()
    assert rg.grad is None and xg.grad.abs().sum() > 0


def test_two_elements_are_the_pairwise_logistic_loss():
    x, _ = batch(6, seed=5)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    s = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
    s_pos = s[torch.arange(6), torch.tensor([1, 0, 3, 2, 5, 4])]
    s_neg = s.masked_fill(y[:, None] == y[None, :], -2.0).max(dim=1).values
    out = groco_loss(x, y, topk_negatives=1, relaxation="logistic", steepness=4.0, reduction="none")
    torch.testing.assert_close(out, F.softplus(-4.0 * (s_pos - s_neg)))


def test_near_zero_when_positives_far_above_negatives():
    g = torch.Generator().manual_seed(6)
    centres = torch.eye(3, 8, dtype=torch.float64)
    y = torch.arange(12) % 3
    noise = 0.05 * torch.randn(12, 8, generator=g, dtype=torch.float64)
    x = centres[y] + noise
    losses = [groco_loss(x, y, steepness=beta, relaxation="logistic") for beta in (1, 10, 1e3)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 1e-10
    # the monotonic Cauchy relaxation (the default) converges too, polynomially
    assert groco_loss(x, y, steepness=1e6) < 1e-5
    # a misordered batch is penalised: swap one sample into another cluster
    y_bad = y.clone()
    y_bad[0] = 1
    assert groco_loss(x, y_bad, steepness=1e3, relaxation="logistic") > 1.0


def test_invariant_to_candidate_order():
    x, y = batch(7, classes=3)
    r, ry = batch(9, seed=3, classes=3)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    kw = {"topk_negatives": 4, "reduction": "none"}
    torch.testing.assert_close(
        groco_loss(x, y, ref_embeddings=r[perm], ref_labels=ry[perm], **kw),
        groco_loss(x, y, ref_embeddings=r, ref_labels=ry, **kw),
    )


def test_anchor_without_positive_or_negative():
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 2, 2])
    xg = x.clone().requires_grad_(True)
    none = groco_loss(xg, y, reduction="none")
    assert none[2] == 0 and (none[[0, 1, 3, 4]] > 0).all()
    torch.testing.assert_close(groco_loss(x, y), none[[0, 1, 3, 4]].mean())
    none.sum().backward()
    assert torch.isfinite(xg.grad).all()
    # one class only: no negatives, every anchor sorted correctly, loss 0
    assert groco_loss(x, torch.zeros(5, dtype=torch.long)) == 0
    xg.grad = None
    out = groco_loss(xg, torch.arange(5))
    out.backward()
    assert out == 0 and torch.equal(xg.grad, torch.zeros_like(x))


def test_gradcheck():
    x, y = batch(6, 3, classes=2)
    check_gradcheck(lambda a, b, **kw: groco_loss(a, b, topk_negatives=2, **kw), x, y)
    check_gradcheck(
        lambda a, b, **kw: groco_loss(a, b, network="bitonic", relaxation="logistic", **kw), x, y
    )
    xs = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: soft_sort(v, network="bitonic")[1], (xs,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=4)
    xh = (10 * x).to(dtype).requires_grad_(True)
    out = groco_loss(xh, y, topk_negatives=5, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = groco_loss(xh.detach().float(), y, topk_negatives=5, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()
    s, perm = soft_sort(xh.detach()[:2])
    assert s.dtype == perm.dtype == dtype


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((x[0], y), {}, "embeddings"),
        ((x, y[:3]), {}, "labels"),
        ((x, y.float()), {}, "labels"),
        ((torch.full_like(x, float("nan")), y), {}, "embeddings"),
        ((x[:0], y[:0]), {}, "embeddings"),
        ((x, y), {"ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"ref_embeddings": r[:, :2], "ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"candidate_mask": torch.ones(4, 5, dtype=torch.bool)}, "candidate_mask"),
        ((x, y), {"topk_negatives": 0}, "topk_negatives"),
        ((x, y), {"topk_negatives": 2.5}, "topk_negatives"),
        ((x, y), {"steepness": 0.0}, "steepness"),
        ((x, y), {"steepness": float("inf")}, "steepness"),
        ((x, y), {"art_lambda": 1.0}, "art_lambda"),
        ((x, y), {"network": "bubble"}, "network"),
        ((x, y), {"relaxation": "step"}, "relaxation"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            groco_loss(*args, **kw)
    for bad, name in [(torch.randn(4, 3), "views"), (torch.full((2, 3, 4), float("inf")), "views")]:
        with pytest.raises(ValueError, match=name):
            groco_views_loss(bad)
    with pytest.raises(ValueError, match="num_positive_views"):
        groco_views_loss(torch.randn(2, 3, 4), num_positive_views=3)
    for bad in (torch.randn(3), torch.ones(2, 3, dtype=torch.long), torch.full((1, 3), math.nan)):
        with pytest.raises(ValueError, match="x"):
            soft_sort(bad)
    with pytest.raises(ValueError, match="steepness"):
        GroCoLoss(steepness=-1.0)
    with pytest.raises(ValueError, match="topk_negatives"):
        GroCoLoss(topk_negatives=-3)


def test_reductions_module_and_registry():
    x, y = batch()
    none = groco_loss(x, y, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(groco_loss(x, y, reduction="sum"), none.sum())
    torch.testing.assert_close(groco_loss(x, y), none.mean())
    kw = {"network": "bitonic", "relaxation": "gaussian", "steepness": 2.0, "stop_grad": True}
    torch.testing.assert_close(
        GroCoLoss(3, reduction="none", **kw)(x, y),
        groco_loss(x, y, topk_negatives=3, reduction="none", **kw),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "groco"]
    assert entry.module is GroCoLoss and entry.function is groco_loss and entry.papers == (33,)
    m = entry.build()
    assert (m.topk_negatives, m.network, m.relaxation, m.steepness) == (10, "odd_even", "cauchy", 1)
    assert not m.stop_grad and m.normalize and m.reduction == "mean"
    torch.testing.assert_close(m(x, y), groco_loss(x, y))
