"""AMCL: slow loop reference (values and gradients in embeddings and temperatures), reduction to
SupCon / NT-Xent / InfoNCE with one head and a constant temperature, sum over heads, the top-k
form and its Gaussian likelihood-ratio limit, the regulariser's minimum, the learned
temperature map, gradcheck, half precision, bad inputs, reductions, module and registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.amcl import (
    AMCLLoss,
    MultiHeadProjection,
    PairTemperature,
    amcl_loss,
    temperature_regularizer,
)
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.supcon import supcon_loss
from tests.contract import check_matches_reference


def heads(h=2, n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(h, n, d, generator=g).to(dtype), torch.arange(n) % classes


def taus(h, n, m, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (0.05 + torch.rand(h, n, m, generator=g)).to(dtype)


def omega(t, d):
    return d / 2 * torch.log(t) + 1 / t


def slow_amcl(z, y, tau=None, beta=0.1, ref=None, ref_y=None, topk=None, t=0.1, mask=None):
    """Loop over anchors and heads of the per-anchor AMCL loss (cosine similarities)."""
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = z, y
    d = z.shape[2]
    out = []
    for i in range(z.shape[1]):
        total = z.sum() * 0
        for h in range(z.shape[0]):
            cand = [a for a in range(ref.shape[1]) if not (self_excluded and a == i)]
            cand = [a for a in cand if mask is None or mask[i, a]]
            pos = [a for a in cand if ref_y[a] == y[i]]
            if not pos:
                continue
            zi = z[h, i] / z[h, i].norm()
            s = {a: torch.dot(zi, ref[h, a] / ref[h, a].norm()) for a in cand}
            tt = {
                a: (torch.tensor(t, dtype=z.dtype) if tau is None else tau[h, i, a]) for a in cand
            }
            g = {a: s[a] / tt[a] - beta * omega(tt[a], d) for a in cand}
            if topk is None:
                log_z = torch.log(sum(torch.exp(v) for v in g.values()))
                total = total + sum(log_z - g[p] for p in pos) / len(pos)
            else:
                negs = sorted((a for a in cand if a not in pos), key=lambda a: -s[a].item())
                hard = negs[:topk]
                total = total - sum(g[p] for p in pos) / len(pos)
                if hard:
                    total = total + sum(g[a] for a in hard) / len(hard)
        out.append(total)
    return torch.stack(out)


def test_matches_slow_reference():
    z, y = heads(3, 8)
    tau = taus(3, 8, 8)
    check_matches_reference(
        lambda a, t: amcl_loss(a, y, temperatures=t, reduction="none"),
        lambda a, t: slow_amcl(a, y, t),
        z,
        tau,
    )
    r, ry = heads(3, 6, seed=2, classes=4)
    tau_r = taus(3, 8, 6, seed=3)
    check_matches_reference(
        lambda a, b, t: amcl_loss(
            a, y, ref_embeddings=b, ref_labels=ry, temperatures=t, beta=0.3, reduction="none"
        ),
        lambda a, b, t: slow_amcl(a, y, t, beta=0.3, ref=b, ref_y=ry),
        z,
        r,
        tau_r,
    )
    mask = torch.rand(8, 8, generator=torch.Generator().manual_seed(4)) > 0.3
    for k in (1, 3):
        check_matches_reference(
            lambda a, t, k=k: amcl_loss(
                a, y, temperatures=t, topk=k, candidate_mask=mask, reduction="none"
            ),
            lambda a, t, k=k: slow_amcl(a, y, t, topk=k, mask=mask),
            z,
            tau,
        )
    check_matches_reference(
        lambda a: amcl_loss(list(a), y, temperature=0.4, reduction="none"),
        lambda a: slow_amcl(a, y, t=0.4),
        z,
    )


@pytest.mark.parametrize("beta", [0.0, 0.1, 2.0])
def test_one_head_constant_temperature_is_supcon(beta):
    z, y = heads(1, 8)
    kw = {"temperature": 0.2, "reduction": "none"}
    expected = supcon_loss(z[0], y, **kw)
    torch.testing.assert_close(amcl_loss(z, y, beta=beta, **kw), expected)
    const = torch.full((1, 8, 8), 0.2, dtype=torch.float64)
    torch.testing.assert_close(
        amcl_loss(z, y, temperatures=const, beta=beta, reduction="none"), expected
    )
    # two views: NT-Xent on cat(z1, z2); query-key pairs: InfoNCE
    z1, z2 = heads(2, 5, seed=5)[0]
    two = torch.cat([z1, z2])[None]
    ids = torch.arange(5).repeat(2)
    torch.testing.assert_close(amcl_loss(two, ids, beta=beta), supcon_loss(two[0], ids))
    torch.testing.assert_close(
        amcl_loss(
            z1[None],
            torch.arange(5),
            ref_embeddings=z2[None],
            ref_labels=torch.arange(5),
            temperature=0.07,
            beta=beta,
            reduction="none",
        ),
        info_nce_loss(z1, z2, temperature=0.07, reduction="none"),
    )


def test_heads_are_summed():
    z, y = heads(2, 7)
    tau = taus(2, 7, 7)
    per_head = [
        amcl_loss(z[h : h + 1], y, temperatures=tau[h : h + 1], reduction="none") for h in (0, 1)
    ]
    torch.testing.assert_close(amcl_loss(z, y, temperatures=tau, reduction="none"), sum(per_head))
    dup = torch.stack([z[0], z[0], z[0]])
    torch.testing.assert_close(amcl_loss(dup, y), 3 * amcl_loss(z[:1], y))


def test_top1_is_the_gaussian_likelihood_ratio():
    z, _ = heads(1, 6, d=5, seed=7)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    tau = taus(1, 6, 6, seed=8)
    s = F.normalize(z[0], dim=1) @ F.normalize(z[0], dim=1).T
    p = torch.tensor([1, 0, 3, 2, 5, 4])
    n = s.masked_fill(y[:, None] == y[None, :], -2.0).argmax(dim=1)
    rows = torch.arange(6)
    sp, sn, tp, tn = s[rows, p], s[rows, n], tau[0, rows, p], tau[0, rows, n]
    expected = -sp / tp + sn / tn + 0.3 * (omega(tp, 5) - omega(tn, 5))
    out = amcl_loss(z, y, temperatures=tau, beta=0.3, topk=1, reduction="none")
    torch.testing.assert_close(out, expected)
    # with a constant temperature and no regulariser: the hard-negative margin (s- - s+)/T
    out = amcl_loss(z, y, temperature=0.5, beta=0.0, topk=1, reduction="none")
    torch.testing.assert_close(out, (sn - sp) / 0.5)


def test_regularizer_minimum_at_two_over_d():
    for d in (2, 16, 128):
        t = torch.tensor(2.0 / d, dtype=torch.float64, requires_grad=True)
        temperature_regularizer(t, d).backward()
        assert abs(t.grad.item()) < 1e-9
        grid = torch.tensor([1.0 / d, 1.5 / d, 3.0 / d, 8.0 / d], dtype=torch.float64)
        assert (temperature_regularizer(grid, d) > temperature_regularizer(t.detach(), d)).all()


def test_pair_temperature_map():
    torch.manual_seed(0)
    net = PairTemperature(4, 8, tau_min=1e-5, tau_max=2.0)
    z, _ = heads(2, 5, dtype=torch.float32)
    tau = net(z, z[:, :3])
    assert tau.shape == (2, 5, 3) and (tau >= 1e-5).all() and (tau <= 2.0).all()
    # higher pair score -> lower temperature
    a, c = net.phi(z), net.phi(z[:, :3])
    score = (a @ c.transpose(1, 2)).flatten()
    order = score.argsort()
    assert (tau.flatten()[order].diff() <= 1e-7).all()
    # a map that scores every pair 0 gives the midpoint: the module is then summed SupCon
    loss = AMCLLoss(4, beta=0.1, reduction="none")
    torch.nn.init.zeros_(loss.temperature.phi[2].weight)
    torch.nn.init.zeros_(loss.temperature.phi[2].bias)
    y = torch.tensor([0, 0, 1, 1, 2])
    t_mid = 1e-5 + (2.0 - 1e-5) / 2
    expected = sum(supcon_loss(z[h], y, temperature=t_mid, reduction="none") for h in (0, 1))
    torch.testing.assert_close(loss(z, y), expected)


def test_module_learns_temperatures_and_projection_heads():
    torch.manual_seed(1)
    proj = MultiHeadProjection(6, 4, num_heads=3, hidden_features=5)
    x = torch.randn(8, 6)
    out = proj(x)
    assert out.shape == (3, 8, 4)
    assert not torch.allclose(out[0], out[1])  # independent heads
    loss_fn = AMCLLoss(4, hidden_features=7)
    y = torch.arange(8) % 4
    loss = loss_fn(out, y)
    loss.backward()
    for p in list(loss_fn.parameters()) + list(proj.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert loss_fn.temperature.phi[0].weight.grad.abs().sum() > 0
    r = proj(torch.randn(5, 6))
    tau = loss_fn.temperature(F.normalize(out, dim=-1), F.normalize(r, dim=-1))
    ry = torch.arange(5) % 4
    torch.testing.assert_close(
        loss_fn(out, y, r, ry),
        amcl_loss(out, y, ref_embeddings=r, ref_labels=ry, temperatures=tau, dim=4),
    )


def test_anchor_without_positive_drops_out():
    z, _ = heads(2, 5)
    y = torch.tensor([0, 0, 1, 2, 2])
    zg = z.clone().requires_grad_(True)
    for k in (None, 2):
        none = amcl_loss(zg, y, topk=k, reduction="none")
        assert none[2] == 0
        torch.testing.assert_close(amcl_loss(z, y, topk=k), none[[0, 1, 3, 4]].mean())
    zg.grad = None
    out = amcl_loss(zg, torch.arange(5))
    out.backward()
    assert out == 0 and torch.equal(zg.grad, torch.zeros_like(z))


def test_gradcheck():
    z, y = heads(2, 5, 3, classes=2)
    tau = taus(2, 5, 5)
    for k in (None, 2):
        zg, tg = z.clone().requires_grad_(True), tau.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda a, t, k=k: amcl_loss(a, y, temperatures=t, topk=k, reduction="sum"), (zg, tg)
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    z, y = heads(3, 12, 16, dtype=torch.float32, seed=1, classes=4)
    tau = taus(3, 12, 12, dtype=torch.float32)
    zh = (10 * z).to(dtype).requires_grad_(True)
    for k in (None, 3):
        out = amcl_loss(zh, y, temperatures=tau.to(dtype), topk=k, reduction="none")
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = amcl_loss(
            zh.detach().float(), y, temperatures=tau.to(dtype).float(), topk=k, reduction="none"
        )
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=5e-2)
        out.sum().backward()
        assert torch.isfinite(zh.grad).all()
    out = AMCLLoss(16)(zh, y)
    assert out.dtype == dtype and torch.isfinite(out)


def test_bad_inputs():
    z, y = heads(2, 4, 3, dtype=torch.float32)
    r, ry = heads(2, 5, 3, dtype=torch.float32, seed=1)
    good_tau = taus(2, 4, 4, dtype=torch.float32)
    cases = [
        ((z[0], y), {}, "embeddings"),
        ((z[:0], y), {}, "embeddings"),
        (([z[0], z[1, :3]], y), {}, "embeddings"),
        ((torch.full_like(z, math.nan), y), {}, "embeddings"),
        ((z[:, :0], y[:0]), {}, "embeddings"),
        ((z, y[:3]), {}, "labels"),
        ((z, y.float()), {}, "labels"),
        ((z, y), {"ref_embeddings": r[:1], "ref_labels": ry}, "ref_embeddings"),
        ((z, y), {"ref_embeddings": r[:, :, :2], "ref_labels": ry}, "ref_embeddings"),
        ((z, y), {"ref_embeddings": r}, "ref_labels"),
        ((z, y), {"temperatures": good_tau[:, :, :3]}, "temperatures"),
        ((z, y), {"temperatures": -good_tau}, "temperatures"),
        ((z, y), {"temperatures": good_tau.clone().fill_(math.inf)}, "temperatures"),
        ((z, y), {"temperatures": torch.ones(2, 4, 4, dtype=torch.long)}, "temperatures"),
        ((z, y), {"temperature": 0.0}, "temperature"),
        ((z, y), {"beta": -0.1}, "beta"),
        ((z, y), {"dim": 0}, "dim"),
        ((z, y), {"topk": 0}, "topk"),
        ((z, y), {"candidate_mask": torch.ones(4, 5, dtype=torch.bool)}, "candidate_mask"),
        ((z, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            amcl_loss(*args, **kw)
    loss = AMCLLoss(3)
    for args, name in [
        ((z[:, :, :2], y), "embeddings"),
        ((z, y, r[:, :, :2], ry), "ref_embeddings"),
        ((torch.full_like(z, math.nan), y), "embeddings"),
    ]:
        with pytest.raises(ValueError, match=name):
            loss(*args)
    with pytest.raises(ValueError, match="tau_max"):
        AMCLLoss(3, tau_min=1.0, tau_max=0.5)
    with pytest.raises(ValueError, match="beta"):
        AMCLLoss(3, beta=math.nan)
    with pytest.raises(ValueError, match="topk"):
        AMCLLoss(3, topk=-1)
    with pytest.raises(ValueError, match="reduction"):
        AMCLLoss(3, reduction="avg")
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadProjection(3, num_heads=0)


def test_reductions_and_registry():
    z, y = heads(2, 8)
    tau = taus(2, 8, 8)
    none = amcl_loss(z, y, temperatures=tau, reduction="none")
    assert none.shape == (8,)
    torch.testing.assert_close(amcl_loss(z, y, temperatures=tau, reduction="sum"), none.sum())
    torch.testing.assert_close(amcl_loss(z, y, temperatures=tau), none.mean())
    (entry,) = [e for e in catalog(family="embedding") if e.name == "amcl"]
    assert entry.module is AMCLLoss and entry.function is amcl_loss and entry.papers == (49,)
    m = entry.build(in_features=4)
    assert m.beta == 0.1 and m.topk is None and m.normalize and m.reduction == "mean"
    assert (m.temperature.tau_min, m.temperature.tau_max) == (1e-5, 2.0)
    assert torch.isfinite(m(z.float(), y))
