"""ICNN loss and score (Mendez-Ruiz et al., "SuSana Distancia is all you need"; paper 31).

The ICNN score rates how well the classes of a set of embeddings are separated, from each
sample's nearest neighbours (intra- and inter-class nearest neighbours); the loss is
``L = -log(score)``. Over the anchors ``A`` (those with at least one same-label candidate),
with Euclidean distances ``d_ia = sqrt(||z_i - z_a||^2 + eps)`` to the candidates ``a``:

- ``K_i``: the ``min(k, C_i)`` nearest candidates of ``i`` (``C_i`` candidates in all);
  ``W_i``: the ``min(window, C_i)`` nearest (``window >= k``, default ``k + 1``).
- ``n_i``: distance to the nearest candidate of another label within ``W_i`` (none: the
  ratios below are 0). For ``a in K_i``: ``r_ia = d_ia / n_i``, then divided by
  ``max(1, max_{b in K_i} r_ib)`` so that every ratio is at most 1.
- ``lambda_same = 1 - mean_i [ mean of r_ia over the same-label a in K_i ]``, the outer mean
  over the anchors with a same-label neighbour in ``K_i`` (1 when there is none): small
  intra-class distances relative to the nearest other class raise it.
- ``lambda_diff = mean_i [ mean of d_ia / D over the other-label a in K_i ]``, ``D`` the
  largest such distance in the batch, the outer mean over the anchors with an other-label
  neighbour in ``K_i``; 1 when no anchor has one (perfect separation at this ``k``).
- ``gamma = mean_{i in A} |same-label a in K_i| / |K_i|``, the k-NN label agreement (counts:
  no gradient).
- ``score = ((lambda_same + lambda_diff) / 2 + gamma) / 2``, in ``[0, 1]``.

The score is invariant to translation, rotation and (at ``eps=0``) scaling of the
embeddings. Tight, well-separated classes of more than ``k`` samples give ``gamma = 1``,
``lambda_diff = 1`` (no other-label neighbour in ``K_i``) and ``lambda_same`` near 1: a score
near 1 and a loss near 0. Defaults (the authors' code): ``k=4``,
``window=k+1``, ``eps=1e-6``; ``normalize=False`` (raw Euclidean embeddings, ProtoNet's).

Contract. The loss is one batch-level value: ``"mean"`` returns it (0 with zero gradient when
no anchor has a same-label candidate), ``"none"`` gives it to every anchor of ``A`` and 0
to the others, ``"sum"`` is ``|A|`` times it. The paper's variants map onto the label-based
form: support-only ``icnn_loss(support, ys)``; query-vs-support
``icnn_loss(query, yq, ref_embeddings=support, ref_labels=ys)`` (or the prototypes as
``ref_embeddings``); support+query ``icnn_loss(cat(support, query), cat(ys, yq),
window=shot + query)``. The paper trains it next to the ProtoNet cross-entropy and
:func:`losskit.embedding.proto_triplet.proto_triplet_loss`, dividing the sum of the chosen
terms by their count.

Sources and differences. The definition above is the released code's ``modified_score``
(maumruiz/FSL-Loss and maumruiz/FewShot-KidneyStones, ``algorithms/icnn_loss.py``); its older
``score`` variant with an extra variance term is not implemented. Departures, all at the
edges: the anchor itself is excluded by the candidate mask, where the code drops each row's
nearest neighbour (in its query-vs-support variant that drops a query's true nearest support
sample); ``k`` and ``window`` are clamped per anchor to its candidates, where the code lowers
``k`` to ``M - 2`` for small sets and then fixes ``gamma = 1``; anchors without a same-label
candidate are left out of the score (the package contract; the code scores every sample,
which only differs with classes of one sample); ratios are guarded by masks instead of a
``1e-7`` in their denominators.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losskit._core.checks import check_number, check_reduction
from losskit._core.precision import upcast_all
from losskit._core.registry import register
from losskit.embedding._common import LabelLossModule, PairBatch, prepare_labels

_DEFAULTS = {"k": 4, "window": None, "eps": 1e-6, "normalize": False}


def _check(k: int, window: int | None, eps: float) -> tuple[int, int, float]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if window is None:
        window = k + 1
    elif isinstance(window, bool) or not isinstance(window, int) or window < k:
        raise ValueError(f"window must be an int >= k={k}, got {window!r}")
    return k, window, check_number("eps", eps, low=0.0)


def _prepare(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None,
    ref_labels: Tensor | None,
    normalize: bool,
    eps: float,
    reduction: str,
    candidate_mask: Tensor | None,
) -> tuple[PairBatch, Tensor]:
    """The validated batch and the distances ``d[N, M]`` (1 at excluded candidates)."""
    b = prepare_labels(
        embeddings,
        labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    q, z = upcast_all(embeddings, embeddings if ref_embeddings is None else ref_embeddings)
    if normalize:
        q, z = F.normalize(q, dim=1), F.normalize(z, dim=1)
    d2 = (q * q).sum(dim=1, keepdim=True) + (z * z).sum(dim=1)[None, :] - 2 * b.sim
    if b.valid is not None:
        d2 = torch.where(b.valid, d2, torch.ones_like(d2))
    return b, (d2.clamp_min(0) + eps).sqrt()


def _score(b: PairBatch, d: Tensor, k: int, window: int) -> tuple[Tensor, Tensor]:
    """The ICNN score over the anchors with a same-label candidate, and their mask."""
    valid = torch.ones_like(b.pos) if b.valid is None else b.valid
    anchors = b.pos.any(dim=1)
    rows = valid & anchors[:, None]
    inf = torch.full_like(d, float("inf"))
    zero = torch.zeros_like(d)
    rank = torch.where(rows, d.detach(), inf).argsort(dim=1, stable=True).argsort(dim=1)
    in_k, in_w = rows & (rank < k), rows & (rank < window)  # excluded ones rank last
    same, diff = in_k & b.pos, in_k & ~b.pos
    # intra-class distances relative to the nearest other-label neighbour in the window
    near_other = in_w & ~b.pos
    has_other = near_other.any(dim=1, keepdim=True)
    nearest = torch.where(near_other, d, inf).amin(dim=1, keepdim=True)
    nearest = torch.where(has_other, nearest, torch.ones_like(nearest))
    r = torch.where(in_k & has_other, d / nearest, zero)
    r = r / r.amax(dim=1, keepdim=True).clamp_min(1)
    n_same = same.sum(dim=1)
    per_same = torch.where(same, r, zero).sum(dim=1) / n_same.clamp_min(1)
    lam_same = 1 - per_same.sum() / (n_same > 0).sum().clamp_min(1)
    # inter-class neighbour distances relative to the largest one in the batch
    n_diff = diff.sum(dim=1)
    any_diff = n_diff.sum() > 0
    top = torch.where(diff, d, zero).amax()
    top = torch.where(any_diff, top, torch.ones_like(top))
    per_diff = torch.where(diff, d / top, zero).sum(dim=1) / n_diff.clamp_min(1)
    mean_diff = per_diff.sum() / (n_diff > 0).sum().clamp_min(1)
    lam_diff = torch.where(any_diff, mean_diff, torch.ones_like(mean_diff))
    agree = n_same.to(d.dtype) / in_k.sum(dim=1).clamp_min(1).to(d.dtype)
    gamma = agree.sum() / anchors.sum().clamp_min(1).to(d.dtype)
    return ((lam_same + lam_diff) / 2 + gamma) / 2, anchors


@torch.no_grad()
def icnn_score(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    k: int = 4,
    window: int | None = None,
    eps: float = 1e-6,
    normalize: bool = False,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """The ICNN score in ``[0, 1]`` (higher: better separated classes) of
    ``embeddings[N, D]`` with ``labels[N]`` against their candidates (default: the batch,
    self excluded), without gradient; NaN when no sample has a same-label candidate."""
    k, window, eps = _check(k, window, eps)
    b, d = _prepare(
        embeddings, labels, ref_embeddings, ref_labels, normalize, eps, "mean", candidate_mask
    )
    score, anchors = _score(b, d, k, window)
    return torch.where(anchors.any(), score, torch.full_like(score, float("nan"))).to(b.dtype)


def icnn_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    k: int = 4,
    window: int | None = None,
    eps: float = 1e-6,
    normalize: bool = False,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """ICNN loss ``-log(score)`` of ``embeddings[N, D]`` with integer ``labels[N]`` against
    ``ref_embeddings[M, D]``/``ref_labels[M]`` (default: the batch, self excluded);
    ``candidate_mask[N, M]`` removes candidates per anchor. A batch-level value: see the
    module docstring for ``"none"``/``"sum"``."""
    k, window, eps = _check(k, window, eps)
    b, d = _prepare(
        embeddings, labels, ref_embeddings, ref_labels, normalize, eps, reduction, candidate_mask
    )
    score, anchors = _score(b, d, k, window)
    loss = -torch.log(score)
    count = anchors.sum()
    if reduction == "none":
        out = torch.where(anchors, loss, torch.zeros_like(loss))
    elif reduction == "sum":
        out = loss * count.to(loss.dtype)
    else:
        out = torch.where(count > 0, loss, torch.zeros_like(loss))
    return out.to(b.dtype)


class ICNNLoss(LabelLossModule):
    """Module form of :func:`icnn_loss`."""

    function = icnn_loss
    options = ("k", "window", "eps", "normalize", "reduction")

    def __init__(
        self,
        k: int = 4,
        *,
        window: int | None = None,
        eps: float = 1e-6,
        normalize: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.k, self.window, self.eps = _check(k, window, eps)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)


register(
    "icnn",
    kind="loss",
    family="embedding",
    papers=(31,),
    summary="ICNN loss: -log of the intra/inter-class nearest-neighbour separation score.",
    defaults=_DEFAULTS,
    function=icnn_loss,
    module=ICNNLoss,
)
