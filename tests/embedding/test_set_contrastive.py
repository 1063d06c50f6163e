"""Set-level SupCon (FACILE, paper 40): slow reference, set pooling properties, reduction to
instance SupCon / NT-Xent, gradcheck, half precision, bad inputs, reductions, registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losskit import catalog
from losskit.embedding.set_contrastive import SetSupConLoss, pool_sets, set_supcon_loss
from losskit.embedding.supcon import supcon_loss
from tests.contract import check_matches_reference


def sets(s=6, k=3, d=4, *, dtype=torch.float64, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(s, k, d, generator=g).to(dtype)
    a = torch.randn(s, k, generator=g).to(dtype)
    return x, torch.arange(s) % classes, a


def slow_pool(members, pooling, logits=None):
    """One set's vector from the list of its instance vectors."""
    if pooling == "mean":
        return sum(members) / len(members)
    if pooling == "max":
        return torch.stack(members).max(dim=0).values
    w = [torch.exp(a) for a in logits]
    return sum(wi * m for wi, m in zip(w, members, strict=True)) / sum(w)


def slow_set_supcon(x, idx, labels, t, pooling="mean", logits=None, ref=None, ref_y=None):
    """Loop reference: pool each set, then Khosla et al.'s L_out over the sets."""
    z = []
    for s in range(len(labels)):
        members = [x[i] for i in range(len(idx)) if idx[i] == s]
        lg = None if logits is None else [logits[i] for i in range(len(idx)) if idx[i] == s]
        z.append(slow_pool(members, pooling, lg))
    own = ref is None
    cand = z if own else list(ref)
    cand_y = labels if own else ref_y
    out = []
    for s, zs in enumerate(z):
        zs = zs / zs.norm()
        idxs = [a for a in range(len(cand)) if not (own and a == s)]
        sim = {a: torch.dot(zs, cand[a] / cand[a].norm()) / t for a in idxs}
        log_z = torch.log(sum(torch.exp(v) for v in sim.values()))
        terms = [log_z - sim[p] for p in idxs if cand_y[p] == labels[s]]
        out.append(sum(terms) / len(terms) if terms else zs.sum() * 0)
    return torch.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_matches_slow_reference_ragged_sets(pooling):
    g = torch.Generator().manual_seed(1)
    idx = torch.tensor([0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 3, 0])
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    a = torch.randn(12, generator=g, dtype=torch.float64)
    if pooling == "attention":
        check_matches_reference(
            lambda z, w: set_supcon_loss(
                z, labels, set_index=idx, pooling=pooling, attention_logits=w,
                temperature=0.3, reduction="none",
            ),
            lambda z, w: slow_set_supcon(z, idx, labels, 0.3, pooling, w),
            x, a,
        )  # fmt: skip
    else:
        check_matches_reference(
            lambda z: set_supcon_loss(
                z, labels, set_index=idx, pooling=pooling, temperature=0.3, reduction="none"
            ),
            lambda z: slow_set_supcon(z, idx, labels, 0.3, pooling),
            x,
        )


def test_matches_slow_reference_with_reference_sets():
    x, y, _ = sets()
    g = torch.Generator().manual_seed(2)
    r = torch.randn(5, 4, generator=g, dtype=torch.float64)
    ry = torch.tensor([0, 1, 2, 2, 1])
    idx = torch.arange(6).repeat_interleave(3)
    check_matches_reference(
        lambda z, q: set_supcon_loss(z, y, ref_embeddings=q, ref_labels=ry, reduction="none"),
        lambda z, q: slow_set_supcon(z.reshape(18, 4), idx, y, 0.07, ref=q, ref_y=ry),
        x,
        r,
    )


