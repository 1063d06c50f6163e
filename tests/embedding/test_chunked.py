"""Chunked InfoNCE / SupCon: equal to the full path (value and gradients), gradcheck, half
precision, bad inputs, reductions, and no [N, M] tensor in the graph or among the operations."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from losskit.embedding.chunked import chunked_info_nce_loss, chunked_supcon_loss
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.supcon import supcon_loss

TOL = {"rtol": 1e-5, "atol": 1e-5}


def emb(n, d=8, *, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, d, generator=g)).to(dtype)


def assert_same(fast, full, inputs, **tol):
    """Values and gradients of the summed values agree; ``inputs`` are float leaves."""
    a = [x.clone().requires_grad_(True) for x in inputs]
    b = [x.clone().requires_grad_(True) for x in inputs]
    out_a, out_b = fast(*a), full(*b)
    assert out_a.dtype == out_b.dtype and out_a.shape == out_b.shape
    torch.testing.assert_close(out_a, out_b, **tol)
    ga = torch.autograd.grad(out_a.sum(), a, allow_unused=True)
    gb = torch.autograd.grad(out_b.sum(), b, allow_unused=True)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, **tol)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("chunk", [7, 64, 500, None])
def test_info_nce_equals_full(reduction, chunk):
    q, k = emb(64, 16, seed=1), emb(80, 16, seed=2)
    pos = torch.randint(0, 80, (64,), generator=torch.Generator().manual_seed(3))
    for positives in (None, pos):
        for normalize, t in ((True, 0.07), (False, 0.5)):
            kw = {"temperature": t, "normalize": normalize, "reduction": reduction}
            assert_same(
                lambda a, b, p=positives, kw=kw: chunked_info_nce_loss(
                    a, b, p, chunk_size=chunk, **kw
                ),
                lambda a, b, p=positives, kw=kw: info_nce_loss(a, b, p, **kw),
                (q, k),
                **TOL,
            )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("chunk", [5, 64, None])
def test_supcon_equals_full(reduction, chunk):
    x, r = emb(50, 16, seed=4), emb(70, 16, seed=5)
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 12, (50,), generator=g)
    ry = torch.randint(0, 15, (70,), generator=g).to(torch.int32)  # other integer dtype
    y[0] = 99  # a singleton: no positive, in-batch or among the references
    for normalize, t in ((True, 0.1), (False, 0.7)):
        kw = {"temperature": t, "normalize": normalize, "reduction": reduction}
        assert_same(
            lambda a, kw=kw: chunked_supcon_loss(a, y, chunk_size=chunk, **kw),
            lambda a, kw=kw: supcon_loss(a, y, **kw),
            (x,),
            **TOL,
        )
        assert_same(
            lambda a, b, kw=kw: chunked_supcon_loss(
                a, y, ref_embeddings=b, ref_labels=ry, chunk_size=chunk, **kw
            ),
            lambda a, b, kw=kw: supcon_loss(a, y, ref_embeddings=b, ref_labels=ry, **kw),
            (x, r),
            **TOL,
        )


def test_single_column_chunks():
    """``chunk_size=1`` sums the gradient over M rank-one blocks in float32: no further from
    the float64 result than the full path, plus 1e-5 (Cut Cross-Entropy's tolerance rule)."""
    q, k = emb(64, 16, seed=1), emb(80, 16, seed=2)
    y, ry = torch.arange(64) % 9, torch.arange(80) % 7
    cases = [
        (
            lambda a, b: chunked_info_nce_loss(a, b, chunk_size=1, reduction="none"),
            lambda a, b: info_nce_loss(a, b, reduction="none"),
        ),
        (
            lambda a, b: chunked_supcon_loss(
                a, y, ref_embeddings=b, ref_labels=ry, chunk_size=1, reduction="sum"
            ),
            lambda a, b: supcon_loss(a, y, ref_embeddings=b, ref_labels=ry, reduction="sum"),
        ),
    ]

    def run(fn, dtype):
        a, b = q.to(dtype).requires_grad_(True), k.to(dtype).requires_grad_(True)
        out = fn(a, b)
        return [out.double(), *(g.double() for g in torch.autograd.grad(out.sum(), (a, b)))]

    for fast, full in cases:
        exact = run(full, torch.float64)
        for x, y_full, e in zip(
            run(fast, torch.float32), run(full, torch.float32), exact, strict=True
        ):
            assert ((x - e).abs() <= (y_full - e).abs() + 1e-5).all()


def test_large_batch_within_1e5():
    """Batch of 1024 (blocks of 100 columns, the last one partial) at the InfoNCE default
    temperature: float32 values and gradients within 1e-5 of the full path."""
    q, k = emb(1024, 32, seed=7), emb(1024, 32, seed=8)
    y = torch.arange(1024) % 50
    assert_same(
        lambda a, b: chunked_info_nce_loss(a, b, chunk_size=100, reduction="none"),
        lambda a, b: info_nce_loss(a, b, reduction="none"),
        (q, k),
        **TOL,
    )
    assert_same(
        lambda a: chunked_supcon_loss(a, y, chunk_size=100, reduction="none"),
        lambda a: supcon_loss(a, y, reduction="none"),
        (q,),
        **TOL,
    )


def test_float64_matches_exactly_enough():
    q, k = emb(20, 4, seed=9, dtype=torch.float64), emb(20, 4, seed=10, dtype=torch.float64)
    y = torch.arange(20) % 4
    tight = {"rtol": 1e-12, "atol": 1e-12}
    assert_same(
        lambda a, b: chunked_info_nce_loss(a, b, chunk_size=3, reduction="none"),
        lambda a, b: info_nce_loss(a, b, reduction="none"),
        (q, k),
        **tight,
    )
    assert_same(
        lambda a: chunked_supcon_loss(a, y, chunk_size=3, reduction="none"),
        lambda a: supcon_loss(a, y, reduction="none"),
        (q,),
        **tight,
    )


def test_anchors_without_positive_and_empty_batch():
    x = emb(6, seed=11).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 2, 2, 3])
    none = chunked_supcon_loss(x, y, reduction="none", chunk_size=2)
    assert none[2] == 0 and none[5] == 0 and (none[[0, 1, 3, 4]] > 0).all()
    torch.testing.assert_close(chunked_supcon_loss(x, y, chunk_size=2), none[[0, 1, 3, 4]].mean())
    # distinct labels: no anchor has a positive -> 0 with zero gradient
    for xs, ys in ((x, torch.arange(6)), (x[:1], y[:1])):
        out = chunked_supcon_loss(xs, ys, chunk_size=2)
        assert out == 0
        (grad,) = torch.autograd.grad(out, x)
        assert torch.equal(grad, torch.zeros_like(x))


