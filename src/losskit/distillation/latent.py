"""Latent distillation loss for transformer students (paper 1, ERNIE-Tiny; TinyBERT's form).

ERNIE-Tiny's ``L_lat`` matches the student's internal representations to the teacher's on
mapped layers, in the form TinyBERT introduced:

* hidden states: ``L_hidn = MSE(H^S W_h, H^T)`` with a learned projection ``W_h [Ds, Dt]``
  from the student's width to the teacher's;
* embeddings (hidden state 0): ``L_embd = MSE(E^S W_e, E^T)`` with its own projection ``W_e``;
* attention: ``L_attn = (1/h) sum_heads MSE(A^S_head, A^T_head)`` between the attention maps of
  mapped layers (``mode="mse"``, TinyBERT); ``mode="kl"`` instead takes the row-wise
  ``KL(A^T_q || A^S_q)`` of the attention distributions (MiniLM's form), better scaled when the
  maps are softmax probabilities, as Hugging Face's ``output_attentions`` returns them.

``L_lat = sum_{(m, n) in layer_map} [L_hidn(m, n) + L_attn(m, n)]``, the embedding pair
``(0, 0)`` contributing ``L_embd`` only, with equal weights. The map pairs student hidden-state
indices ``m`` with teacher indices ``n`` (0 is the embedding output, ``l`` the output of layer
``l``); :func:`uniform_layer_map` gives TinyBERT's uniform strategy ``n = m * L_T / L_S``.

Inputs (one row per sequence, ``T`` tokens):

====================  ============================  =======================================
argument              shape                         meaning
====================  ============================  =======================================
``student_hidden``    ``[N, T, Ds]`` floating       one student hidden state
``teacher_hidden``    ``[N, T, Dt]`` floating       the mapped teacher state (detached)
``projection``        ``[Ds, Dt]`` tensor,          ``W_h``; ``None`` is the identity
                      ``nn.Linear(Ds, Dt)`` or None  (then ``Ds == Dt``)
``student_attn``      ``[N, H, T, T]`` floating     attention maps, rows = queries
``teacher_attn``      ``[N, H', T, T]`` floating    ``H' == H`` unless ``heads="mean"``
``attention_mask``    ``[N, T]``, 1 = token,        padding tokens are excluded: they add
                      0 = padding                   nothing and get zero gradient
====================  ============================  =======================================

Per sample, MSE is the mean over the sample's real tokens (and feature dims, heads, or real
query-key pairs), so padding a batch changes nothing; ``reduction`` then works over samples:
``"none"`` one value per sequence, ``"mean"`` their mean. TinyBERT's code averages over every
token in the batch instead; the two agree when all sequences have the same length.

Where the paper is followed rather than code: the projections have no bias (the paper's
``H^S W_h``; TinyBERT's code uses a biased ``nn.Linear``, which is accepted too) and ``W_e`` is
separate from ``W_h`` (the code shares one). ERNIE-Tiny's text was not available to check the
exact weights, so the four terms are summed with weight 1 as in TinyBERT. TinyBERT matches the
pre-softmax scores ``QK^T/sqrt(d)``; pass those if you have them, ``mode="mse"`` treats any map
alike. With ``mode="kl"`` the student's probabilities are clamped at the smallest normal float
before the log, so an underflowed 0 gives a large finite loss rather than ``inf``; each real
query row of both maps must sum to 1 over the real keys (checked), which rules out maps taken
after attention dropout, as Hugging Face returns them in training mode.

Properties: zero when the student's states equal the teacher's and the projection is the
identity; invariant to padding; the teacher gets no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losskit._core.checks import check_choice, check_finite, check_reduction, checks_enabled
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register

MODES = ("mse", "kl")
HEADS = ("match", "mean")
Projection = Tensor | nn.Linear | None


def _check_tensor(x: Tensor, name: str, ndim: int) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor")
    if x.ndim != ndim or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-d tensor, got {tuple(x.shape)}")
    check_finite(name, x)


def _token_mask(mask: Tensor | None, n: int, t: int) -> Tensor | None:
    """``attention_mask`` as a bool ``[N, T]`` (``None`` when absent)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (n, t):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"attention_mask must be a tensor of shape {(n, t)}, got {got}")
    keep = mask.bool()
    if checks_enabled():
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold 0 (padding) and 1 (token) only")
        if not bool(keep.any(dim=1).all()):
            raise ValueError("attention_mask has a sequence without any token")
    return keep


