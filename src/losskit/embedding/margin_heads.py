"""Additive-margin softmax heads: ArcFace (Deng et al. 2019) and CosFace (Wang et al. 2018).

Each head holds class centres ``weight[C, D]`` and maps ``(embeddings[N, D], labels[N])`` to
logits ``[N, C]`` for ``F.cross_entropy``: ``scale * cos(theta_ic)`` for the other classes,
and for the target class

- ArcFace: ``scale * cos(theta + margin)``, falling back to
  ``scale * (cos(theta) - margin * sin(margin))`` where ``theta + margin > pi`` (the usual
  ``easy_margin=False`` form, which keeps the logit decreasing in ``theta``),
- CosFace: ``scale * (cos(theta) - margin)``.

At ``margin=0`` both are ``scale * cos`` (normalised softmax). Computed in at least float32;
logits come back in the dtype of ``embeddings``. Defaults ``scale=64`` and ``margin=0.5``
(ArcFace) / ``0.35`` (CosFace). Heads, not losses: they are not registered.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_number, checks_enabled
from losskit._core.precision import upcast_all
from losskit.embedding._common import check_embeddings, check_labels


class _MarginHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("num_classes", num_classes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.num_classes = in_features, num_classes
        self.scale = check_number("scale", scale, low=0.0, low_open=True)
        self.margin = check_number("margin", margin, low=0.0)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def _target_cos(self, cos: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_embeddings(embeddings, "embeddings", self.in_features)
        n = embeddings.shape[0]
        check_labels(labels, n, "labels")
        if checks_enabled() and (
            bool((labels < 0).any()) or bool((labels >= self.num_classes).any())
        ):
            raise ValueError(f"labels must be class ids in [0, {self.num_classes})")
        x, w = upcast_all(embeddings, self.weight)
        cos = (F.normalize(x, dim=1) @ F.normalize(w, dim=1).T).clamp(-1.0, 1.0)
        target = F.one_hot(labels, self.num_classes).bool()
        logits = torch.where(target, self._target_cos(cos), cos) * self.scale
        return logits.to(embeddings.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"scale={self.scale}, margin={self.margin}"
        )


class ArcFaceHead(_MarginHead):
    """ArcFace logits: additive angular margin ``cos(theta + margin)`` on the target class."""

    def __init__(
        self, in_features: int, num_classes: int, *, scale: float = 64.0, margin: float = 0.5
    ) -> None:
        super().__init__(in_features, num_classes, scale, margin)

    def _target_cos(self, cos: Tensor) -> Tensor:
        m = self.margin
        sin = (1.0 - cos * cos).clamp_min(1e-12).sqrt()
        shifted = cos * math.cos(m) - sin * math.sin(m)
        return torch.where(cos > math.cos(math.pi - m), shifted, cos - m * math.sin(m))


class CosFaceHead(_MarginHead):
    """CosFace logits: additive cosine margin ``cos(theta) - margin`` on the target class."""

    def __init__(
        self, in_features: int, num_classes: int, *, scale: float = 64.0, margin: float = 0.35
    ) -> None:
        super().__init__(in_features, num_classes, scale, margin)

    def _target_cos(self, cos: Tensor) -> Tensor:
        return cos - self.margin
