"""Proto-Triplet loss (Mendez-Ruiz et al., "SuSana Distancia is all you need"; paper 31).

A triplet loss for few-shot metric learning whose positive and negative are class
*prototypes* (the mean embedding of a class's candidates) instead of samples. For anchor
``i`` with label ``y_i`` and prototypes ``c_ik`` built from its candidates::

    l_i = max(0, d(z_i, c_{i,y_i}) - min_{k != y_i} d(z_i, c_ik) + margin)
    d(a, b) = sqrt(||a - b||^2 + eps)

the distance to the own-class prototype against the distance to the nearest prototype of
another class. Defaults: ``margin=0.5`` (the paper's), ``eps=1e-6`` (inside the square root,
as in the authors' code; it keeps the gradient finite when an anchor sits on a prototype),
``normalize=False`` (Euclidean distance of the raw embeddings, as in Prototypical Networks;
``True`` averages L2-normalised embeddings, without re-normalising the means).

Two uses of the one label-based contract:

- **episodic** (the paper): ``embeddings``/``labels`` are the queries, ``ref_embeddings``/
  ``ref_labels`` the support set; the prototypes are the support means (passing the
  prototypes themselves, one row per class, gives the same loss).
- **batch** (default candidates): every sample is a query against the prototypes of the rest
  of the batch: its own class's mean without itself, the full mean of every other class.

``candidate_mask[N, M]`` removes candidates from an anchor's prototypes. An anchor whose class
has no candidate has no positive prototype: it gives 0 and drops out of ``"mean"`` (the
package contract); one with no other class gives 0 and counts. ``"mean"`` over queries is the
paper's loss.

Relation to siblings: with one candidate per class the prototypes are the candidates and this
is the Euclidean triplet loss against the nearest negative (``triplet_margin_loss`` with
``mining="hard"`` and a single positive, in distance rather than cosine form). The paper
trains it next to the ProtoNet cross-entropy and :func:`losskit.embedding.icnn.icnn_loss`.

Differences from the reference code (maumruiz/FSL-Loss, ``proto_triplet_loss``): there the
support labels are ``arange(0, way, 1/shot)`` (class-major order assumed) and the positive
distance is a max over a same-class mask, which equals the own-class prototype distance only
because there is one prototype per class; here labels are explicit and the own-class
prototype is taken directly. Computation: prototype distances come from Gram matrices,
``||z_i||^2 - 2 z_i.c_ik + ||c_ik||^2``, in ``O(N M^2 + N M K)`` time and ``O(M^2 + N M)``
memory (never ``[N, K, D]``), in float32 or wider.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number, check_reduction
from losskit._core.precision import upcast_all
from losskit._core.registry import register
from losskit.embedding._common import LabelLossModule, PairBatch, prepare_labels, reduce_anchors

_DEFAULTS = {"margin": 0.5, "eps": 1e-6, "normalize": False}


def _prototype_distances(
    b: PairBatch,
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor,
    ref_labels: Tensor,
    *,
    normalize: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Distances ``d[N, K]`` from each anchor to the per-anchor class prototypes of its
    candidates (``b.valid``), with ``own[N, K]`` (the anchor's class) and ``present[N, K]``
    (the class has a candidate; absent entries of ``d`` are 1 and carry no gradient)."""
    q, z = upcast_all(embeddings, ref_embeddings)
    if normalize:
        q, z = F.normalize(q, dim=1), F.normalize(z, dim=1)
    classes, cls = torch.unique(ref_labels, return_inverse=True)
    onehot = F.one_hot(cls, classes.numel()).to(b.sim.dtype)  # [M, K]
    v = torch.ones_like(b.sim) if b.valid is None else b.valid.to(b.sim.dtype)
    counts = v @ onehot  # [N, K]
    w = v / (counts @ onehot.T).clamp_min(1)  # prototype weight of each candidate
    qc = (w * b.sim) @ onehot
    cc = ((w @ ((z @ z.T) * (onehot @ onehot.T))) * w) @ onehot
    present = counts > 0
    d2 = (q * q).sum(dim=1, keepdim=True) - 2 * qc + cc
    d2 = torch.where(present, d2.clamp_min(0), torch.ones_like(d2))
    own = labels[:, None] == classes[None, :]
    return (d2 + eps).sqrt(), own, present


def proto_triplet_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    margin: float = 0.5,
    eps: float = 1e-6,
    normalize: bool = False,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Proto-Triplet loss of ``embeddings[N, D]`` (queries) with integer ``labels[N]``
    against prototypes of ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch,
    self excluded); ``candidate_mask[N, M]`` removes candidates per anchor."""
    m = check_number("margin", margin, low=0.0)
    e = check_number("eps", eps, low=0.0)
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    if ref_embeddings is None:
        ref_embeddings, ref_labels = embeddings, labels
    d, own, present = _prototype_distances(
        b, embeddings, labels, ref_embeddings, ref_labels, normalize=normalize, eps=e
    )
    pos, neg = own & present, ~own & present
    has_pos = pos.any(dim=1)
    has = has_pos & neg.any(dim=1)
    zero = torch.zeros_like(d)
    d_pos = torch.where(pos, d, zero).sum(dim=1)
    d_neg = torch.where(neg, d, torch.full_like(d, float("inf"))).amin(dim=1)
    d_neg = torch.where(has, d_neg, d_pos)  # no negative prototype: masked out below
    per_anchor = torch.where(has, torch.relu(d_pos - d_neg + m), zero[:, 0])
    return reduce_anchors(per_anchor, has_pos, reduction).to(b.dtype)


class ProtoTripletLoss(LabelLossModule):
    """Module form of :func:`proto_triplet_loss`."""

    function = proto_triplet_loss
    options = ("margin", "eps", "normalize", "reduction")

    def __init__(
        self,
        margin: float = 0.5,
        *,
        eps: float = 1e-6,
        normalize: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.margin = check_number("margin", margin, low=0.0)
        self.eps = check_number("eps", eps, low=0.0)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)


register(
    "proto_triplet",
    kind="loss",
    family="embedding",
    papers=(31,),
    summary="Proto-Triplet: hinge on the distance to the own-class prototype vs the nearest "
    "other-class prototype.",
    defaults=_DEFAULTS,
    function=proto_triplet_loss,
    module=ProtoTripletLoss,
)
