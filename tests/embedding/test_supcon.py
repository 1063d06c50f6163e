"""SupCon (L_out): slow reference, reduction to InfoNCE / NT-Xent, gradcheck, half precision,
bad inputs, reductions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding import SupConLoss, info_nce_loss, supcon_loss
from tests.contract import check_gradcheck, check_matches_reference, check_reductions


def batch(n=8, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.arange(n) % classes
    return x, y


def slow_supcon(x, y, t, ref=None, ref_y=None):
    """Loop reference of Khosla et al. eq. 2 (L_out), cosine similarities."""
    self_excluded = ref is None
    if ref is None:
        ref, ref_y = x, y
    out = []
    for i in range(x.shape[0]):
        zi = x[i] / x[i].norm()
        cand = [a for a in range(ref.shape[0]) if not (self_excluded and a == i)]
        s = {a: torch.dot(zi, ref[a] / ref[a].norm()) / t for a in cand}
        log_z = torch.log(sum(torch.exp(v) for v in s.values()))
        terms = [log_z - s[p] for p in cand if ref_y[p] == y[i]]
        out.append(sum(terms) / len(terms) if terms else x.new_zeros(()) * x.sum())
    return torch.stack(out)


def test_matches_slow_reference():
    x, y = batch()
    check_matches_reference(
        lambda a: supcon_loss(a, y, temperature=0.3, reduction="none"),
        lambda a: slow_supcon(a, y, 0.3),
        x,
    )
    r, ry = batch(6, seed=1, classes=4)
    check_matches_reference(
        lambda a, b: supcon_loss(a, y, ref_embeddings=b, ref_labels=ry, reduction="none"),
        lambda a, b: slow_supcon(a, y, 0.1, b, ry),
        x,
        r,
    )


def test_one_positive_equals_info_nce():
    z1, _ = batch(5, seed=2)
    z2, _ = batch(5, seed=3)
    lab = torch.arange(5)
    torch.testing.assert_close(
        supcon_loss(z1, lab, ref_embeddings=z2, ref_labels=lab, temperature=0.2, reduction="none"),
        info_nce_loss(z1, z2, temperature=0.2, reduction="none"),
    )
    # two views, labels = pair ids: NT-Xent (self masked out of the denominator)
    z = torch.cat([z1, z2])
    pid = torch.cat([lab, lab])
    logits = F.normalize(z, dim=1) @ F.normalize(z, dim=1).T / 0.5
    logits = logits.masked_fill(torch.eye(10, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(5, 10), torch.arange(5)])
    torch.testing.assert_close(
        supcon_loss(z, pid, temperature=0.5, reduction="none"),
        F.cross_entropy(logits, partner, reduction="none"),
    )


def test_anchor_without_positive_drops_out():
    x, _ = batch(5)
    y = torch.tensor([0, 0, 1, 2, 2])
    xg = x.clone().requires_grad_(True)
    none = supcon_loss(xg, y, reduction="none")
    assert none[2] == 0
    keep = torch.arange(5) != 2
    torch.testing.assert_close(supcon_loss(x, y), none[keep].mean())
    torch.testing.assert_close(supcon_loss(x, y, reduction="sum"), none.sum())
    none.sum().backward()
    assert torch.isfinite(xg.grad).all()
    out = supcon_loss(xg[:1], y[:1])  # one sample: no candidate, no positive
    assert out == 0 and torch.isfinite(out)


def test_lower_temperature_concentrates_gradient_on_hardest_negative():
    x, _ = batch(8, 6, seed=4)
    x = F.normalize(x, dim=1)
    y = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    shares = []
    for t in (2.0, 0.5, 0.1, 0.03):
        ref = x.clone().requires_grad_(True)
        supcon_loss(
            x[:1], y[:1], ref_embeddings=ref, ref_labels=y, temperature=t, normalize=False
        ).backward()
        norms = ref.grad[2:].norm(dim=1)
        shares.append((norms[(x[0] @ x[2:].T).argmax()] / norms.sum()).item())
    assert all(a < b for a, b in zip(shares, shares[1:], strict=False)), shares


def test_gradcheck():
    x, y = batch(6, 3)
    check_gradcheck(lambda a, b, **kw: supcon_loss(a, b, temperature=0.5, **kw), x, y)
    r, ry = batch(4, 3, seed=5)
    check_gradcheck(
        lambda a, b, **kw: supcon_loss(b, y, ref_embeddings=a, ref_labels=ry, **kw), r, x
    )


def test_reductions():
    x, y = batch()
    check_reductions(lambda a, b, **kw: supcon_loss(a, b, **kw), x, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y = batch(12, 16, dtype=torch.float32, seed=1, classes=4)
    xh = (10 * x).to(dtype).requires_grad_(True)
    out = supcon_loss(xh, y, reduction="none")
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = supcon_loss(xh.detach().float(), y, reduction="none")
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, y = batch(4, 3, dtype=torch.float32)
    r, ry = batch(5, 3, dtype=torch.float32, seed=1)
    cases = [
        ((x[0], y), {}, "embeddings"),
        ((x.long(), y), {}, "embeddings"),
        ((x, y[:3]), {}, "labels"),
        ((x, y.float()), {}, "labels"),
        ((x, y.bool()), {}, "labels"),
        ((torch.full_like(x, float("nan")), y), {}, "embeddings"),
        ((x[:0], y[:0]), {}, "embeddings"),
        ((x, y), {"ref_embeddings": r}, "ref_labels"),
        ((x, y), {"ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"ref_embeddings": r[:, :2], "ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"ref_embeddings": r, "ref_labels": ry[:4]}, "ref_labels"),
        ((x, y), {"ref_embeddings": r, "ref_labels": ry.float()}, "ref_labels"),
        ((x, y), {"ref_embeddings": r * float("nan"), "ref_labels": ry}, "ref_embeddings"),
        ((x, y), {"temperature": 0.0}, "temperature"),
        ((x, y), {"temperature": float("nan")}, "temperature"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            supcon_loss(*args, **kw)
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=-0.1)


def test_module_and_registry():
    x, y = batch()
    torch.testing.assert_close(
        SupConLoss(0.2, reduction="none")(x, y),
        supcon_loss(x, y, temperature=0.2, reduction="none"),
    )
    (entry,) = [e for e in catalog(family="embedding") if e.name == "supcon"]
    assert entry.module is SupConLoss and entry.papers == ()
    assert entry.build().temperature == 0.1