def _masked_mean(x: Tensor, keep: Tensor | None, dims: tuple[int, ...]) -> Tensor:
    """Mean of ``x`` over ``dims`` restricted to ``keep`` (zero gradient elsewhere)."""
    if keep is None:
        return x.mean(dim=dims)
    keep = keep.expand_as(x)
    total = torch.where(keep, x, torch.zeros_like(x)).sum(dim=dims)
    return total / keep.sum(dim=dims).to(x.dtype)


def _project(s: Tensor, projection: Projection, dt: int, dtype: torch.dtype) -> Tensor:
    if projection is None:
        if s.shape[-1] != dt:
            raise ValueError(
                f"projection is required when widths differ (student {s.shape[-1]}, teacher {dt})"
            )
        return s
    if isinstance(projection, nn.Linear):
        w, b = projection.weight.t(), projection.bias
    elif isinstance(projection, Tensor) and projection.is_floating_point():
        w, b = projection, None
    else:
        raise ValueError("projection must be a floating [Ds, Dt] tensor, an nn.Linear or None")
    if tuple(w.shape) != (s.shape[-1], dt):
        raise ValueError(f"projection must map {s.shape[-1]} to {dt} dims, got {tuple(w.shape)}")
    out = s @ w.to(dtype)
    return out if b is None else out + b.to(dtype)


def _check_distributions(x: Tensor, keep: Tensor | None, name: str, tol: float = 1e-2) -> None:
    """``mode="kl"`` needs each real query row to be a distribution over the real keys (a map
    taken after attention dropout is not one). ``tol`` admits maps rounded to bfloat16."""
    if keep is not None:
        x = torch.where(keep[:, None, None, :], x, torch.zeros_like(x))
    sums = x.sum(dim=-1)
    if keep is not None:
        sums = sums[keep[:, None, :].expand_as(sums)]
    if bool((x < 0).any()) or not bool(((sums - 1).abs() <= tol).all()):
        raise ValueError(
            f"{name} must hold attention probabilities for mode='kl': rows non-negative and "
            "summing to 1 over the tokens (maps taken before attention dropout)"
        )


def _hidden_per_sample(s: Tensor, t: Tensor, projection: Projection, mask: Tensor | None) -> Tensor:
    _check_tensor(s, "student_hidden", 3)
    _check_tensor(t, "teacher_hidden", 3)
    if s.shape[:2] != t.shape[:2]:
        raise ValueError(
            f"teacher_hidden must match student_hidden in [N, T] {tuple(s.shape[:2])}, "
            f"got {tuple(t.shape[:2])}"
        )
    keep = _token_mask(mask, s.shape[0], s.shape[1])
    w = projection.weight if isinstance(projection, nn.Linear) else projection
    s, t, _ = upcast_all(s, t.detach(), w if isinstance(w, Tensor) else None)
    sq = (_project(s, projection, t.shape[-1], s.dtype) - t).pow(2)
    return _masked_mean(sq.mean(dim=-1), keep, (1,))


