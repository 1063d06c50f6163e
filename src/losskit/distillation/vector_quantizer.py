"""Product and vector quantization with Distill-VQ's straight-through training path (paper 51).

=============  ==============  ==========================================================
argument       shape           meaning
=============  ==============  ==========================================================
``x``          ``[N, D]``      floating embeddings (documents), ``D = M * (D / M)``
``codes``      ``[N, M]``      int64 codeword indices in ``[0, K)``, one per sub-vector
result         ``[N, D]``      the reconstruction ``x_hat`` in ``x``'s dtype (+ ``codes``)
=============  ==============  ==========================================================

**Quantization.** ``x`` is cut into ``M`` sub-vectors ``x^m`` of ``D / M`` dims; each is
replaced by the nearest of the ``K`` codewords ``C^m_k`` of its own codebook:
``code_m = argmin_k ||x^m - C^m_k||^2`` and ``x_hat = concat_m C^m_{code_m}``. With ``M = 1``
this is plain vector quantization (an IVF coarse quantizer): :class:`VectorQuantizer`.

**Training path** (LibVQ ``Quantization.code_selection`` / ``STEstimator``, the code released
with Distill-VQ). The soft assignment ``a^m = softmax_k(-||x^m - C^m_k||^2 / tau)`` (``tau = 1``
in the code), the hard one ``h^m = one_hot(code_m)`` and
``x_hat^m = sum_k (h^m_k + a^m_k - stopgrad(a^m_k)) C^m_k``. The forward value is the exact
hard reconstruction; the backward pass treats the one-hot as if it were ``a``: the selected
codeword gets the gradient of ``x_hat`` directly (weight 1) and every codeword and the input
also get it through ``a``. This is the straight-through estimator on the *assignment*, not the
VQ-VAE estimator that copies ``d x_hat`` onto ``x``: here ``d x_hat / d x`` is the Jacobian of
the soft reconstruction ``sum_k a_k C_k``. Squared distances are formed as
``||x||^2 - 2 x.C + ||C||^2`` (LibVQ broadcasts the difference; same value, less memory).

**Rotation** (optional, OPQ): a fixed orthogonal ``R [D, D]`` (a buffer). ``x`` is quantized
in the rotated space and the reconstruction is rotated back, ``x_hat = R^T Q(R x)``, so
``<q, x_hat> = <R q, Q(R x)>``: the score LibVQ computes with its rotated query. As in LibVQ,
``R`` is not learned (it comes from an OPQ index).

**Initialisation.** ``init=`` a sample of embeddings: k-means per sub-space (Lloyd's
iterations from ``K`` distinct sample points drawn with ``seed``; an empty cluster keeps its
centre), which is the reconstruction-loss PQ Distill-VQ starts from. Without ``init``: uniform
in ``[-0.1, 0.1]`` drawn with ``seed``, LibVQ's random initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, checks_enabled
from losskit._core.precision import compute_dtype
from losskit.distillation._common import check_temperature


def _count(name: str, value: int, low: int) -> int:
    """An integer hyperparameter ``>= low`` (``_core.checks`` has no integer check)."""
    if isinstance(value, bool) or int(check_number(name, value, low=low)) != value:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _sq_dist(x: Tensor, c: Tensor) -> Tensor:
    """Squared distances ``[M, N, K]`` between ``x [M, N, d]`` and codewords ``c [M, K, d]``."""
    cross = torch.baddbmm(c.pow(2).sum(-1).unsqueeze(1), x, c.transpose(1, 2), alpha=-2.0)
    return cross + x.pow(2).sum(-1, keepdim=True)


class ProductQuantizer(nn.Module):
    """``M`` codebooks of ``K`` codewords over ``D / M``-dim sub-vectors (parameter
    ``codebook [M, K, D / M]``); ``forward(x) -> (x_hat, codes)`` with the straight-through
    path above, ``encode(x) -> codes``, ``decode(codes) -> x_hat``."""

    def __init__(
        self,
        dim: int,
        num_subvectors: int = 8,
        codebook_size: int = 256,
        *,
        init: Tensor | None = None,
        kmeans_iters: int = 20,
        seed: int = 0,
        temperature: float = 1.0,
        rotation: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.dim = _count("dim", dim, 1)
        self.num_subvectors = _count("num_subvectors", num_subvectors, 1)
        self.codebook_size = _count("codebook_size", codebook_size, 1)
        if self.dim % self.num_subvectors:
            raise ValueError(f"num_subvectors must divide dim={dim}, got {num_subvectors}")
        self.temperature = check_temperature(temperature)
        kmeans_iters = _count("kmeans_iters", kmeans_iters, 0)
        g = torch.Generator().manual_seed(int(seed))
        shape = (self.num_subvectors, self.codebook_size, self.dim // self.num_subvectors)
        self.codebook = nn.Parameter(torch.rand(shape, generator=g) * 0.2 - 0.1)
        self.register_buffer("rotation", None if rotation is None else self._rotation(rotation))
        if init is not None:
            self.init_from_data(init, iters=kmeans_iters, seed=seed)

    def _rotation(self, r: Tensor) -> Tensor:
        if not isinstance(r, Tensor) or not r.is_floating_point():
            raise ValueError("rotation must be a floating tensor [dim, dim]")
        if tuple(r.shape) != (self.dim, self.dim):
            raise ValueError(
                f"rotation must have shape {(self.dim, self.dim)}, got {tuple(r.shape)}"
            )
        r64 = r.detach().double()
        if not torch.allclose(r64 @ r64.T, torch.eye(self.dim, dtype=torch.float64), atol=1e-4):
            raise ValueError("rotation must be orthogonal (R @ R.T == I)")
        return r.detach().clone()

    def _prepare(self, x: Tensor, name: str = "x") -> tuple[Tensor, torch.dtype]:
        """Validate ``x [N, D]`` and return it rotated, as ``[M, N, D / M]`` in the compute
        dtype (at least float32, float64 if ``x`` or the codebook is), and that dtype."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor [N, {self.dim}]")
        if x.ndim != 2 or x.shape[1] != self.dim or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape [N >= 1, {self.dim}], got {tuple(x.shape)}")
        check_finite(name, x)
        dtype = torch.promote_types(compute_dtype(x.dtype), compute_dtype(self.codebook.dtype))
        x = x.to(dtype)
        if self.rotation is not None:
            x = x @ self.rotation.to(dtype).T
        return x.reshape(x.shape[0], self.num_subvectors, -1).transpose(0, 1), dtype

    def _unrotate(self, x_rot: Tensor) -> Tensor:
        return x_rot if self.rotation is None else x_rot @ self.rotation.to(x_rot.dtype)

    def soft_assign(self, x: Tensor) -> Tensor:
        """Soft assignment ``softmax_k(-||x^m - C^m_k||^2 / tau)``, shape ``[N, M, K]``
        (compute dtype); the path the straight-through gradient follows."""
        xs, dtype = self._prepare(x)
        d2 = _sq_dist(xs, self.codebook.to(dtype))
        return torch.softmax(-d2 / self.temperature, dim=-1).transpose(0, 1)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Nearest codeword per sub-vector, ``codes [N, M]`` (int64)."""
        xs, dtype = self._prepare(x)
        return _sq_dist(xs, self.codebook.to(dtype)).argmin(-1).T.contiguous()

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruction ``[N, D]`` (codebook dtype) from ``codes [N, M]``."""
        m, k = self.num_subvectors, self.codebook_size
        if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.dtype == torch.bool:
            raise ValueError("codes must be an integer tensor [N, num_subvectors]")
        if codes.ndim != 2 or codes.shape[1] != m:
            raise ValueError(f"codes must have shape [N, {m}], got {tuple(codes.shape)}")
        if checks_enabled() and bool(((codes < 0) | (codes >= k)).any()):
            raise ValueError(f"codes must lie in [0, {k})")
        picked = self.codebook[torch.arange(m, device=codes.device), codes.long()]
        return self._unrotate(picked.reshape(codes.shape[0], self.dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_hat [N, D] in x's dtype, codes [N, M])``; forward exact, gradient
        straight-through the soft assignment (module docstring)."""
        xs, dtype = self._prepare(x)
        cb = self.codebook.to(dtype)
        d2 = _sq_dist(xs, cb)
        soft = torch.softmax(-d2 / self.temperature, dim=-1)
        codes = d2.argmin(-1)
        hard = F.one_hot(codes, self.codebook_size).to(dtype)
        assign = hard + (soft - soft.detach())  # exactly one-hot in the forward pass
        x_hat = torch.bmm(assign, cb).transpose(0, 1).reshape(x.shape[0], self.dim)
        return self._unrotate(x_hat).to(x.dtype), codes.T.contiguous()

    @torch.no_grad()
    def init_from_data(self, x: Tensor, *, iters: int = 20, seed: int = 0) -> ProductQuantizer:
        """k-means (Lloyd) per sub-space on the sample ``x [N >= K, D]``; deterministic
        given ``seed``. Returns ``self``."""
        iters = _count("iters", iters, 0)
        xs, dtype = self._prepare(x, "init")
        m, n, k = self.num_subvectors, xs.shape[1], self.codebook_size
        if n < k:
            raise ValueError(f"init needs at least codebook_size={k} rows, got {n}")
        g = torch.Generator().manual_seed(int(seed))
        start = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(m)])
        centres = xs[torch.arange(m)[:, None], start.to(xs.device)]
        for _ in range(iters):
            assign = _sq_dist(xs, centres).argmin(-1)
            sums = torch.zeros_like(centres).scatter_add_(1, assign.unsqueeze(-1).expand_as(xs), xs)
            counts = torch.zeros(m, k, dtype=dtype, device=xs.device).scatter_add_(
                1, assign, torch.ones_like(assign, dtype=dtype)
            )
            filled = (counts > 0).unsqueeze(-1)
            centres = torch.where(filled, sums / counts.clamp_min(1).unsqueeze(-1), centres)
        self.codebook.copy_(centres.to(self.codebook.dtype))
        return self


class VectorQuantizer(ProductQuantizer):
    """Plain vector quantization: one codebook of ``K`` codewords over the whole vector
    (:class:`ProductQuantizer` with ``num_subvectors=1``; an IVF coarse quantizer)."""

    def __init__(self, dim: int, codebook_size: int = 256, **kwargs: object) -> None:
        super().__init__(dim, 1, codebook_size, **kwargs)
