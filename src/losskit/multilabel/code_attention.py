"""Code-wise attention head of TransICD (paper 14): one attention distribution per label.

Token features ``H[N, T, D]`` (a transformer encoder's output) are turned into one
representation per label, then one logit per label::

    e_lt = u_l . tanh(W H_t + b) + c_l            (attention scores, W: [D*e, D], u_l: [D*e])
    a_lt = softmax_t(e_lt)                        (padding tokens excluded)
    v_l  = sum_t a_lt H_t                         (label-specific document vector)
    z_l  = w_l . v_l + b_l                        (one linear output per label)

This follows ``biplob1ly/TransICD`` ``code/models.py`` (``Attention``): the attention query
acts on ``tanh`` of a linear projection of width ``attn_expansion * D`` (default 2), the
weighted sum is taken over the untransformed features ``H``, and each label has its own
``Linear(D, 1)``. The per-label score bias ``c_l`` cancels in the softmax; it is kept so the
parameterisation matches the reference. The reference fills padding scores with ``-1e9``; here
they get the most negative finite value of the dtype, so padding tokens get exactly zero
attention (a row made only of padding gets uniform attention, as in the reference). Everything
is vectorised over labels (the reference loops over its per-label linear layers).

The attention weights ``a[N, L, T]`` are the explanation TransICD reports (which tokens support
code ``l``). Pair the logits with :func:`losskit.multilabel.ldam.multilabel_ldam_loss` for the
full TransICD objective. This is a model head, not a loss, so it is not registered.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from losskit._core.precision import upcast


class CodeWiseAttention(nn.Module):
    """Label-wise attention over tokens plus per-label linear outputs.

    ``forward(hidden[N, T, D], padding_mask[N, T] | None)`` returns logits ``[N, L]``, or
    ``(logits, attention[N, L, T])`` with ``return_attention=True``. ``padding_mask`` is bool with
    ``True`` at padding positions (the ``key_padding_mask`` convention of
    ``torch.nn.MultiheadAttention``).
    """

    def __init__(self, hidden_dim: int, num_labels: int, *, attn_expansion: int = 2) -> None:
        super().__init__()
        for name, value in (
            ("hidden_dim", hidden_dim),
            ("num_labels", num_labels),
            ("attn_expansion", attn_expansion),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.hidden_dim = hidden_dim
        self.num_labels = num_labels
        self.project = nn.Linear(hidden_dim, hidden_dim * attn_expansion)
        self.query = nn.Linear(hidden_dim * attn_expansion, num_labels)
        # one Linear(D, 1) per label, stored as one [L, D] matrix and [L] bias
        bound = 1.0 / math.sqrt(hidden_dim)
        self.out_weight = nn.Parameter(torch.empty(num_labels, hidden_dim).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.empty(num_labels).uniform_(-bound, bound))

    def attention(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Attention weights ``[N, L, T]``; each row sums to one over tokens."""
        self._check(hidden, padding_mask)
        scores = self.query(torch.tanh(self.project(hidden)))  # [N, T, L]
        if padding_mask is not None:
            fill = torch.finfo(scores.dtype).min
            scores = scores.masked_fill(padding_mask[:, :, None], fill)
        # softmax in at least float32 (as the objectives do), weights in the input dtype
        return torch.softmax(upcast(scores), dim=1).to(scores.dtype).transpose(1, 2)

    def forward(
        self,
        hidden: Tensor,
        padding_mask: Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        attn = self.attention(hidden, padding_mask)
        label_vectors = attn @ hidden  # [N, L, D]
        logits = (label_vectors * self.out_weight).sum(dim=-1) + self.out_bias
        return (logits, attn) if return_attention else logits

    def _check(self, hidden: Tensor, padding_mask: Tensor | None) -> None:
        if not isinstance(hidden, Tensor) or not hidden.is_floating_point():
            raise ValueError("hidden must be a floating tensor of shape [N, T, D]")
        if hidden.ndim != 3 or hidden.shape[-1] != self.hidden_dim or hidden.shape[1] == 0:
            raise ValueError(
                f"hidden must have shape [N, T, {self.hidden_dim}] with T >= 1, "
                f"got {tuple(hidden.shape)}"
            )
        if padding_mask is None:
            return
        if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
            raise ValueError("padding_mask must be a bool tensor (True at padding positions)")
        if tuple(padding_mask.shape) != tuple(hidden.shape[:2]):
            raise ValueError(
                f"padding_mask must have shape {tuple(hidden.shape[:2])}, "
                f"got {tuple(padding_mask.shape)}"
            )