def _attention_per_sample(
    s: Tensor, t: Tensor, mask: Tensor | None, mode: str, heads: str
) -> Tensor:
    check_choice("mode", mode, MODES)
    check_choice("heads", heads, HEADS)
    _check_tensor(s, "student_attn", 4)
    _check_tensor(t, "teacher_attn", 4)
    n, _, q, k = s.shape
    if q != k or t.shape[0] != n or tuple(t.shape[2:]) != (q, k):
        raise ValueError(
            f"teacher_attn must be [N, H, T, T] like student_attn {tuple(s.shape)}, "
            f"got {tuple(t.shape)}"
        )
    if heads == "match" and t.shape[1] != s.shape[1]:
        raise ValueError(
            f"teacher_attn has {t.shape[1]} heads, student_attn {s.shape[1]}: pass heads='mean' "
            "to compare head-averaged maps"
        )
    keep = _token_mask(mask, n, q)
    s, t = upcast_all(s, t.detach())
    if mode == "kl" and checks_enabled():
        _check_distributions(s, keep, "student_attn")
        _check_distributions(t, keep, "teacher_attn")
    if heads == "mean":
        s, t = s.mean(dim=1, keepdim=True), t.mean(dim=1, keepdim=True)
    pairs = None if keep is None else keep[:, None, :, None] & keep[:, None, None, :]
    if mode == "mse":
        return _masked_mean((s - t).pow(2), pairs, (1, 2, 3))
    valid = t > 0 if pairs is None else (t > 0) & pairs
    log_s = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))
    log_t = torch.log(torch.where(valid, t, torch.ones_like(t)))
    rows = torch.where(valid, t * (log_t - log_s), torch.zeros_like(t)).sum(dim=3)
    return _masked_mean(rows, None if keep is None else keep[:, None, :], (1, 2))


def hidden_state_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    projection: Projection = None,
    *,
    attention_mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``MSE(H^S W_h, H^T)`` per sequence over its real tokens and the teacher's dims."""
    check_reduction(reduction)
    per = _hidden_per_sample(student_hidden, teacher_hidden, projection, attention_mask)
    return reduce_loss(per, reduction).to(student_hidden.dtype)


def attention_map_loss(
    student_attn: Tensor,
    teacher_attn: Tensor,
    *,
    attention_mask: Tensor | None = None,
    mode: str = "mse",
    heads: str = "match",
    reduction: str = "mean",
) -> Tensor:
    """Attention-map matching per sequence, averaged over heads and real query rows.

    ``mode="mse"``: mean squared difference over real (query, key) pairs (TinyBERT).
    ``mode="kl"``: ``KL(A^T_q || A^S_q)`` summed over real keys, for probability maps.
    ``heads="match"`` compares head ``h`` with head ``h`` (equal head counts required);
    ``heads="mean"`` averages each side over its heads first, so head counts may differ.
    """
    check_reduction(reduction)
    per = _attention_per_sample(student_attn, teacher_attn, attention_mask, mode, heads)
    return reduce_loss(per, reduction).to(student_attn.dtype)


def uniform_layer_map(
    student_layers: int, teacher_layers: int, *, embedding: bool = True
) -> list[tuple[int, int]]:
    """TinyBERT's uniform map: student layer ``m`` learns teacher layer ``m * L_T // L_S``."""
    if student_layers < 1 or teacher_layers < student_layers:
        raise ValueError(
            f"student_layers must be in [1, teacher_layers={teacher_layers}], got {student_layers}"
        )
    step = teacher_layers // student_layers
    pairs = [(m, m * step) for m in range(1, student_layers + 1)]
    return [(0, 0), *pairs] if embedding else pairs


