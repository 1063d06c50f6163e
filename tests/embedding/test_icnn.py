"""ICNN loss and score (paper 31): slow reference, the reference code's algorithm on regular
episodes, invariances, separated clusters, batch-level reduction, candidate mask, gradcheck,
half precision, bad inputs."""

from __future__ import annotations

import pytest
import torch

from losskit import catalog
from losskit.embedding.icnn import ICNNLoss, icnn_loss, icnn_score
from tests.contract import check_matches_reference


def batch(n=12, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype), torch.arange(n) % classes


def _mean(values, default):
    return torch.stack(values).mean() if values else torch.tensor(default, dtype=torch.float64)


def slow_icnn_score(x, y, k=4, window=None, eps=1e-6, ref=None, ref_y=None, mask=None):
    """The score from its definition, one anchor at a time."""
    window = k + 1 if window is None else window
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    same_terms, diff_rows, agree = [], [], []
    for i in range(x.shape[0]):
        cand = [
            a
            for a in range(ref.shape[0])
            if not (self_excluded and a == i) and (mask is None or bool(mask[i, a]))
        ]
        if not any(int(ref_y[a]) == int(y[i]) for a in cand):
            continue
        d = {a: torch.sqrt(((x[i] - ref[a]) ** 2).sum() + eps) for a in cand}
        order = sorted(cand, key=lambda a: float(d[a].detach()))
        near, win = order[: min(k, len(cand))], order[: min(window, len(cand))]
        same = [a for a in near if int(ref_y[a]) == int(y[i])]
        others = [d[a] for a in win if int(ref_y[a]) != int(y[i])]
        if others:
            nearest = torch.stack(others).min()
            r = {a: d[a] / nearest for a in near}
            top = torch.clamp(torch.stack(list(r.values())).max(), min=1.0)
            r = {a: v / top for a, v in r.items()}
        else:
            r = {a: d[a] * 0 for a in near}
        if same:
            same_terms.append(torch.stack([r[a] for a in same]).mean())
        diff_rows.append([d[a] for a in near if int(ref_y[a]) != int(y[i])])
        agree.append(len(same) / len(near))
    all_diff = [v for row in diff_rows for v in row]
    lam_same = 1 - _mean(same_terms, 0.0)
    if all_diff:
        top = torch.stack(all_diff).max()
        lam_diff = _mean([torch.stack(row).mean() / top for row in diff_rows if row], 1.0)
    else:
        lam_diff = torch.tensor(1.0, dtype=torch.float64)
    gamma = sum(agree) / len(agree)
    return ((lam_same + lam_diff) / 2 + gamma) / 2


def code_style_score(x, y, k=4, window=None):
    """The reference code's algorithm for a set scored against itself: the ``window + 1``
    nearest rows by topk, the first (the sample itself) dropped, the first ``k`` kept."""
    window = k + 1 if window is None else window
    dist = torch.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(dim=-1) + 1e-6)
    vals, idx = dist.topk(window + 1, largest=False)
    vals, idx = vals[:, 1:], idx[:, 1:]
    same = y[idx] == y[:, None]
    nearest = torch.where(same, torch.full_like(vals, float("inf")), vals).amin(dim=1)
    nd = vals[:, :k] / nearest[:, None]
    nd = nd / nd.amax(dim=1, keepdim=True).clamp_min(1)
    sk, dk = same[:, :k], ~same[:, :k]
    rows_s = sk.any(dim=1)
    lam_s = 1 - ((nd * sk).sum(dim=1)[rows_s] / sk.sum(dim=1)[rows_s]).mean()
    dd = vals[:, :k] * dk
    dd = dd / dd.max()
    rows_d = dk.any(dim=1)
    lam_d = (dd.sum(dim=1)[rows_d] / dk.sum(dim=1)[rows_d]).mean() if rows_d.any() else 1.0
    gamma = (sk.sum(dim=1) / k).double().mean()
    return ((lam_s + lam_d) / 2 + gamma) / 2


def _loss_per_anchor(score, x, y):
    """-log(score) broadcast to every anchor (all have a same-label candidate here)."""
    return -torch.log(score).expand(x.shape[0]).clone()


