import pytest
import torch

from losskit.distillation.vector_quantizer import ProductQuantizer, VectorQuantizer


def sample(n=60, d=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(dtype)


def slow_codes(x, codebook):
    """Nearest codeword per sub-vector by an explicit loop."""
    m, k, sub = codebook.shape
    codes = torch.empty(x.shape[0], m, dtype=torch.long)
    for i in range(x.shape[0]):
        for j in range(m):
            part = x[i, j * sub : (j + 1) * sub]
            best, best_d = 0, float("inf")
            for c in range(k):
                dist = float(((part - codebook[j, c]) ** 2).sum())
                if dist < best_d:
                    best, best_d = c, dist
            codes[i, j] = best
    return codes


def test_assignment_matches_loop_and_forward_is_exact_reconstruction():
    x = sample()
    pq = ProductQuantizer(12, 3, 7, seed=1).double()
    with torch.no_grad():
        pq.codebook.normal_(generator=torch.Generator().manual_seed(2))
    codes = pq.encode(x)
    assert codes.dtype == torch.long and codes.shape == (60, 3)
    torch.testing.assert_close(codes, slow_codes(x, pq.codebook.detach()), rtol=0, atol=0)
    x_hat, fcodes = pq(x)
    assert torch.equal(fcodes, codes)
    # forward value = hard reconstruction, exactly; each block is the chosen codeword
    assert torch.equal(x_hat, pq.decode(codes))
    for j in range(3):
        assert torch.equal(x_hat[:, 4 * j : 4 * j + 4], pq.codebook[j, codes[:, j]])


def test_decode_encode_round_trip_on_codewords():
    pq = ProductQuantizer(12, 4, 9, init=sample(), seed=3)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 9, (25, 4), generator=g)
    assert torch.equal(pq.encode(pq.decode(codes)), codes)
    x_hat, _ = pq(pq.decode(codes))
    assert torch.equal(x_hat, pq.decode(codes))


def test_straight_through_gradient_follows_the_soft_assignment():
    """d x_hat / d x is the Jacobian of sum_k a_k C_k; the codebook gets the hard one-hot
    directly plus the soft path: grad_C(ste) = grad_C(soft) + (h - a)^T g."""
    x = sample(20, 8, seed=4).requires_grad_(True)
    pq = ProductQuantizer(8, 2, 5, init=sample(40, 8, seed=5), temperature=3.0).double()
    w = sample(20, 8, seed=6)
    x_hat, codes = pq(x)
    (x_hat * w).sum().backward()
    gx, gc = x.grad.clone(), pq.codebook.grad.clone()

    x2 = x.detach().clone().requires_grad_(True)
    pq.codebook.grad = None
    a = pq.soft_assign(x2)  # [N, M, K]
    soft_hat = torch.einsum("nmk,mkd->nmd", a, pq.codebook).reshape(20, 8)
    (soft_hat * w).sum().backward()
    torch.testing.assert_close(gx, x2.grad)
    hard = torch.nn.functional.one_hot(codes, 5).double()
    direct = torch.einsum("nmk,nmd->mkd", hard - a.detach(), w.reshape(20, 2, 4))
    torch.testing.assert_close(gc, pq.codebook.grad + direct)
    assert gx.abs().sum() > 0  # temperature 3 keeps the soft path alive


def test_gradcheck_soft_assignment():
    x = sample(5, 6, seed=7).requires_grad_(True)
    pq = ProductQuantizer(6, 2, 4, init=sample(20, 6, seed=8), temperature=2.0).double()
    assert torch.autograd.gradcheck(lambda z: pq.soft_assign(z), (x,))
    torch.testing.assert_close(pq.soft_assign(x).sum(-1), torch.ones(5, 2, dtype=x.dtype))


def test_kmeans_init_is_deterministic_by_seed_and_reduces_distortion():
    x = sample(200, 8, seed=9, dtype=torch.float32)
    a = ProductQuantizer(8, 2, 16, init=x, seed=5)
    b = ProductQuantizer(8, 2, 16, init=x, seed=5)
    c = ProductQuantizer(8, 2, 16, init=x, seed=6)
    assert torch.equal(a.codebook, b.codebook)
    assert not torch.equal(a.codebook, c.codebook)
    start = ProductQuantizer(8, 2, 16, init=x, kmeans_iters=0, seed=5)
    # zero iterations: the codewords are distinct sample points of their sub-space
    for j in range(2):
        rows = x[:, 4 * j : 4 * j + 4]
        for w in start.codebook[j].detach():
            assert (rows == w).all(1).any()
    err = [((x - q(x)[0]) ** 2).sum(1).mean() for q in (start, a)]
    assert err[1] < err[0]


