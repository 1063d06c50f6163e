"""Soft top-k operator and the soft top-k loss (paper 3, DEXML).

Memberships ``p_ij = sigmoid(alpha (s_ij + t_i))``, the row threshold ``t_i`` solving
``sum_j p_ij = k`` over the row's known labels (unknown labels have membership 0 and do not
count). The loss asks each known positive to be in the soft top-k:
``L_i = -(1/|P_i|) sum_{j in P_i} logsigmoid(alpha (s_ij + t_i))``. Defaults from the released
configs (``configs/dual-encoder.yaml``): ``k = 5``, ``alpha = 2``, ``n_iter = 32`` (scores
there are cosine similarities over ``tau = 0.05``). As ``alpha`` grows the memberships tend
to the hard top-k indicator and the loss to 0 for a positive inside the top k. ``k`` may be
any number in ``(0, n_i)``; the code's ``topk_K: num_pos`` (``k`` = the row's positive count)
is not offered. Shortlist training works as for
:func:`~losskit.multilabel.decoupled_softmax.decoupled_softmax_loss` (scores over the
shortlist, padding masked), with the top-k race then run among the shortlist.

Threshold: ``n_iter`` halvings of the bracket ``[logit(k/n_i) - max_j a_ij, logit(k/n_i) -
min_j a_ij]`` (``a = alpha s``, ``n_i`` known labels), which always holds the root (at its ends
every membership is at most, or at least, ``k/n_i``; the released code's ``-max - 10/alpha,
-min + 10/alpha`` misses it once ``n_i sigmoid(-10) > k``, past ~110,000 labels for ``k = 5``).
Its lower end is raised to ``log k - logsumexp_j a_ij`` when higher (``sigmoid(z) < e^z``), and
the halvings stop once the bracket no longer shrinks in floating point (the remaining ones
would change nothing; about 20 in float32). The gradient of ``t_i`` is the implicit-function
theorem's, ``dt_i/ds_il = -sigma'_il / sum_l' sigma'_il'``, in a custom autograd function, not
autograd through the iterations; its backward reuses the forward's ``[N, L]`` buffer and makes
one dense pass.

Moments for many labels (``L > 4k``), exact to the working precision: the top ``m = 4k`` labels
of a row are kept; call ``c_i`` the m-th largest ``a_ij``. At the root each of them has a
membership at least ``sigmoid(c_i + alpha t_i)``, so ``u = e^{c_i + alpha t_i} <= k / (m - k)
<= 1/3``, and every other label has ``u e_ij <= u`` with ``e_ij = e^{a_ij - c_i} <= 1``. Their
memberships sum to ``sum_p (-1)^(p+1) u^p S_p``, ``S_p = sum_j e_ij^p``, truncated when the
remainder bound falls below the machine epsilon (3 or 4 terms in float32 on random scores).
The bisection then touches ``[N, m]`` values and a few moments per row instead of all labels:
one ``topk`` and about four passes over the scores replace ``n_iter`` of them.

``sample_positives=True`` follows the released code's ``loss_sample: True``: each call keeps
``floor(k)`` positives per row (all if fewer), drawn uniformly with ``generator``, and removes
the others from the row (the code writes ``-100`` into their scores). The code also samples
whenever ``K`` is below the padded width of its positive lists, even with ``loss_sample:
False``; here only when asked. Rows without a known positive follow ``empty`` (see
:mod:`losskit.multilabel.softmax`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from losskit._core.checks import check_number, check_scores, checks_enabled
from losskit._core.precision import upcast
from losskit._core.registry import register
from losskit.multilabel._common import check_mask, prepare_multilabel
from losskit.multilabel.decoupled_softmax import PositiveSamplingLoss, sample_positive_entries
from losskit.multilabel.softmax import finish_rows, positive_entries, row_sums

# labels out of the race: a dense mask of unknown labels and (rows, cols) of dropped positives
Hidden = tuple[Tensor | None, tuple[Tensor, Tensor] | None]


def _hide_(t: Tensor, hidden: Hidden, value: float) -> Tensor:
    """Write ``value`` into ``t`` at the hidden labels (in place)."""
    unknown, drop = hidden
    if unknown is not None:
        t.masked_fill_(unknown, value)
    if drop is not None:
        t.index_put_(drop, t.new_tensor(value))
    return t


def _tail_moments(
    x: Tensor,
    hidden: Hidden,
    top: Tensor,
    pivot: Tensor,
    k: float,
    alpha: float,
    buf: Tensor,
) -> tuple[list[Tensor], Tensor]:
    """``S_m = sum_j e_j^m`` over the labels off the ``top`` indices, ``e_j = e^{alpha s_j -
    pivot} <= 1``, for ``m = 1..p``, and the bound ``rho`` on ``u = e^{pivot + alpha t}`` at
    the root. The series truncated after ``p`` terms errs by at most ``rho^p S_{p+1} / S_1
    <= rho^p S_2 / S_1`` of the tail; ``p`` is the first that brings this below the machine
    epsilon. ``e^c`` for odd ``c`` is computed into ``buf`` and gives ``S_c`` (its sum) and
    ``S_2c``, ``S_4c``, ... (squared norms of it and of its squares)."""
    moments: dict[int, Tensor] = {}

    def powers(c: int) -> Tensor:  # e^c into buf, and S_c
        e = torch.add(-c * pivot.unsqueeze(1), x, alpha=c * alpha, out=buf)
        e = _hide_(e, hidden, -math.inf).scatter_(1, top, -math.inf).exp_()
        moments[c] = e.sum(dim=1)
        return e

    def chain(e: Tensor, c: int, p: int) -> None:  # e = e^c: S_2c, S_4c, ... up to S_p
        while 2 * c <= p:
            if 2 * c not in moments:
                moments[2 * c] = torch.linalg.vector_norm(e, dim=1).square()
            if 4 * c > p:
                return
            e, c = e.square_(), 2 * c

    e = powers(1)
    chain(e, 1, 2)
    s1, s2 = moments[1], moments[2]
    # at the root the top m memberships are >= sigmoid(pivot + alpha t), so
    # u <= k / (m - k) <= 1/3; and the tail alone gives u <= k / (S_1 - k)
    rho = torch.where(s1 > k, k / (s1 - k), math.inf).clamp_max(k / (top.shape[1] - k))
    ratio = torch.where(s1 > 0, s2 / s1, 0.0)
    eps, p = torch.finfo(x.dtype).eps, 1
    while float((rho**p * ratio).max()) > eps:
        p += 1
    chain(e, 1, p)
    for c in range(3, p + 1, 2):
        chain(powers(c), c, p)
    return [moments[i] for i in range(1, p + 1)], rho


@torch.no_grad()
def _solve_shift(
    x: Tensor,
    hidden: Hidden,
    n: Tensor,
    k: float,
    alpha: float,
    n_iter: int,
    top: int | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Row thresholds ``t[N]`` with ``sum_j sigmoid(alpha (x_ij + t_i)) = k`` over the labels
    not hidden (``n[N]`` of them per row), by bisection; a free ``[N, L]`` buffer for the
    backward; and the indices of the labels kept exactly (``None``: all). ``top`` overrides
    their number (the fast path runs when it is below ``L``)."""
    buf = torch.empty_like(x)
    xm = x if hidden[0] is None and hidden[1] is None else _hide_(buf.copy_(x), hidden, -math.inf)
    c = math.log(k) - torch.log(n - k)  # logit(k / n); thresholds in units of alpha * s
    m = math.ceil(4 * k) if top is None else top  # labels kept exactly
    idx = None
    if m >= x.shape[1]:
        vals = xm * alpha
    else:
        vals, idx = xm.topk(m, dim=1)
        vals = vals.mul_(alpha)
        tail = vals[:, -1] > -math.inf  # rows with more than m known labels
        pivot = torch.where(tail, vals[:, -1], torch.zeros_like(c))
        moments, rho = _tail_moments(x, hidden, idx, pivot, k, alpha, buf)
        order = torch.arange(1, len(moments) + 1, dtype=x.dtype, device=x.device)
        signed = torch.stack(moments, dim=1) * (1 - 2 * (order % 2 == 0))  # (-1)^(p+1) S_p
        signed = torch.where(tail.unsqueeze(1), signed, 0.0)
    # sigmoid(z) < e^z gives t > log k - logsumexp(a) as well
    lse = torch.logsumexp(vals, dim=1)
    if idx is not None:
        lse = torch.where(tail, torch.logaddexp(lse, pivot + moments[0].log()), lse)
    lo = torch.maximum(c - vals.amax(dim=1), math.log(k) - lse)
    hi = c - torch.where(torch.isfinite(vals), vals, math.inf).amin(dim=1)
    if idx is not None:  # keep u <= rho, where the truncated series holds
        hi = torch.where(tail, torch.log(rho) - pivot, hi)
        pivot = torch.where(tail, pivot, -math.inf)  # u = 0 without a tail
    work = torch.empty_like(vals)
    for i in range(n_iter):
        mid = torch.lerp(lo, hi, 0.5)
        if i % 4 == 3 and bool(((mid == lo) | (mid == hi)).all()):
            break  # the bracket no longer shrinks: the remaining halvings change nothing
        total = torch.add(vals, mid.unsqueeze(1), out=work).sigmoid_().sum(dim=1)
        if idx is not None:  # tail: sum_p (-1)^(p+1) u^p S_p, u^p = e^{p (pivot + mid)}
            powers = torch.outer(pivot + mid, order).exp_()
            total = total + torch.linalg.vecdot(powers, signed)
        below = total < k
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / (2 * alpha), buf, idx