def test_dense_and_indexed_forms_agree():
    x, y, a = sets(5, 4)
    idx = torch.arange(5).repeat_interleave(4)
    for pooling, logits in (("mean", None), ("max", None), ("attention", a)):
        dense = set_supcon_loss(x, y, pooling=pooling, attention_logits=logits, reduction="none")
        flat = set_supcon_loss(
            x.reshape(20, 4), y, set_index=idx, pooling=pooling,
            attention_logits=None if logits is None else logits.reshape(20), reduction="none",
        )  # fmt: skip
        torch.testing.assert_close(dense, flat)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_permutation_invariant_within_sets(pooling):
    x, y, a = sets(6, 5)
    logits = a if pooling == "attention" else None
    base = set_supcon_loss(x, y, pooling=pooling, attention_logits=logits, reduction="none")
    g = torch.Generator().manual_seed(3)
    perm = torch.stack([torch.randperm(5, generator=g) for _ in range(6)])
    xp = torch.gather(x, 1, perm[:, :, None].expand_as(x))
    lp = None if logits is None else torch.gather(a, 1, perm)
    shuffled = set_supcon_loss(xp, y, pooling=pooling, attention_logits=lp, reduction="none")
    torch.testing.assert_close(shuffled, base)
    # the flat form does not care about the order of the rows either
    idx = torch.arange(6).repeat_interleave(5)
    rows = torch.randperm(30, generator=g)
    flat = set_supcon_loss(
        x.reshape(30, 4)[rows], y, set_index=idx[rows], pooling=pooling,
        attention_logits=None if logits is None else a.reshape(30)[rows], reduction="none",
    )  # fmt: skip
    torch.testing.assert_close(flat, base)


def test_singleton_sets_are_instance_supcon():
    x, y, a = sets(8, 1, seed=4)
    for pooling, logits in (("mean", None), ("max", None), ("attention", a)):
        torch.testing.assert_close(
            set_supcon_loss(x, y, pooling=pooling, attention_logits=logits, temperature=0.2),
            supcon_loss(x[:, 0], y, temperature=0.2),
        )


def test_pooling_values():
    x, _, a = sets(4, 3)
    torch.testing.assert_close(pool_sets(x), x.mean(1))
    torch.testing.assert_close(pool_sets(x, pooling="max"), x.amax(1))
    w = torch.softmax(a, dim=1)[:, :, None]
    torch.testing.assert_close(
        pool_sets(x, pooling="attention", attention_logits=a), (w * x).sum(1)
    )
    # equal attention scores are mean pooling; one dominant score picks that instance
    torch.testing.assert_close(
        pool_sets(x, pooling="attention", attention_logits=torch.zeros_like(a)), x.mean(1)
    )
    big = torch.zeros_like(a)
    big[:, 1] = 1e4
    torch.testing.assert_close(pool_sets(x, pooling="attention", attention_logits=big), x[:, 1])


def test_two_views_distinct_labels_is_nt_xent():
    x1, _, _ = sets(5, 3, seed=5)
    x2, _, _ = sets(5, 3, seed=6)
    both = torch.cat([x1, x2])
    pid = torch.cat([torch.arange(5), torch.arange(5)])
    z = F.normalize(both.mean(1), dim=1)
    logits = (z @ z.T / 0.5).masked_fill(torch.eye(10, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(5, 10), torch.arange(5)])
    torch.testing.assert_close(
        set_supcon_loss(both, pid, temperature=0.5, reduction="none"),
        F.cross_entropy(logits, partner, reduction="none"),
    )


def test_candidate_mask_removes_sets():
    x, y, _ = sets(6, 2)
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[:, 3] = False
    xg = x.clone().requires_grad_(True)
    out = set_supcon_loss(xg, y, candidate_mask=mask, reduction="none")
    keep = torch.tensor([0, 1, 2, 4, 5])
    expected = set_supcon_loss(x[keep], y[keep], reduction="none")
    torch.testing.assert_close(out[keep], expected)
    out[keep].sum().backward()
    assert (xg.grad[3] == 0).all()


def test_gradcheck():
    x, y, a = sets(5, 3, 3)
    xg = x.clone().requires_grad_(True)
    ag = a.clone().requires_grad_(True)
    for pooling in ("mean", "max"):
        assert torch.autograd.gradcheck(
            lambda z, p=pooling: set_supcon_loss(z, y, pooling=p, reduction="sum"), (xg,)
        )
    assert torch.autograd.gradcheck(
        lambda z, w: set_supcon_loss(
            z, y, pooling="attention", attention_logits=w, temperature=0.5, reduction="sum"
        ),
        (xg, ag),
    )


