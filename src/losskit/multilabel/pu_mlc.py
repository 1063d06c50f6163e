"""PU-MLC: multi-label learning from positive labels only (paper 43, Yuan, Zhang, Huang).

Every entry that is not a labelled positive is *unlabeled*: the loss uses the positives and
all samples as the unlabeled set, never a negative label. Per class ``c`` over the batch,
with ``U_c`` the samples whose entry ``(i, c)`` is known (all of them without a mask) and
``P_c`` the known positives::

    L_c = w_c * log( (1/|U_c|) sum_{i in U_c} p_ic ) - (1/|P_c|) sum_{i in P_c} log p_ic
    p_ic = sigmoid(z_ic / T_c),   T_c = min(alpha * std_{i in U_c}(z_ic), 1)   (detached)
    w_c  = ( (1/|U_c|) sum_{i in U_c} p_ic )^gamma                            (detached)

and the variational loss is ``sum_c L_c`` (a sum over labels, as in the paper's code). ``T_c``
is the *adaptive temperature* (population std of the class's logits in the batch; it sharpens
probabilities that the loss would over-smooth) and ``w_c`` the *adaptive re-balance* factor
(the code writes it ``(1 - mean(1 - p))^gamma``). ``log p`` is ``logsigmoid`` and the log-mean
is ``logsumexp - log |U_c|``: no ``eps``. Defaults: the COCO command line, ``alpha=1.0``,
``gamma=0.55`` (VOC: ``alpha=2.0, gamma=0.85``). With ``gamma=0`` and ``T_c = 1`` (``alpha``
large) ``L_c`` is the variational PU loss of VPU (Chen et al., 2020) per label, and Jensen's
inequality gives ``L_c >= log(|P_c|/|U_c|)``.

Edge cases: a class with no known positive in the batch contributes only its unlabeled term
``w_c log mean p`` (the code's ``1/|P| = inf -> 0``); a class with no known entry contributes
nothing; a class whose known logits are all equal (std 0, e.g. a zero-initialised head, or
``|U_c| = 1``) uses ``T_c = 1`` where the code divides by zero.

Reduction. The loss is batch-level, so ``"none"`` splits it exactly: the positive term
``-log p_ic / |P_c|`` belongs to sample ``i``; the batch term ``w_c log mean p`` of class ``c`` is
shared equally among the samples of ``U_c``. Both are multiplied by ``N'``, the number of
samples with a known entry, so that ``"mean"`` (the sum over samples divided by ``N'``) is the
paper's batch objective ``sum_c L_c`` and ``"sum"`` is ``N'`` times it. ``"mean"`` is thus
independent of the batch size, as the paper's objective is, and keeps the paper's balance with
the mixup term (``PUMLCLoss.input_regularizer`` follows the same scale).

Label-wise mixup regulariser (from VPU): mix pairs of inputs with ``lam ~ Beta(0.3, 0.3)``;
the target of a mixed entry mixes ``1`` for a known positive and ``sigmoid(z)`` of the
un-mixed batch otherwise (no temperature, as in the code); the penalty is
``sum_c (log t_mix - log sigmoid(z_mix))^2`` averaged over the mixed samples. Pairing as in
the code: the first ``N // 2`` samples with a random permutation of the last ``N // 2`` (the
code permutes the first half instead; with a symmetric Beta the pairs have the same law).
The code does not detach ``sigmoid(z)`` in the target, so gradients also flow through the
target; ``detach=True`` (module: ``detach_mixup_target=True``) stops them. ``log t_mix``
clamps ``t_mix`` at the smallest normal number (the code adds ``1e-10``): ``t_mix`` is 0 only
when both sources' probabilities underflow, where the log is undefined.

Sources and differences. The formulas are the released code's (``vpuLoss``, ``mixup`` in
TAKELAMAG/PU-MLC); the paper's method section could not be read here (only its abstract, which
names the adaptive re-balance factors and temperature coefficients), so no paper-vs-code
difference is known. Departures from the code, all at its edges: no ``1e-10`` inside the logs
(``logsigmoid``/``logsumexp``; the mixup target clamp above is the one exception); ``T_c = 1``
for a zero std instead of a division by zero; the mask (the code has none) removes an entry
from ``P_c``, ``U_c`` and the temperature's std, and a mixed entry counts only when its
sources with non-zero weight are known; fewer than two samples give a zero mixup term (the
code's half-batches are then empty).
"""

from __future__ import annotations

import random
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_scores, checks_enabled
from losskit._core.precision import upcast, upcast_all
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register
from losskit.multilabel._common import (
    MultiLabelLossModule,
    check_binary_target,
    check_mask,
    finish_samples,
    prepare_multilabel,
)


