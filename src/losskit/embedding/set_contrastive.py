"""Set-level supervised contrastive loss, the pre-training objective of FACILE (paper 40).

Instances come grouped in sets, and only sets carry a (coarse-grained) label. Each set ``s``
with instances ``x_{s,1..K_s}`` is summarised by a permutation-invariant pooling of their
embeddings,

- ``pooling="mean"``: ``z_s = 1/K_s sum_k x_{s,k}`` (DeepSet's aggregation),
- ``pooling="max"``: ``z_s = max_k x_{s,k}`` (per feature),
- ``pooling="attention"``: ``z_s = sum_k softmax_k(a_{s,k}) x_{s,k}`` with per-instance scores
  ``attention_logits`` produced by the caller's model (attention-based MIL pooling, the
  released code's ``MaxWelling`` set model),

and the set vectors are trained with SupCon (``supcon_loss``, the "L_out" form) on the set
labels: for set ``s`` with candidates ``A(s)`` (the other sets, or ``ref_embeddings``) and
positives ``P(s)`` (candidates with its label),

``l_s = -1/|P(s)| sum_{p in P(s)} log( exp(<z_s, z_p>/T) / sum_{a in A(s)} exp(<z_s, z_a>/T) )``

with L2-normalised ``z`` when ``normalize=True``. Inputs: ``instance_embeddings[S, K, D]``
(equal-sized sets), or ``instance_embeddings[N, D]`` with ``set_index[N]`` (integer in
``[0, S)``, sets of any size, none empty); ``set_labels[S]``. ``ref_embeddings[M, D]`` /
``ref_labels[M]`` are already pooled set vectors (e.g. gathered across ranks), and
``candidate_mask[S, M]`` follows the package contract. ``reduction="none"`` gives one value
per set. Pooling runs in float32 or wider; the result has the input dtype.

Relations: with one instance per set (``K = 1``) this is ``supcon_loss`` on the instances with
their sets' labels; the pooled value is invariant to the order of instances inside a set; two
augmented views of every set with distinct labels give SimCLR's NT-Xent on sets.
Default ``temperature=0.07`` and two views per set (the caller stacks them as sets sharing a
label) are the released code's. The paper's set-input model is learned (a SetTransformer by
default, DeepSet and attention pooling as options); a learned set model belongs to the model
in front of this loss (``losskit.procedures.facile`` takes one), while the loss itself offers
the fixed poolings above.
"""

from __future__ import annotations

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_finite, checks_enabled
from losskit._core.precision import upcast
from losskit._core.registry import register
from losskit.embedding._common import (
    EmbeddingLossModule,
    check_labels,
    check_temperature,
    multi_positive_nll,
    prepare_labels,
)

POOLINGS = ("mean", "max", "attention")


