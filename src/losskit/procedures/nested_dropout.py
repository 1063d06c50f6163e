"""Nested dropout on the penultimate features (paper 12, after Rippel et al. 2014).

In training, every forward pass draws one cut ``k in {1, ..., D}`` for the whole batch and
keeps the first ``k`` coordinates of the feature ``h in R^D``, zeroing ``h_{k+1..D}`` (no
rescaling)::

    m_i(k) = 1[i <= k],    h~ = m(k) * h,    k ~ p(k)

so the first coordinates must carry the most useful information: the representation is
ordered by importance and a short prefix is a compressed feature. Cut distributions:

- ``"gaussian"`` (the paper's code, ``GaussianDist``): ``p(k) ∝ exp(-((k - mu) / sigma)^2)``
  with ``mu = 0``; ``sigma = 10`` on CIFAR, ``100`` on Clothing1M / ANIMAL-10N. As
  ``sigma -> inf`` it becomes uniform.
- ``"geometric"`` (Rippel et al.'s original): ``p(k) = p (1 - p)^(k-1)`` truncated to
  ``1..D`` and renormalised.

The expected mask is ``E[m_i] = P(k >= i) = sum_{k >= i} p(k)``: 1 at ``i = 1`` and
non-increasing in ``i`` for any distribution (:func:`expected_mask`). In eval mode the
module keeps its ``cut`` first coordinates (default ``D``: the identity); the paper evaluates
every ``k`` on a validation set and keeps the best (:func:`cut_accuracies`,
:meth:`NestedDropoutNet.select_cut`; ties go to the smaller ``k``).

Combined with co-teaching (:func:`losskit.procedures.co_teaching.co_teaching`) as in the
paper: two nested networks are trained, their cuts selected, then both are fine-tuned with
co-teaching (selection at the chosen cut, ``selection="eval"``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_number
from losskit._core.registry import register

DISTRIBUTIONS = ("gaussian", "geometric")


def _check_dim(dim: int, name: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"{name} must be an int >= 1, got {dim!r}")
    return int(dim)


def cut_distribution(
    dim: int,
    *,
    distribution: str = "gaussian",
    sigma: float = 10.0,
    mu: float = 0.0,
    p: float = 0.1,
) -> np.ndarray:
    """``p(k)`` for ``k = 1..dim`` as float64 ``[dim]`` summing to 1 (computed in the log
    domain, so a far-away ``mu`` or a tiny ``sigma`` still normalises). ``sigma``/``mu``
    serve ``"gaussian"``, ``p in (0, 1)`` serves ``"geometric"``."""
    dim = _check_dim(dim)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    k = np.arange(1, dim + 1, dtype=np.float64)
    if distribution == "gaussian":
        sigma = check_number("sigma", sigma, low=0.0, low_open=True, high_open=True)
        mu = check_number("mu", mu, low=-np.inf, high=np.inf, low_open=True, high_open=True)
        log_w = -(((k - mu) / sigma) ** 2)
    else:
        p = check_number("p", p, low=0.0, high=1.0, low_open=True, high_open=True)
        log_w = (k - 1.0) * np.log1p(-p)
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def expected_mask(probs: np.ndarray | Tensor) -> np.ndarray:
    """``E[m_i] = P(k >= i) = sum_{k >= i} p(k)`` for a cut distribution ``probs`` ``[D]``
    (non-negative, summing to 1); float64 ``[D]``, non-increasing, first entry 1."""
    q = np.asarray(probs.detach().cpu() if isinstance(probs, Tensor) else probs, np.float64)
    if q.ndim != 1 or q.size == 0 or not np.isfinite(q).all() or (q < 0).any():
        raise ValueError(f"probs must be a non-empty 1-D array of finite values >= 0, got {q}")
    if abs(q.sum() - 1.0) > 1e-9:
        raise ValueError(f"probs must sum to 1, got {q.sum()}")
    return np.cumsum(q[::-1])[::-1].copy()


def prefix_mask(k: int, dim: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``m(k)``: ones on the first ``k`` of ``dim`` coordinates, zeros after."""
    dim = _check_dim(dim)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= dim:
        raise ValueError(f"k must be an int in [1, {dim}], got {k!r}")
    return (torch.arange(dim) < k).to(dtype)