def test_one_positive_supcon_equals_info_nce():
    z1, z2 = emb(9, seed=12), emb(9, seed=13)
    lab = torch.arange(9)
    torch.testing.assert_close(
        chunked_supcon_loss(z1, lab, ref_embeddings=z2, ref_labels=lab, temperature=0.2),
        chunked_info_nce_loss(z1, z2, temperature=0.2, chunk_size=4),
    )


def test_gradcheck():
    q, k = emb(5, 3, seed=14, dtype=torch.float64), emb(7, 3, seed=15, dtype=torch.float64)
    pos = torch.tensor([6, 0, 2, 2, 4])
    assert torch.autograd.gradcheck(
        lambda a, b: chunked_info_nce_loss(
            a, b, pos, temperature=0.5, chunk_size=3, reduction="none"
        ),
        (q.requires_grad_(True), k.requires_grad_(True)),
    )
    y = torch.tensor([0, 1, 0, 1, 2])
    ry = torch.tensor([0, 1, 1, 2, 2, 0, 3])
    x = q.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: chunked_supcon_loss(a, y, temperature=0.5, chunk_size=2, reduction="none"),
        (x,),
    )
    assert torch.autograd.gradcheck(
        lambda a, b: chunked_supcon_loss(
            a, y, ref_embeddings=b, ref_labels=ry, chunk_size=4, normalize=False
        ),
        (x, k.detach().requires_grad_(True)),
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    q, k = emb(24, 16, seed=16, scale=10.0), emb(24, 16, seed=17, scale=10.0)
    y = torch.arange(24) % 5
    cases = [
        (
            lambda a, b: chunked_info_nce_loss(a, b, chunk_size=5, reduction="none"),
            lambda a, b: info_nce_loss(a, b, reduction="none"),
        ),
        (
            lambda a, b: chunked_supcon_loss(a, y, chunk_size=5, reduction="none"),
            lambda a, b: supcon_loss(a, y, reduction="none"),
        ),
    ]
    for fast, full in cases:
        qh, kh = q.to(dtype).requires_grad_(True), k.to(dtype).requires_grad_(True)
        out = fast(qh, kh)
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = fast(qh.detach().float(), kh.detach().float())
        torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(out, full(qh, kh))  # same float32 internals
        out.sum().backward()
        assert qh.grad.dtype == dtype and torch.isfinite(qh.grad).all()


class _LargestTensor(TorchDispatchMode):
    """Largest storage (in elements) any operation produces while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                size = t.untyped_storage().nbytes() // t.element_size()
                self.largest = max(self.largest, size)
        return out


def _footprint(loss, *inputs):
    """(largest tensor saved for backward, largest tensor produced in forward+backward)."""
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    leaves = [x.clone().requires_grad_(True) for x in inputs]
    with _LargestTensor() as mode:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = loss(*leaves)
        out.backward()
    return max(saved), mode.largest


@pytest.mark.parametrize("n", [64, 128])
def test_no_quadratic_tensor(n):
    """The graph saves nothing of N*M elements and no operation (forward or backward) makes a
    tensor of N*M elements; the full path does both, so the check can fail."""
    d, chunk = 16, 8
    q, k = emb(n, d, seed=18), emb(n, d, seed=19)
    y = torch.arange(n) % 10
    linear = n * max(d, chunk)  # inputs, their gradients, one [N, chunk] block
    for chunked, full in (
        (lambda a, b: chunked_info_nce_loss(a, b, chunk_size=chunk), info_nce_loss),
        (
            lambda a, b: chunked_supcon_loss(a, y, ref_embeddings=b, ref_labels=y, chunk_size=8),
            lambda a, b: supcon_loss(a, y, ref_embeddings=b, ref_labels=y),
        ),
        (
            lambda a, b: chunked_supcon_loss(a, y, chunk_size=chunk) + 0 * b.sum(),
            lambda a, b: supcon_loss(a, y) + 0 * b.sum(),
        ),
    ):
        saved, largest = _footprint(chunked, q, k)
        assert saved <= linear < n * n and largest <= linear, (saved, largest, linear)
        saved, largest = _footprint(full, q, k)
        assert saved >= n * n and largest >= n * n


def test_default_chunk_bounds_the_block():
    """``chunk_size=None`` keeps blocks at ``2**21`` similarities: at N=4096 a 512-column
    block, one of several (the full [N, N] would be 8 times larger)."""
    n = 4096
    q = emb(n, 4, seed=20)
    _, largest = _footprint(lambda a, b: chunked_info_nce_loss(a, b), q, q)
    assert largest <= 2**21 < n * n


def test_bad_inputs():
    q, k = emb(4, seed=21), emb(5, seed=22)
    y = torch.tensor([0, 1, 0, 1])
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="chunk_size"):
            chunked_info_nce_loss(q, k, chunk_size=bad)
        with pytest.raises(ValueError, match="chunk_size"):
            chunked_supcon_loss(q, y, chunk_size=bad)
    nce_cases = [
        ((q[0], k), {}, "query"),
        ((q, k[:, :3]), {}, "keys"),
        ((q, k[:3]), {}, "keys"),  # fewer keys than queries without positives
        ((q, k, torch.tensor([0, 1, 5, 0])), {}, "positives"),
        ((q, k, torch.tensor([0, 1, 2])), {}, "positives"),
        ((q, k, torch.tensor([0.0, 1, 2, 3])), {}, "positives"),
        ((q * float("nan"), k), {}, "query"),
        ((q, k * float("inf")), {}, "keys"),
        ((q[:0], k), {}, "query"),
        ((q, k), {"temperature": 0.0}, "temperature"),
        ((q, k), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in nce_cases:
        with pytest.raises(ValueError, match=name):
            chunked_info_nce_loss(*args, **kw)
    supcon_cases = [
        ((q, y[:3]), {}, "labels"),
        ((q, y.float()), {}, "labels"),
        ((q[:0], y[:0]), {}, "embeddings"),
        ((q * float("nan"), y), {}, "embeddings"),
        ((q, y), {"ref_embeddings": k}, "ref_labels"),
        ((q, y), {"ref_embeddings": k[:, :2], "ref_labels": y}, "ref_embeddings"),
        ((q, y), {"ref_embeddings": k, "ref_labels": y}, "ref_labels"),
        ((q, y), {"temperature": -1.0}, "temperature"),
        ((q, y), {"reduction": "avg"}, "reduction"),
    ]
    for args, kw, name in supcon_cases:
        with pytest.raises(ValueError, match=name):
            chunked_supcon_loss(*args, **kw)