def _flatten(
    x: Tensor, set_index: Tensor | None, logits: Tensor | None, num_sets: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate and bring the inputs to the flat form ``x[N, D]``, ``index[N]``, ``logits[N]``."""
    name = "instance_embeddings"
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor")
    if set_index is None:
        if x.ndim != 3:
            raise ValueError(
                f"{name} must have shape [S, K, D] (or [N, D] with set_index), "
                f"got shape {tuple(x.shape)}"
            )
        s, k, _ = x.shape
        if s != num_sets:
            raise ValueError(f"set_labels must have shape ({s},) like the sets, got ({num_sets},)")
        if logits is not None and (not isinstance(logits, Tensor) or logits.shape != (s, k)):
            raise ValueError(f"attention_logits must have shape {(s, k)}")
        index = torch.arange(s, device=x.device).repeat_interleave(k)
        x = x.reshape(s * k, x.shape[2])
        logits = None if logits is None else logits.reshape(s * k)
    else:
        if x.ndim != 2:
            raise ValueError(f"{name} with set_index must have shape [N, D], got {tuple(x.shape)}")
        check_labels(set_index, x.shape[0], "set_index")
        index = set_index
        if logits is not None and (not isinstance(logits, Tensor) or logits.shape != index.shape):
            raise ValueError(f"attention_logits must have shape {tuple(index.shape)}")
        if checks_enabled() and index.numel():
            if bool((index < 0).any()) or bool((index >= num_sets).any()):
                raise ValueError(f"set_index must hold set numbers in [0, {num_sets})")
            if bool((torch.bincount(index, minlength=num_sets) == 0).any()):
                raise ValueError("set_index leaves a set without instances")
    if x.shape[0] == 0 or x.shape[1] == 0 or num_sets == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    check_finite(name, x)
    if logits is not None:
        if not logits.is_floating_point():
            raise ValueError("attention_logits must be a floating tensor")
        check_finite("attention_logits", logits)
    return x, index, logits


def _group_max(v: Tensor, index: Tensor, num_sets: int) -> Tensor:
    """Per-set maximum of the rows of ``v[N, F]``."""
    out = v.new_full((num_sets, v.shape[1]), float("-inf"))
    return out.scatter_reduce(0, index[:, None].expand_as(v), v, "amax", include_self=False)


def pool_sets(
    instance_embeddings: Tensor,
    *,
    set_index: Tensor | None = None,
    num_sets: int | None = None,
    pooling: str = "mean",
    attention_logits: Tensor | None = None,
) -> Tensor:
    """Permutation-invariant set vectors ``[S, D]`` (in float32 or wider) from
    ``instance_embeddings[S, K, D]``, or ``[N, D]`` with ``set_index[N]`` (``num_sets``
    defaults to ``set_index.max() + 1``). Poolings as in the module docstring."""
    check_choice("pooling", pooling, POOLINGS)
    if not isinstance(instance_embeddings, Tensor):
        raise ValueError("instance_embeddings must be a floating torch.Tensor")
    if (pooling == "attention") != (attention_logits is not None):
        raise ValueError('attention_logits must be given exactly when pooling="attention"')
    if set_index is not None and not isinstance(set_index, Tensor):
        raise ValueError(f"set_index must be a torch.Tensor, got {type(set_index).__name__}")
    if num_sets is None:
        if set_index is None:
            num_sets = instance_embeddings.shape[0] if instance_embeddings.ndim == 3 else 0
        else:
            num_sets = int(set_index.max()) + 1 if set_index.numel() else 0
    x, index, logits = _flatten(instance_embeddings, set_index, attention_logits, num_sets)
    x = upcast(x)
    if pooling == "max":
        return _group_max(x, index, num_sets)
    if pooling == "mean":
        weight = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        a = logits.to(x.dtype)
        top = _group_max(a.detach()[:, None], index, num_sets)[:, 0]
        weight = torch.exp(a - top[index])  # softmax within each set, shifted for stability
    total = weight.new_zeros(num_sets).index_add(0, index, weight)
    pooled = x.new_zeros(num_sets, x.shape[1]).index_add(0, index, weight[:, None] * x)
    return pooled / total[:, None]


def set_supcon_loss(
    instance_embeddings: Tensor,
    set_labels: Tensor,
    *,
    set_index: Tensor | None = None,
    pooling: str = "mean",
    attention_logits: Tensor | None = None,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """SupCon on pooled sets: ``instance_embeddings[S, K, D]`` (or ``[N, D]`` with
    ``set_index[N]``) and integer ``set_labels[S]``; one value per set for ``"none"``."""
    t = check_temperature(temperature)
    if not isinstance(set_labels, Tensor) or set_labels.ndim != 1:
        raise ValueError("set_labels must be a 1-D tensor of integer set labels")
    check_labels(set_labels, set_labels.shape[0], "set_labels")
    pooled = pool_sets(
        instance_embeddings,
        set_index=set_index,
        num_sets=set_labels.shape[0],
        pooling=pooling,
        attention_logits=attention_logits,
    )
    b = prepare_labels(
        pooled,
        set_labels,
        ref_embeddings,
        ref_labels,
        normalize=normalize,
        reduction=reduction,
        candidate_mask=candidate_mask,
    )
    return multi_positive_nll(b, t, reduction).to(instance_embeddings.dtype)


class SetSupConLoss(EmbeddingLossModule):
    """Module form of :func:`set_supcon_loss`."""

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(temperature, normalize, reduction)
        check_choice("pooling", pooling, POOLINGS)
        self.pooling = pooling

    def forward(
        self,
        instance_embeddings: Tensor,
        set_labels: Tensor,
        set_index: Tensor | None = None,
        attention_logits: Tensor | None = None,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        candidate_mask: Tensor | None = None,
    ) -> Tensor:
        return set_supcon_loss(
            instance_embeddings,
            set_labels,
            set_index=set_index,
            pooling=self.pooling,
            attention_logits=attention_logits,
            ref_embeddings=ref_embeddings,
            ref_labels=ref_labels,
            temperature=self.temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            candidate_mask=candidate_mask,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pooling={self.pooling!r}"


register(
    "set_supcon",
    kind="loss",
    family="embedding",
    papers=(40,),
    summary="FACILE's set-level SupCon: pool each set's instance embeddings, contrast set labels.",
    defaults={"temperature": 0.07, "pooling": "mean", "normalize": True},
    function=set_supcon_loss,
    module=SetSupConLoss,
)