def pu_mlc_loss(
    logits: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    alpha: float = 1.0,
    gamma: float = 0.55,
    reduction: str = "mean",
) -> Tensor:
    """PU-MLC variational loss ``sum_c L_c`` (module docstring); ``target`` marks the labelled
    positives, every other known entry is unlabeled. ``alpha`` in ``(0, inf]``, ``gamma >= 0``."""
    a = check_number("alpha", alpha, low=0.0, low_open=True)
    g = check_number("gamma", gamma, low=0.0, high=float("inf"), high_open=True)
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    x = b.x
    known = torch.ones_like(x) if b.known is None else b.known
    has = known > 0
    n_known = known.sum(dim=0)
    pos = b.positives()
    n_pos = pos.sum(dim=0).to(x.dtype)
    logp = F.logsigmoid(x / _temperature(x, known, n_known, a))
    # log of the mean of p over U_c; an empty column is filled with 0 (its term is dropped)
    fill = torch.where(n_known > 0, float("-inf"), 0.0).to(x.dtype)
    log_mean = torch.logsumexp(torch.where(has, logp, fill), dim=0)
    log_mean = log_mean - torch.log(n_known.clamp_min(1.0))
    w = torch.exp(g * log_mean).detach()
    zero = torch.zeros_like(x)
    batch_term = torch.where(has, (w * log_mean / n_known.clamp_min(1.0)).expand_as(x), zero)
    pos_term = torch.where(pos, -logp / n_pos.clamp_min(1.0), zero)
    counted = (b.num_known > 0).sum().to(x.dtype)
    return finish_samples((batch_term + pos_term).sum(dim=1) * counted, b, reduction)


def _temperature(x: Tensor, known: Tensor, n_known: Tensor, alpha: float) -> Tensor:
    """``T_c = min(alpha * std(z_c), 1)`` over the known entries (population std), detached;
    1 where the std is 0."""
    with torch.no_grad():
        n = n_known.clamp_min(1.0)
        mean = (x * known).sum(dim=0) / n
        std = (((x - mean) ** 2 * known).sum(dim=0) / n).sqrt()
        t = (alpha * std).clamp(max=1.0)
        return torch.where(std > 0, t, torch.ones_like(t))


class MixedBatch(NamedTuple):
    """Mixed inputs ``[M, ...]``, mixed targets ``[M, L]`` and the mixed mask (or ``None``)."""

    inputs: Tensor
    target: Tensor
    mask: Tensor | None


def pu_mixup_targets(
    target: Tensor, probs: Tensor, *, mask: Tensor | None = None, detach: bool = False
) -> Tensor:
    """Targets of the mixup term: 1 for a known positive, ``probs`` (``sigmoid`` of the
    un-mixed logits) elsewhere; gradients flow into ``probs`` unless ``detach``."""
    check_scores(probs, "probs", min_classes=1)
    if checks_enabled() and bool(((probs < 0) | (probs > 1)).any()):
        raise ValueError("probs must lie in [0, 1]")
    check_binary_target(target, probs)
    check_mask(mask, probs)
    p = upcast(probs.detach() if detach else probs)
    pos = target > 0.5
    if mask is not None:
        pos = pos & (mask > 0)
    return torch.where(pos, torch.ones_like(p), p)


def pu_mixup_batch(
    inputs: Tensor,
    target: Tensor,
    probs: Tensor,
    lam: float,
    perm: Tensor,
    *,
    mask: Tensor | None = None,
    detach: bool = False,
) -> MixedBatch:
    """Row ``k < M = len(perm)`` mixes sample ``k`` (weight ``lam``) with sample ``perm[k]``
    (weight ``1 - lam``), inputs and :func:`pu_mixup_targets` alike. ``lam = 1`` gives back
    ``inputs[:M]`` and their targets. A mixed entry is known when its sources with non-zero
    weight are known."""
    lam = check_number("lam", lam, low=0.0, high=1.0)
    t = pu_mixup_targets(target, probs, mask=mask, detach=detach)
    n = t.shape[0]
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.shape[0] != n:
        raise ValueError(f"inputs must be a floating tensor with {n} rows like target")
    if not isinstance(perm, Tensor) or perm.ndim != 1 or perm.dtype != torch.long:
        raise ValueError("perm must be a 1-D torch.long tensor of sample indices")
    m = perm.shape[0]
    if not 1 <= m <= n or (checks_enabled() and bool(((perm < 0) | (perm >= n)).any())):
        raise ValueError(f"perm must hold between 1 and {n} indices in [0, {n}), got {m}")
    perm = perm.to(t.device)
    x = lam * inputs[:m] + (1 - lam) * inputs[perm]
    mixed_t = lam * t[:m] + (1 - lam) * t[perm]
    mixed_mask = None
    if mask is not None:
        first, second = mask[:m] > 0, mask[perm] > 0
        mixed_mask = first if lam == 1 else second if lam == 0 else first & second
    return MixedBatch(x, mixed_t, mixed_mask)