def _shift_vjp(
    x: Tensor,
    hidden: Hidden,
    t: Tensor,
    alpha: float,
    grad: Tensor,
    out: Tensor | None,
    top: Tensor | None,
) -> Tensor:
    """``grad_t . dt/ds`` with ``dt_i/ds_il = -sigma'_il / sum_l' sigma'_il'`` (implicit
    function theorem) at ``z = alpha (s + t)``, written into ``out`` (when given); exactly 0 on
    hidden labels. ``sigma' = w - w^2`` with ``w = sigmoid(z)`` is accurate where ``z <= 0``;
    the labels with ``z > 0`` (fewer than ``2k``) lie in ``top`` (the top labels, ``None``:
    all), recomputed there with ``w = sigmoid(-|z|)``."""
    z = torch.add(alpha * t.unsqueeze(1), x, alpha=alpha, out=out)
    if top is None:
        z = z.abs_().neg_()
    z = _hide_(z, hidden, -math.inf)
    if top is not None:
        w = torch.sigmoid(-z.gather(1, top).abs())
        w = w - w * w
    v = z.sigmoid_().addcmul_(z, z, value=-1.0)
    if top is not None:
        v.scatter_(1, top, w)
    total = v.sum(dim=1)
    scale = -grad / torch.where(total > 0, total, torch.ones_like(total))
    return v.mul_(scale.unsqueeze(1))