def test_matches_slow_reference():
    x, y = batch()
    check_matches_reference(
        lambda a: icnn_loss(a, y, reduction="none"),
        lambda a: _loss_per_anchor(slow_icnn_score(a, y), a, y),
        x,
    )
    check_matches_reference(
        lambda a: icnn_loss(a, y, k=2, window=6, reduction="none"),
        lambda a: _loss_per_anchor(slow_icnn_score(a, y, k=2, window=6), a, y),
        x,
    )
    r, ry = batch(10, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: icnn_loss(a, y, ref_embeddings=b, ref_labels=ry, k=3, reduction="none"),
        lambda a, b: _loss_per_anchor(slow_icnn_score(a, y, k=3, ref=b, ref_y=ry), a, y),
        x,
        r,
    )


def test_small_sets_clamp_k_per_anchor():
    x, y = batch(6, seed=2, classes=3)  # 5 candidates per anchor, k = 4 > 1 same-label each
    torch.testing.assert_close(icnn_score(x, y, k=4, window=8), slow_icnn_score(x, y, 4, 8))
    x, y = batch(4, seed=3, classes=2)  # 3 candidates < k
    torch.testing.assert_close(icnn_score(x, y, k=4), slow_icnn_score(x, y, 4))


def test_candidate_mask_matches_reference():
    x, y = batch(8, seed=4)
    r, ry = batch(14, seed=5, classes=4)
    g = torch.Generator().manual_seed(6)
    mask = torch.rand(8, 14, generator=g) > 0.3
    check_matches_reference(
        lambda a, b: icnn_loss(
            a, y, ref_embeddings=b, ref_labels=ry, candidate_mask=mask, reduction="none"
        ),
        lambda a, b: _loss_per_anchor(slow_icnn_score(a, y, ref=b, ref_y=ry, mask=mask), a, y),
        x,
        r,
    )
    full = torch.ones(8, 8, dtype=torch.bool)
    torch.testing.assert_close(icnn_loss(x, y, candidate_mask=full), icnn_loss(x, y))
    keep = torch.ones(14, dtype=torch.bool)
    keep[[0, 9]] = False
    rg = r.clone().requires_grad_(True)
    got = icnn_loss(x, y, ref_embeddings=rg, ref_labels=ry, candidate_mask=keep.expand(8, 14))
    torch.testing.assert_close(got, icnn_loss(x, y, ref_embeddings=r[keep], ref_labels=ry[keep]))
    got.backward()
    assert torch.all(rg.grad[~keep] == 0) and rg.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_reference_code_algorithm_on_episodes(seed):
    # 5-way support+query episode, 4 samples per class: every class has more than one sample
    x, y = batch(20, 8, seed=seed, classes=5)
    torch.testing.assert_close(icnn_score(x, y), code_style_score(x, y))
    torch.testing.assert_close(icnn_score(x, y, k=3, window=4), code_style_score(x, y, 3, 4))


def test_invariances():
    x, y = batch(15, 5, seed=7)
    base = icnn_score(x, y)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    torch.testing.assert_close(icnn_score(x @ q - 2.0, y), base)
    torch.testing.assert_close(icnn_score(3.0 * x, y, eps=0.0), icnn_score(x, y, eps=0.0))
    perm = torch.randperm(15)
    torch.testing.assert_close(icnn_score(x[perm], y[perm]), base)


def test_separated_clusters_score_near_one():
    g = torch.Generator().manual_seed(8)
    centres = 10 * torch.eye(3, dtype=torch.float64)
    y = torch.arange(18) % 3  # six per class: more than k = 4
    x = centres[y] + 0.01 * torch.randn(18, 3, generator=g, dtype=torch.float64)
    # the k + 1 = 5 nearest are the other class members: no other label in the window
    assert icnn_loss(x, y) == 0 and icnn_score(x, y) == 1
    # a window reaching the other classes measures the intra-class spread against them
    wide = icnn_loss(x, y, window=17)
    assert 0 < wide < 1e-2
    torch.testing.assert_close(wide, -torch.log(slow_icnn_score(x, y, window=17)))
    shuffled = y[torch.randperm(18, generator=g)]
    assert icnn_loss(x, shuffled) > 10 * icnn_loss(x, y)