class NestedDropout(nn.Module):
    """Nested dropout on features ``[..., dim]`` (see the module docstring).

    ``generator``: a ``torch.Generator`` (CPU) for the cut draws; default the global RNG.
    Buffers: ``probs`` (``p(k)``, float64) and ``cut`` (the eval-mode prefix length)."""

    def __init__(
        self,
        dim: int,
        *,
        distribution: str = "gaussian",
        sigma: float = 10.0,
        mu: float = 0.0,
        p: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        probs = cut_distribution(dim, distribution=distribution, sigma=sigma, mu=mu, p=p)
        self.dim = int(dim)
        self.distribution = distribution
        self.generator = generator
        self.register_buffer("probs", torch.from_numpy(probs))
        self.register_buffer("cut", torch.tensor(self.dim))

    def sample_cut(self) -> int:
        """One draw of ``k`` from ``probs`` (1-based)."""
        q = self.probs.detach().cpu()
        return int(torch.multinomial(q, 1, generator=self.generator)) + 1

    def set_cut(self, k: int) -> None:
        """The number of coordinates kept in eval mode, ``1 <= k <= dim``."""
        prefix_mask(k, self.dim)  # validates k
        self.cut.fill_(int(k))

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim < 1 or h.shape[-1] != self.dim:
            raise ValueError(f"h must have shape [..., {self.dim}], got {tuple(h.shape)}")
        k = self.sample_cut() if self.training else int(self.cut)
        if k == self.dim:
            return h
        return h * prefix_mask(k, self.dim, dtype=h.dtype).to(h.device)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, distribution={self.distribution!r}, cut={int(self.cut)}"


@torch.no_grad()
def cut_accuracies(
    head: nn.Module, features: Tensor, target: Tensor, *, chunk: int = 32
) -> np.ndarray:
    """Accuracy of ``head(m(k) * features)`` against ``target`` for every ``k = 1..D``
    (float64 ``[D]``), evaluated ``chunk`` cuts at a time."""
    if not isinstance(features, Tensor) or features.ndim != 2 or len(features) == 0:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a non-empty [N, D] tensor, got {shape}")
    if not isinstance(target, Tensor) or tuple(target.shape) != (len(features),):
        raise ValueError(f"target must be a tensor of shape ({len(features)},)")
    dim = features.shape[1]
    masks = torch.tril(torch.ones(dim, dim, dtype=features.dtype, device=features.device))
    out = []
    for start in range(0, dim, _check_dim(chunk, "chunk")):
        m = masks[start : start + chunk]  # row j keeps the first start + j + 1 coordinates
        logits = head((m[:, None, :] * features[None]).reshape(-1, dim))
        pred = logits.reshape(len(m), len(features), -1).argmax(-1)
        out.append((pred == target[None]).double().mean(1))
    return torch.cat(out).cpu().numpy()


class NestedDropoutNet(nn.Module):
    """``head(nested(backbone(x)))``: a classifier with nested dropout on the input of its
    head. :meth:`select_cut` sets the eval-mode cut to the best one on held-out data."""

    def __init__(self, backbone: nn.Module, head: nn.Module, nested: NestedDropout) -> None:
        super().__init__()
        self.backbone, self.head, self.nested = backbone, head, nested

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.nested(self.backbone(x)))

    @torch.no_grad()
    def select_cut(self, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> np.ndarray:
        """Evaluate every cut on ``(x, y)`` (eval mode), keep the most accurate one (the
        smallest among ties) as ``nested.cut``; returns the accuracies ``[D]``."""
        was_training = self.training
        self.eval()
        feats = torch.cat(
            [self.backbone(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )
        acc = cut_accuracies(self.head, feats, torch.as_tensor(y).to(feats.device))
        self.nested.set_cut(int(np.argmax(acc)) + 1)
        self.train(was_training)
        return acc


def nested_dropout_net(model: nn.Sequential, **nested_kwargs) -> NestedDropoutNet:
    """Split a ``nn.Sequential`` whose last layer is ``nn.Linear`` into backbone and head and
    put :class:`NestedDropout` (``nested_kwargs``) on the head's input features."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ValueError("model must be an nn.Sequential ending with an nn.Linear head")
    head = model[-1]
    return NestedDropoutNet(model[:-1], head, NestedDropout(head.in_features, **nested_kwargs))


register(
    "nested_dropout",
    kind="procedure",
    family="procedures",
    papers=(12,),
    summary="Nested dropout: keep a random prefix h_1..h_k of the penultimate features "
    "(k ~ p(k)), ordering them by importance; the best prefix is chosen on validation data.",
    defaults={"distribution": "gaussian", "sigma": 10.0, "mu": 0.0},
    module=NestedDropout,
)
