"""gather_with_grad under 2 CPU ranks (gloo) against one process on the concatenated batch."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import losskit.distributed as ld
from losskit.distributed import gather_with_grad
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.supcon import supcon_loss
from losskit.embedding.tcm import tcm_loss

WORLD = 2
N, D = 8, 5  # global batch; each rank holds N // WORLD rows
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
UNEVEN = [3, 5]  # rows per rank for the uneven gather
TCM_MARGINS = {"margin_plus": 0.5, "margin_minus": 0.0}  # hard pairs on both sides


def _data():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(N, D, generator=g, dtype=torch.float64)
    k = torch.randn(N, D, generator=g, dtype=torch.float64)
    e = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(sum(UNEVEN), D, generator=g, dtype=torch.float64)
    return q, k, e, w


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        q, k, e, w = _data()
        n = N // WORLD
        sl = slice(rank * n, (rank + 1) * n)
        res = {}

        # InfoNCE: queries local, keys gathered, positives offset by rank * n
        q_loc = q[sl].clone().requires_grad_()
        k_loc = k[sl].clone().requires_grad_()
        keys = gather_with_grad(k_loc)
        loss = info_nce_loss(q_loc, keys, torch.arange(n) + rank * n, temperature=0.5)
        loss.backward()
        res["info"] = (loss.detach(), q_loc.grad, k_loc.grad, keys.detach())

        # SupCon: anchors local, ref_embeddings / ref_labels gathered (self included)
        for reduction in ("mean", "sum"):
            e_loc = e[sl].clone().requires_grad_()
            ref_y = gather_with_grad(LABELS[sl])
            loss = supcon_loss(
                e_loc,
                LABELS[sl],
                ref_embeddings=gather_with_grad(e_loc),
                ref_labels=ref_y,
                temperature=0.3,
                reduction=reduction,
            )
            loss.backward()
            res[f"supcon_{reduction}"] = (loss.detach(), e_loc.grad, ref_y)

        # TCM: batch-level counts summed over ranks (sync_counts)
        for reduction in ("mean", "sum", "none"):
            e_loc = e[sl].clone().requires_grad_()
            loss = tcm_loss(
                e_loc,
                LABELS[sl],
                ref_embeddings=gather_with_grad(e_loc),
                ref_labels=gather_with_grad(LABELS[sl]),
                reduction=reduction,
                sync_counts=True,
                **TCM_MARGINS,
            )
            loss.sum().backward()
            res[f"tcm_{reduction}"] = (loss.detach(), e_loc.grad)

        # uneven row counts: order and gradient routing
        start = sum(UNEVEN[:rank])
        x_loc = torch.arange(start, start + UNEVEN[rank], dtype=torch.float64)
        x_loc = x_loc[:, None].repeat(1, D).requires_grad_()
        gathered = gather_with_grad(x_loc)
        (gathered * w).sum().backward()
        res["uneven"] = (gathered.detach(), x_loc.grad)

        torch.save(res, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _slices():
    n = N // WORLD
    return [slice(r * n, (r + 1) * n) for r in range(WORLD)]


def test_gather_keeps_rank_order(ranks):
    q, k, e, w = _data()
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["info"][3], k)  # rank r's rows at r*n..(r+1)*n
        assert torch.equal(ranks[r]["supcon_mean"][2], LABELS)
        full = torch.arange(sum(UNEVEN), dtype=torch.float64)[:, None].repeat(1, D)
        torch.testing.assert_close(ranks[r]["uneven"][0], full)
    # every rank's loss (gathered * w).sum() reaches each row: gradient summed over ranks
    starts = [0, UNEVEN[0]]
    for r in range(WORLD):
        exp = WORLD * w[starts[r] : starts[r] + UNEVEN[r]]
        torch.testing.assert_close(ranks[r]["uneven"][1], exp)


def test_info_nce_matches_single_process(ranks):
    q, k, _, _ = _data()
    q1, k1 = q.clone().requires_grad_(), k.clone().requires_grad_()
    ref = info_nce_loss(q1, k1, temperature=0.5)
    ref.backward()
    losses = torch.stack([ranks[r]["info"][0] for r in range(WORLD)])
    torch.testing.assert_close(losses.mean(), ref.detach())
    for r, sl in enumerate(_slices()):  # mean reduction, equal counts: W x single-process
        torch.testing.assert_close(ranks[r]["info"][1], WORLD * q1.grad[sl])
        torch.testing.assert_close(ranks[r]["info"][2], WORLD * k1.grad[sl])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_supcon_matches_single_process(ranks, reduction):
    _, _, e, _ = _data()
    e1 = e.clone().requires_grad_()
    # the same candidate set: the whole batch, the anchor's own entry included
    ref = supcon_loss(
        e1, LABELS, ref_embeddings=e1, ref_labels=LABELS, temperature=0.3, reduction=reduction
    )
    ref.backward()
    key = f"supcon_{reduction}"
    losses = torch.stack([ranks[r][key][0] for r in range(WORLD)])
    scale = WORLD if reduction == "mean" else 1
    torch.testing.assert_close(losses.sum() / scale, ref.detach())
    for r, sl in enumerate(_slices()):
        torch.testing.assert_close(ranks[r][key][1], scale * e1.grad[sl])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tcm_matches_single_process(ranks, reduction):
    _, _, e, _ = _data()
    e1 = e.clone().requires_grad_()
    ref = tcm_loss(
        e1, LABELS, ref_embeddings=e1, ref_labels=LABELS, reduction=reduction, **TCM_MARGINS
    )
    ref.sum().backward()
    key = f"tcm_{reduction}"
    assert float(ref.detach().sum()) > 0  # both kinds of hard pair are present
    if reduction == "none":
        losses = torch.cat([ranks[r][key][0] for r in range(WORLD)])
        torch.testing.assert_close(losses, ref.detach())
        scale = 1
    else:
        losses = torch.stack([ranks[r][key][0] for r in range(WORLD)])
        scale = WORLD if reduction == "mean" else 1
        torch.testing.assert_close(losses.sum() / scale, ref.detach())
    for r, sl in enumerate(_slices()):
        torch.testing.assert_close(ranks[r][key][1], scale * e1.grad[sl])


def test_tcm_unsynced_counts_differ_from_single_process(ranks):
    """Without sync_counts each rank normalises by its own counts: not the batch value."""
    _, _, e, _ = _data()
    ref = tcm_loss(e, LABELS, ref_embeddings=e, ref_labels=LABELS, **TCM_MARGINS)
    n = N // WORLD
    local = [
        tcm_loss(e[sl], LABELS[sl], ref_embeddings=e, ref_labels=LABELS, **TCM_MARGINS)
        for sl in (slice(0, n), slice(n, N))
    ]
    synced = torch.stack([ranks[r]["tcm_mean"][0] for r in range(WORLD)])
    assert not torch.allclose(torch.stack(local), synced)
    torch.testing.assert_close(synced.mean(), ref)


def test_identity_and_single_warning_without_process_group(monkeypatch):
    assert not dist.is_initialized()
    monkeypatch.setattr(ld, "_warned", False)
    x = torch.randn(3, 2, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gather_with_grad(x) is x
        assert gather_with_grad(x) is x
    assert len([c for c in caught if "not initialised" in str(c.message)]) == 1