def test_batch_level_reduction_and_score():
    x, _ = batch(7)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # anchors 5 and 6 have no same-label candidate
    none = icnn_loss(x, y, k=3, reduction="none")
    value = icnn_loss(x, y, k=3)
    assert torch.equal(none[5:], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(none[:5], value.expand(5))
    torch.testing.assert_close(icnn_loss(x, y, k=3, reduction="sum"), 5 * value)
    torch.testing.assert_close(icnn_score(x, y, k=3), torch.exp(-value))
    torch.testing.assert_close(icnn_score(x, y, k=3), slow_icnn_score(x, y, 3))
    xg = x.clone().requires_grad_(True)
    assert not icnn_score(xg, y).requires_grad


def test_no_anchor_gives_zero_and_nan_score():
    x, _ = batch(5)
    xg = x.clone().requires_grad_(True)
    distinct = torch.arange(5)
    out = icnn_loss(xg, distinct)
    out.backward()
    assert out == 0 and torch.all(xg.grad == 0)
    assert torch.equal(icnn_loss(x, distinct, reduction="none"), torch.zeros(5).double())
    assert torch.isnan(icnn_score(x, distinct))
    assert icnn_loss(x[:1], distinct[:1]) == 0  # one sample: no candidate at all


def test_gradcheck():
    x, y = batch(8, 3, classes=3)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: icnn_loss(a, y, k=3), (xg,))
    r, ry = batch(9, 3, seed=1, classes=3)
    rg = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: icnn_loss(a, y, ref_embeddings=b, ref_labels=ry, normalize=True), (xg, rg)
    )


def test_normalize_uses_unit_vectors():
    x, y = batch(12, 4, seed=9)
    unit = x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(icnn_loss(5 * x, y, normalize=True), icnn_loss(unit, y))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(16, 8, dtype=torch.float32, seed=1, classes=4)
    xh = (3 * x).to(dtype).requires_grad_(True)
    out = icnn_loss(xh, y, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = icnn_loss(xh.detach().float(), y, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()
    assert icnn_score(xh, y).dtype == dtype
    assert icnn_loss(x.double(), y).dtype == torch.float64


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((x[0], y), {}, "embeddings"),
        ((x.long(), y), {}, "embeddings"),
        ((x, y[:3]), {}, "labels"),
        ((x, y.float()), {}, "labels"),
        ((torch.full_like(x, float("inf")), y), {}, "embeddings"),
        ((x[:0], y[:0]), {}, "embeddings"),
        ((x, y), {"ref_embeddings": r}, "ref_labels"),
        ((x, y), {"ref_embeddings": r[:, :2], "ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"candidate_mask": torch.ones(4, 4)}, "candidate_mask"),
        ((x, y), {"k": 0}, "k"),
        ((x, y), {"k": 2.5}, "k"),
        ((x, y), {"k": True}, "k"),
        ((x, y), {"k": 4, "window": 3}, "window"),
        ((x, y), {"window": 5.0}, "window"),
        ((x, y), {"eps": -1.0}, "eps"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            icnn_loss(*args, **kw)
        if "reduction" not in kw:
            with pytest.raises(ValueError, match=name):
                icnn_score(*args, **kw)
    with pytest.raises(ValueError, match="k"):
        ICNNLoss(k=-1)
    with pytest.raises(ValueError, match="window"):
        ICNNLoss(k=4, window=2)
    with pytest.raises(ValueError, match="reduction"):
        ICNNLoss(reduction="avg")


def test_module_and_registry():
    x, y = batch()
    r, ry = batch(9, seed=1)
    mask = torch.ones(12, 9, dtype=torch.bool)
    mask[0, 2] = False
    torch.testing.assert_close(
        ICNNLoss(3, window=5, reduction="none")(x, y, r, ry, mask),
        icnn_loss(
            x,
            y,
            ref_embeddings=r,
            ref_labels=ry,
            k=3,
            window=5,
            candidate_mask=mask,
            reduction="none",
        ),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "icnn"]
    assert entry.module is ICNNLoss and entry.papers == (31,)
    built = entry.build()
    assert (built.k, built.window, built.eps, built.normalize) == (4, 5, 1e-6, False)