def pu_mixup_loss(
    mixed_logits: Tensor,
    mixed_target: Tensor,
    *,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``sum_c (log t_kc - logsigmoid(z_kc))^2`` per mixed sample ``k`` over known entries;
    ``"mean"`` averages over the mixed samples with a known entry (the code's average)."""
    check_scores(mixed_logits, "mixed_logits", min_classes=1)
    if not isinstance(mixed_target, Tensor) or mixed_target.shape != mixed_logits.shape:
        raise ValueError(f"mixed_target must be a tensor of shape {tuple(mixed_logits.shape)}")
    check_finite("mixed_target", mixed_target)
    if checks_enabled() and bool(((mixed_target < 0) | (mixed_target > 1)).any()):
        raise ValueError("mixed_target must lie in [0, 1]")
    check_mask(mask, mixed_logits)
    z, t = upcast_all(upcast(mixed_logits), mixed_target)
    log_t = torch.log(t.clamp_min(torch.finfo(t.dtype).tiny))
    err = (log_t - F.logsigmoid(z)) ** 2
    keep = None
    if mask is not None:
        err = torch.where(mask > 0, err, torch.zeros_like(err))
        keep = (mask > 0).any(dim=1)
    return reduce_loss(err.sum(dim=1), reduction, keep).to(mixed_logits.dtype)


class PUMLCLoss(MultiLabelLossModule):
    """Module form: ``forward`` is :func:`pu_mlc_loss`; :meth:`input_regularizer` is the
    label-wise mixup term (times ``mixup_weight``); ``lam`` and the pairing are drawn from
    ``random.Random(seed)``, so equal seeds give equal draws (the generator is not in the
    state dict)."""

    def __init__(
        self,
        alpha: float = 1.0,
        gamma: float = 0.55,
        mixup: bool = True,
        mixup_beta: float = 0.3,
        mixup_weight: float = 1.0,
        seed: int = 0,
        *,
        detach_mixup_target: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(None, reduction)
        self.alpha = check_number("alpha", alpha, low=0.0, low_open=True)
        self.gamma = check_number("gamma", gamma, low=0.0, high=float("inf"), high_open=True)
        self.mixup = bool(mixup)
        self.mixup_beta = check_number(
            "mixup_beta", mixup_beta, low=0.0, high=float("inf"), low_open=True, high_open=True
        )
        self.mixup_weight = check_number(
            "mixup_weight", mixup_weight, low=0.0, high=float("inf"), high_open=True
        )
        self.detach_mixup_target = bool(detach_mixup_target)
        self._rng = random.Random(seed)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return pu_mlc_loss(
            logits, target, mask=mask, alpha=self.alpha, gamma=self.gamma, reduction=self.reduction
        )

    def input_regularizer(
        self,
        model: nn.Module,
        inputs: Tensor,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``mixup_weight`` times the mixup term on ``model(mixed inputs)``; 0 without mixup
        or with fewer than two samples. Under ``reduction="sum"`` it is multiplied by the
        number of samples with a known entry, as the variational term is."""
        n = logits.shape[0]
        half = n // 2
        if not self.mixup or half == 0 or self.mixup_weight == 0:
            return logits.new_zeros(())
        lam = self._rng.betavariate(self.mixup_beta, self.mixup_beta)
        perm = torch.tensor(self._rng.sample(range(half), half), dtype=torch.long)
        probs = torch.sigmoid(upcast(logits))
        mixed = pu_mixup_batch(
            inputs,
            target,
            probs,
            lam,
            perm + (n - half),
            mask=mask,
            detach=self.detach_mixup_target,
        )
        reg = pu_mixup_loss(model(mixed.inputs), mixed.target, mask=mixed.mask)
        reg = reg.to(probs.dtype) * self.mixup_weight
        if self.reduction == "sum":
            reg = reg * (n if mask is None else int((mask > 0).any(dim=1).sum()))
        return reg.to(logits.dtype)


register(
    "pu_mlc",
    kind="loss",
    family="multilabel",
    papers=(43,),
    summary="PU-MLC: per-label variational PU loss from positives only, with adaptive "
    "temperature and re-balance, plus a label-wise mixup regulariser (input_regularizer).",
    defaults={"alpha": 1.0, "gamma": 0.55, "mixup": True, "mixup_beta": 0.3, "mixup_weight": 1.0},
    function=pu_mlc_loss,
    module=PUMLCLoss,
)