def test_vector_quantizer_is_one_subvector():
    x = sample(50, 6, seed=10)
    vq = VectorQuantizer(6, 5, init=x, seed=2).double()
    pq = ProductQuantizer(6, 1, 5, init=x, seed=2).double()
    assert vq.codebook.shape == (1, 5, 6)
    torch.testing.assert_close(vq(x)[0], pq(x)[0])
    d2 = ((x[:, None] - vq.codebook[0][None]) ** 2).sum(-1)
    assert torch.equal(vq.encode(x)[:, 0], d2.argmin(1))


def test_rotation_quantizes_in_rotated_space():
    x = sample(80, 8, seed=11)
    r, _ = torch.linalg.qr(sample(8, 8, seed=12))
    rot = ProductQuantizer(8, 2, 6, init=x, rotation=r, seed=1).double()
    plain = ProductQuantizer(8, 2, 6, init=x @ r.T, seed=1).double()
    assert torch.equal(rot.encode(x), plain.encode(x @ r.T))
    torch.testing.assert_close(rot(x)[0], plain(x @ r.T)[0] @ r)
    q = sample(3, 8, seed=13)
    torch.testing.assert_close(q @ rot(x)[0].T, (q @ r.T) @ plain(x @ r.T)[0].T)


def test_state_saves_and_moves_with_the_module():
    x = sample(40, 8, seed=14, dtype=torch.float32)
    r, _ = torch.linalg.qr(sample(8, 8, seed=15, dtype=torch.float32))
    a = ProductQuantizer(8, 4, 5, init=x, rotation=r, seed=0)
    b = ProductQuantizer(8, 4, 5, rotation=torch.eye(8), seed=9)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"codebook", "rotation"}
    assert torch.equal(a.encode(x), b.encode(x))
    a64 = a.double()
    assert a64.codebook.dtype == torch.float64 and a64.rotation.dtype == torch.float64
    assert a64(x.double())[0].dtype == torch.float64


def test_half_precision():
    x = sample(30, 8, seed=16, dtype=torch.float32) * 5
    pq = ProductQuantizer(8, 2, 6, init=x, seed=0)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype).requires_grad_(True)
        out, codes = pq(xh)
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref, ref_codes = pq(xh.detach().float())
        assert torch.equal(codes, ref_codes)
        torch.testing.assert_close(out.float(), ref.to(dtype).float())
        (out.float() ** 2).sum().backward()
        assert torch.isfinite(xh.grad).all() and torch.isfinite(pq.codebook.grad).all()


def test_bad_inputs():
    x = sample(10, 8, dtype=torch.float32)
    pq = ProductQuantizer(8, 2, 4)
    cases = [
        (lambda: ProductQuantizer(8, 3, 4), "num_subvectors"),
        (lambda: ProductQuantizer(8, 0, 4), "num_subvectors"),
        (lambda: ProductQuantizer(8, 2, 0), "codebook_size"),
        (lambda: ProductQuantizer(8, 2, 2.5), "codebook_size"),
        (lambda: ProductQuantizer(0, 1, 4), "dim"),
        (lambda: ProductQuantizer(8, 2, 4, temperature=0.0), "temperature"),
        (lambda: ProductQuantizer(8, 2, 4, kmeans_iters=-1), "kmeans_iters"),
        (lambda: ProductQuantizer(8, 2, 20, init=x), "init"),
        (lambda: ProductQuantizer(8, 2, 4, rotation=torch.ones(8, 8)), "rotation"),
        (lambda: ProductQuantizer(8, 2, 4, rotation=torch.eye(6)), "rotation"),
        (lambda: pq(x[:, :6]), "x must"),
        (lambda: pq(x[:0]), "x must"),
        (lambda: pq(x.long()), "x must"),
        (lambda: pq(torch.full_like(x, float("nan"))), "x must"),
        (lambda: pq.decode(torch.zeros(3, 3, dtype=torch.long)), "codes"),
        (lambda: pq.decode(torch.full((3, 2), 4)), "codes"),
        (lambda: pq.decode(torch.zeros(3, 2)), "codes"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()