class _Shift(torch.autograd.Function):
    """The threshold ``t[N]``; backward by the implicit-function theorem."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        hidden: Hidden,
        n: Tensor,
        hyper: tuple[float, float, int],
    ) -> Tensor:
        k, alpha, n_iter = hyper
        t, ctx.buffer, top = _solve_shift(x, hidden, n, k, alpha, n_iter)
        ctx.save_for_backward(x, t, top)
        ctx.hidden, ctx.alpha = hidden, alpha
        return t

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, t, top = ctx.saved_tensors
        out, ctx.buffer = ctx.buffer, None  # reused once; a second backward allocates
        return _shift_vjp(x, ctx.hidden, t, ctx.alpha, grad, out, top), None, None, None


class _SoftTopKNLL(torch.autograd.Function):
    """Per-row ``-sum_{j in P} logsigmoid(alpha (s_j + t))`` over the entries ``rows, cols``;
    one dense pass in the backward."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        hidden: Hidden,
        n: Tensor,
        hyper: tuple[float, float, int],
        rows: Tensor,
        cols: Tensor,
    ) -> Tensor:
        k, alpha, n_iter = hyper
        t, ctx.buffer, top = _solve_shift(x, hidden, n, k, alpha, n_iter)
        z = alpha * (x[rows, cols] + t[rows])
        ctx.save_for_backward(x, t, top, rows, cols, z)
        ctx.hidden, ctx.alpha = hidden, alpha
        return -row_sums(F.logsigmoid(z), rows, x.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, t, top, rows, cols, z = ctx.saved_tensors
        direct = -ctx.alpha * torch.sigmoid(-z) * grad[rows]  # d/ds_j at fixed t
        buffer, ctx.buffer = ctx.buffer, None  # reused once; a second backward allocates
        grad_t = row_sums(direct, rows, x.shape[0])
        out = _shift_vjp(x, ctx.hidden, t, ctx.alpha, grad_t, buffer, top)
        out.index_put_((rows, cols), direct, accumulate=True)
        return out, None, None, None, None, None


def _check_top_k(k: float, alpha: float, n_iter: int, num_labels: float) -> tuple[float, float]:
    k = check_number("k", k, low=0.0, low_open=True)
    if k >= num_labels:
        raise ValueError(f"k must be smaller than the number of labels {num_labels}, got {k}")
    alpha = check_number("alpha", alpha, low=0.0, low_open=True)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    return k, alpha


def _check_known_count(n: Tensor, k: float) -> None:
    if checks_enabled() and bool((n <= k).any()):
        row = int((n <= k).nonzero()[0, 0])
        raise ValueError(
            f"k must be smaller than every row's number of known labels, "
            f"row {row} has {int(n[row])} for k={k}"
        )


def soft_top_k(
    scores: Tensor,
    k: float = 5,
    alpha: float = 2.0,
    n_iter: int = 32,
    mask: Tensor | None = None,
) -> Tensor:
    """Soft top-k memberships ``p[N, L]`` in ``[0, 1]``, each row summing to ``k`` over its
    known labels; unknown labels get 0 (see the module docstring)."""
    check_scores(scores, "scores", min_classes=1)
    check_mask(mask, scores)
    k, alpha = _check_top_k(k, alpha, n_iter, scores.shape[1])
    x = upcast(scores)
    unknown = None if mask is None else mask == 0
    if unknown is None:
        n = x.new_full((x.shape[0],), float(x.shape[1]))
    else:
        n = x.shape[1] - unknown.sum(dim=1).to(x.dtype)
        _check_known_count(n, k)
    t = _Shift.apply(x, (unknown, None), n, (k, alpha, n_iter))
    p = torch.sigmoid(alpha * (x + t.unsqueeze(1)))
    if unknown is not None:
        p = p.masked_fill(unknown, 0.0)
    return p.to(scores.dtype)


def soft_top_k_loss(
    scores: Tensor,
    target: Tensor,
    *,
    k: float = 5,
    alpha: float = 2.0,
    n_iter: int = 32,
    mask: Tensor | None = None,
    sample_positives: bool = False,
    generator: torch.Generator | None = None,
    empty: str = "error",
    reduction: str = "mean",
) -> Tensor:
    """Mean of ``-log p_ij`` over each row's known positives (see the module docstring);
    ``k`` must be below every row's number of known labels (``ValueError`` otherwise)."""
    b = prepare_multilabel(scores, target, mask, reduction=reduction, name="scores")
    k, alpha = _check_top_k(k, alpha, n_iter, b.x.shape[1])
    rows, cols, count = positive_entries(b, empty, "soft_top_k_loss")
    hidden: Hidden = (None if b.known is None else b.known == 0, None)
    n = b.num_known
    if sample_positives:  # keep floor(k) positives per row; the others leave the row
        m = max(1, math.floor(k))
        drop = ~sample_positive_entries(rows, count, m, generator)
        hidden = (hidden[0], (rows[drop], cols[drop]))
        n = n - (count - count.clamp_max(m))
        rows, cols, count = rows[~drop], cols[~drop], count.clamp_max(m)
    _check_known_count(n, k)
    per_row = _SoftTopKNLL.apply(b.x, hidden, n, (k, alpha, n_iter), rows, cols)
    return finish_rows(per_row / count.clamp_min(1.0), count, b, reduction)


class SoftTopKLoss(PositiveSamplingLoss):
    """Module form of :func:`soft_top_k_loss` (``generator`` seeds the sampling)."""

    def __init__(
        self,
        *,
        k: float = 5,
        alpha: float = 2.0,
        n_iter: int = 32,
        sample_positives: bool = False,
        generator: torch.Generator | None = None,
        empty: str = "error",
        reduction: str = "mean",
    ) -> None:
        k, alpha = _check_top_k(k, alpha, n_iter, math.inf)
        super().__init__(
            sample_positives=sample_positives, generator=generator, empty=empty, reduction=reduction
        )
        self.k, self.alpha, self.n_iter = k, alpha, n_iter

    def forward(self, scores: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return soft_top_k_loss(
            scores,
            target,
            k=self.k,
            alpha=self.alpha,
            n_iter=self.n_iter,
            mask=mask,
            **self.options(),
        )


register(
    "soft_top_k",
    kind="loss",
    family="multilabel",
    papers=(3,),
    summary="-log of each positive's soft top-k membership (bisection threshold, implicit grad).",
    defaults={"k": 5, "alpha": 2.0, "n_iter": 32, "sample_positives": False},
    function=soft_top_k_loss,
    module=SoftTopKLoss,
)
