"""Hyperspherical embedding for novel class classification (Pereira et al. 2021; paper 25).

Training: the normalised softmax loss with the latent representations held on a hypersphere.
The features are L2-normalised and rescaled to a fixed norm ``s`` (``scale``), the class
weights are constrained to unit norm and the bias to zero, so the logits are scaled cosines:

``l_i = -log softmax_c( s * <z_i/|z_i|, w_c/|w_c|> )_{y_i}``,   logits in ``[-s, s]``.

It needs no pair or triplet sampling. Novel classes (unseen in training) are then classified
on the sphere: each new class gets the prototype ``p_k = normalize(mean_{i in k} z_i/|z_i|)``
of a few labelled examples (:func:`class_prototypes`), written as a new unit-norm class weight,
and a sample goes to the class of highest cosine (:func:`predict_novel_classes`), i.e. to
the nearest prototype on the sphere. In the "joint" scenario the new prototypes are appended
to the trained class weights; in the "disjoint" one they are used alone.

Default ``scale=10``: the fixed feature norm of a public Keras implementation of the method
(a feature-normalisation layer with ``s=10`` before a dense softmax layer whose kernel is
constrained to unit norm and bias to zero, and helpers that add a class as the normalised
mean embedding of its examples). The constraints are imposed here by normalising inside the
loss (same logits); that code instead projects the weights back onto the unit sphere after
each update, which :meth:`HypersphericalSoftmaxLoss.project_` offers.

Siblings: ArcFace / CosFace (``margin_heads``) at ``margin=0`` give the same logits
(``scale * cos``); with ``scale = 1 / temperature`` this is NormSoftmax (Zhai & Wu 2018).
``reduction``: ``"none"`` one value per sample, ``"mean"`` over the ``N`` samples, ``"sum"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_class_target, check_number, check_reduction
from losskit._core.precision import upcast_all
from losskit._core.registry import register
from losskit.embedding._common import check_embeddings, check_labels


def _check_scale(scale: float) -> float:
    return check_number("scale", scale, low=0.0, low_open=True)


def _cosines(embeddings: Tensor, weight: Tensor) -> Tensor:
    x, w = upcast_all(embeddings, weight)
    return F.normalize(x, dim=1) @ F.normalize(w, dim=1).T


def hyperspherical_softmax_loss(
    embeddings: Tensor,
    labels: Tensor,
    weight: Tensor,
    *,
    scale: float = 10.0,
    reduction: str = "mean",
) -> Tensor:
    """Normalised softmax loss of ``embeddings[N, D]`` against class weights ``weight[C, D]``
    with integer ``labels[N]``: cross-entropy of ``scale * cos(z_i, w_c)``."""
    scale = _check_scale(scale)
    check_reduction(reduction)
    check_embeddings(embeddings, "embeddings")
    check_embeddings(weight, "weight", embeddings.shape[1])
    logits = scale * _cosines(embeddings, weight)
    check_class_target(labels, logits, allow_soft=False, name="labels")
    out = F.cross_entropy(logits, labels, reduction=reduction)
    return out.to(embeddings.dtype)


@torch.no_grad()
def class_prototypes(embeddings: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Unit-norm prototypes ``[K, D]``: row ``k`` is the normalised mean of the normalised
    embeddings labelled ``k`` (``K = num_classes``, default ``labels.max() + 1``); every class
    needs at least one example. Computed without gradient, in float32 or wider."""
    check_embeddings(embeddings, "embeddings")
    check_labels(labels, embeddings.shape[0], "labels")
    if bool((labels < 0).any()):
        raise ValueError("labels must be non-negative class ids")
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if int(labels.max()) >= k:
        raise ValueError(f"labels must be class ids in [0, {k})")
    (x,) = upcast_all(embeddings)
    x = F.normalize(x, dim=1)
    sums = x.new_zeros(k, x.shape[1]).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    if bool((counts == 0).any()):
        missing = int((counts == 0).nonzero()[0])
        raise ValueError(f"labels has no example of class {missing} (num_classes={k})")
    return F.normalize(sums, dim=1)


@torch.no_grad()
def predict_novel_classes(
    embeddings: Tensor, prototypes: Tensor, *, known_weight: Tensor | None = None
) -> Tensor:
    """Class of each of ``embeddings[N, D]``: the argmax of the cosine to the class weights,
    ``cat([known_weight, prototypes])`` in the joint scenario (novel class ``k`` is index
    ``C + k``) or ``prototypes`` alone in the disjoint one. Equal to the argmax of the
    normalised softmax and to the nearest prototype on the sphere. Returns ``int64[N]``."""
    check_embeddings(embeddings, "embeddings")
    d = embeddings.shape[1]
    check_embeddings(prototypes, "prototypes", d)
    w = prototypes
    if known_weight is not None:
        check_embeddings(known_weight, "known_weight", d)
        w = torch.cat(upcast_all(known_weight, prototypes))
    return _cosines(embeddings, w).argmax(dim=1)


class HypersphericalSoftmaxLoss(nn.Module):
    """Module form of :func:`hyperspherical_softmax_loss`; holds the class weights
    ``weight[num_classes, in_features]`` (Xavier-uniform initialised)."""

    def __init__(
        self, in_features: int, num_classes: int, *, scale: float = 10.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("num_classes", num_classes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features, self.num_classes = in_features, num_classes
        self.scale = _check_scale(scale)
        self.reduction = check_reduction(reduction)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return hyperspherical_softmax_loss(
            embeddings, labels, self.weight, scale=self.scale, reduction=self.reduction
        )

    @torch.no_grad()
    def project_(self) -> HypersphericalSoftmaxLoss:
        """Rescale each class weight to unit norm in place (the Keras code's hard constraint,
        applied after each optimiser step). The loss value does not change."""
        self.weight.copy_(F.normalize(self.weight, dim=1))
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"scale={self.scale}, reduction={self.reduction!r}"
        )


register(
    "hyperspherical_softmax",
    kind="loss",
    family="embedding",
    papers=(25,),
    summary="Normalised softmax on the hypersphere; novel classes by nearest prototype.",
    defaults={"scale": 10.0},
    function=hyperspherical_softmax_loss,
    module=HypersphericalSoftmaxLoss,
)