def test_reductions_and_sets_without_positive():
    x, _, _ = sets(5, 3)
    y = torch.tensor([0, 0, 1, 2, 2])
    none = set_supcon_loss(x, y, reduction="none")
    assert none.shape == (5,) and none[2] == 0
    torch.testing.assert_close(set_supcon_loss(x, y, reduction="sum"), none.sum())
    keep = torch.arange(5) != 2
    torch.testing.assert_close(set_supcon_loss(x, y), none[keep].mean())
    xg = x.clone().requires_grad_(True)
    out = set_supcon_loss(xg, torch.arange(5))  # all labels distinct: no positive anywhere
    out.backward()
    assert out == 0 and (xg.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x, y, a = sets(8, 4, 16, dtype=torch.float32, seed=7, classes=3)
    for pooling, logits in (("mean", None), ("attention", a)):
        xh = (10 * x).to(dtype).requires_grad_(True)
        lh = None if logits is None else logits.to(dtype)
        out = set_supcon_loss(xh, y, pooling=pooling, attention_logits=lh, reduction="none")
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = set_supcon_loss(
            xh.detach().float(), y, pooling=pooling,
            attention_logits=None if lh is None else lh.float(), reduction="none",
        )  # fmt: skip
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
        out.sum().backward()
        assert torch.isfinite(xh.grad).all()


def test_bad_inputs():
    x, y, a = sets(4, 3, dtype=torch.float32)
    flat, idx = x.reshape(12, 4), torch.arange(4).repeat_interleave(3)
    cases = [
        ((x[0, 0], y), {}, "instance_embeddings"),
        ((x.long(), y), {}, "instance_embeddings"),
        ((x * float("nan"), y), {}, "instance_embeddings"),
        ((x[:, :0], y), {}, "instance_embeddings"),
        ((x, y[:3]), {}, "set_labels"),
        ((x, y.float()), {}, "set_labels"),
        ((x, y[:, None]), {}, "set_labels"),
        ((flat, y), {"set_index": idx[:5]}, "set_index"),
        ((flat, y), {"set_index": idx.float()}, "set_index"),
        ((flat, y), {"set_index": idx + 1}, "set_index"),
        ((flat, y), {"set_index": idx.clamp_max(2)}, "set_index"),  # set 3 left empty
        ((x, y), {"pooling": "sum"}, "pooling"),
        ((x, y), {"pooling": "attention"}, "attention_logits"),
        ((x, y), {"attention_logits": a}, "attention_logits"),
        ((x, y), {"pooling": "attention", "attention_logits": a[:, :2]}, "attention_logits"),
        ((x, y), {"pooling": "attention", "attention_logits": a / 0}, "attention_logits"),
        ((x, y), {"ref_embeddings": x[:, 0]}, "ref_labels"),
        ((x, y), {"ref_embeddings": x[:, 0, :2], "ref_labels": y}, "ref_embeddings"),
        ((x, y), {"candidate_mask": torch.ones(4, 3, dtype=torch.bool)}, "candidate_mask"),
        ((x, y), {"temperature": 0.0}, "temperature"),
        ((x, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            set_supcon_loss(*args, **kw)
    with pytest.raises(ValueError, match="pooling"):
        SetSupConLoss(pooling="median")
    with pytest.raises(ValueError, match="temperature"):
        SetSupConLoss(temperature=-1.0)


def test_module_and_registry():
    x, y, a = sets()
    loss = SetSupConLoss(0.2, pooling="attention", reduction="none")
    torch.testing.assert_close(
        loss(x, y, attention_logits=a),
        set_supcon_loss(x, y, pooling="attention", attention_logits=a, temperature=0.2,
                        reduction="none"),
    )  # fmt: skip
    assert "pooling='attention'" in repr(loss)
    (entry,) = [e for e in catalog(family="embedding") if e.name == "set_supcon"]
    assert entry.module is SetSupConLoss and entry.function is set_supcon_loss
    assert entry.papers == (40,)
    built = entry.build()
    assert built.temperature == 0.07 and built.pooling == "mean"
