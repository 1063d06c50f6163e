"""``candidate_mask``: removing a candidate by mask equals leaving it out of the reference
set, masked candidates get zero gradient, and bad masks are rejected."""

from __future__ import annotations

import pytest
import torch

from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.multi_similarity import multi_similarity_loss
from losskit.embedding.supcon import supcon_loss
from losskit.embedding.tcm import tcm_loss
from losskit.embedding.triplet import triplet_margin_loss

LABEL_LOSSES = {
    "supcon": lambda *a, **k: supcon_loss(*a, temperature=0.5, **k),
    "triplet": lambda *a, **k: triplet_margin_loss(*a, margin=0.5, **k),
    "multi_similarity": multi_similarity_loss,
    "tcm": lambda *a, **k: tcm_loss(*a, margin_plus=0.5, margin_minus=0.0, **k),
}


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    r = torch.randn(9, 4, generator=g, dtype=torch.float64)
    return x, torch.arange(6) % 3, r, torch.arange(9) % 3


@pytest.mark.parametrize("name", sorted(LABEL_LOSSES))
def test_mask_equals_smaller_reference_set(name):
    fn = LABEL_LOSSES[name]
    x, y, r, ry = _data()
    keep = torch.ones(9, dtype=torch.bool)
    keep[[1, 5]] = False  # drop one positive and one negative of some anchors, for all anchors
    mask = keep[None, :].expand(6, 9).clone()
    for reduction in ("none", "sum", "mean"):
        got = fn(x, y, ref_embeddings=r, ref_labels=ry, candidate_mask=mask, reduction=reduction)
        exp = fn(x, y, ref_embeddings=r[keep], ref_labels=ry[keep], reduction=reduction)
        torch.testing.assert_close(got, exp)


@pytest.mark.parametrize("name", sorted(LABEL_LOSSES))
def test_masked_candidates_get_no_gradient(name):
    fn = LABEL_LOSSES[name]
    x, y, r, ry = _data(1)
    r = r.requires_grad_()
    mask = torch.ones(6, 9, dtype=torch.bool)
    mask[:, 4] = False
    fn(x, y, ref_embeddings=r, ref_labels=ry, candidate_mask=mask).backward()
    assert torch.all(r.grad[4] == 0)
    assert r.grad.abs().sum() > 0


def test_per_anchor_mask_matches_loop():
    x, y, r, ry = _data(2)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(6, 9, generator=g) > 0.3
    got = supcon_loss(x, y, ref_embeddings=r, ref_labels=ry, candidate_mask=mask, reduction="none")
    for i in range(6):
        keep = mask[i]
        if not bool((ry[keep] == y[i]).any()):
            assert got[i] == 0
            continue
        exp = supcon_loss(x[i : i + 1], y[i : i + 1], ref_embeddings=r[keep], ref_labels=ry[keep])
        torch.testing.assert_close(got[i], exp)


def test_default_self_exclusion_is_kept():
    x, y, _, _ = _data()
    full = torch.ones(6, 6, dtype=torch.bool)
    torch.testing.assert_close(supcon_loss(x, y, candidate_mask=full), supcon_loss(x, y))


def test_info_nce_mask_removes_negatives():
    x, _, r, _ = _data()
    keys = r[:6]
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[0, 3] = False
    got = info_nce_loss(x, keys, candidate_mask=mask, temperature=0.5, reduction="none")
    exp0 = info_nce_loss(
        x[:1], keys[[0, 1, 2, 4, 5]], torch.tensor([0]), temperature=0.5, reduction="none"
    )
    torch.testing.assert_close(got[0], exp0[0])
    full = info_nce_loss(x, keys, temperature=0.5, reduction="none")
    torch.testing.assert_close(got[1:], full[1:])
    # masking a query's positive leaves it without one: 0, and out of the mean
    mask[2, 2] = False
    out = info_nce_loss(x, keys, candidate_mask=mask, temperature=0.5, reduction="none")
    assert out[2] == 0


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.ones(6, 9), "bool"),
        (torch.ones(6, 8, dtype=torch.bool), "shape"),
        ([[True] * 9] * 6, "bool"),
    ],
)
def test_bad_mask(mask, match):
    x, y, r, ry = _data()
    with pytest.raises(ValueError, match=f"candidate_mask.*{match}"):
        supcon_loss(x, y, ref_embeddings=r, ref_labels=ry, candidate_mask=mask)