def _check_layer_map(layer_map: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    pairs = [tuple(int(i) for i in p) for p in layer_map]
    if not pairs or any(len(p) != 2 or min(p) < 0 or (p[0] == 0) != (p[1] == 0) for p in pairs):
        raise ValueError(
            "layer_map must be non-empty (student, teacher) index pairs >= 0, with 0 (the "
            f"embeddings) paired only with 0, got {layer_map!r}"
        )
    return pairs  # type: ignore[return-value]


def latent_distillation_loss(
    student_hidden_states: Sequence[Tensor],
    teacher_hidden_states: Sequence[Tensor],
    layer_map: Sequence[tuple[int, int]],
    *,
    student_attentions: Sequence[Tensor] | None = None,
    teacher_attentions: Sequence[Tensor] | None = None,
    hidden_projection: Projection = None,
    embedding_projection: Projection = None,
    attention_mask: Tensor | None = None,
    mode: str = "mse",
    heads: str = "match",
    reduction: str = "mean",
) -> Tensor:
    """``L_lat``: hidden-state (or embedding) MSE plus attention matching on mapped layers.

    Hidden states are indexed as Hugging Face's ``output_hidden_states`` (0 = embeddings);
    attentions as ``output_attentions`` (entry ``l - 1`` belongs to layer ``l``). The attention
    term is added for every pair of layers ``>= 1`` when both attention sequences are given.
    """
    check_reduction(reduction)
    pairs = _check_layer_map(layer_map)
    use_attn = student_attentions is not None and teacher_attentions is not None
    ns, nt = len(student_hidden_states), len(teacher_hidden_states)
    for m, n in pairs:
        if m >= ns or n >= nt:
            raise ValueError(
                f"layer_map pair {(m, n)} is out of range for {ns} student and {nt} teacher "
                "hidden states"
            )
        if use_attn and (m > len(student_attentions) or n > len(teacher_attentions)):
            raise ValueError(f"layer_map pair {(m, n)} has no attention maps")
    total = None
    for m, n in pairs:
        proj = embedding_projection if m == 0 else hidden_projection
        s, t = student_hidden_states[m], teacher_hidden_states[n]
        term = _hidden_per_sample(s, t, proj, attention_mask)
        if use_attn and m > 0:
            sa, ta = student_attentions[m - 1], teacher_attentions[n - 1]
            term = term + _attention_per_sample(sa, ta, attention_mask, mode, heads).to(term)
        total = term if total is None else total + term.to(total.dtype)
    return reduce_loss(total, reduction).to(student_hidden_states[pairs[0][0]].dtype)


class LatentDistillationLoss(nn.Module):
    """Module form of :func:`latent_distillation_loss`, owning the learned projections.

    ``student_dims`` / ``teacher_dims`` are the hidden widths (the same for every layer, as in
    BERT). ``W_h`` (``hidden_projection``) and, when the map holds the embedding pair
    ``(0, 0)``, ``W_e`` (``embedding_projection``) are bias-free ``nn.Linear`` layers, started at
    the identity when the widths are equal and at PyTorch's default otherwise.
    """

    def __init__(
        self,
        student_dims: int,
        teacher_dims: int,
        layer_map: Sequence[tuple[int, int]],
        *,
        attention: bool = True,
        mode: str = "mse",
        heads: str = "match",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        for name, value in (("student_dims", student_dims), ("teacher_dims", teacher_dims)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_choice("mode", mode, MODES)
        check_choice("heads", heads, HEADS)
        self.layer_map = _check_layer_map(layer_map)
        self.attention, self.mode, self.heads = bool(attention), mode, heads
        self.reduction = check_reduction(reduction)
        self.hidden_projection = self._linear(student_dims, teacher_dims)
        has_embedding = any(m == 0 for m, _ in self.layer_map)
        self.embedding_projection = (
            self._linear(student_dims, teacher_dims) if has_embedding else None
        )

    @staticmethod
    def _linear(ds: int, dt: int) -> nn.Linear:
        lin = nn.Linear(ds, dt, bias=False)
        if ds == dt:
            with torch.no_grad():
                lin.weight.copy_(torch.eye(ds))
        return lin

    def forward(
        self,
        student_hidden_states: Sequence[Tensor],
        teacher_hidden_states: Sequence[Tensor],
        student_attentions: Sequence[Tensor] | None = None,
        teacher_attentions: Sequence[Tensor] | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        return latent_distillation_loss(
            student_hidden_states, teacher_hidden_states, self.layer_map,
            student_attentions=student_attentions if self.attention else None,
            teacher_attentions=teacher_attentions if self.attention else None,
            hidden_projection=self.hidden_projection,
            embedding_projection=self.embedding_projection, attention_mask=attention_mask,
            mode=self.mode, heads=self.heads, reduction=self.reduction,
        )  # fmt: skip


register(
    "latent_distillation",
    kind="loss",
    family="distillation",
    papers=(1,),
    summary="ERNIE-Tiny/TinyBERT latent loss: projected hidden-state MSE + attention matching.",
    defaults={"attention": True, "mode": "mse", "heads": "match"},
    function=latent_distillation_loss,
    module=LatentDistillationLoss,
)
