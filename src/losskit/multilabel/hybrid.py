"""Hybrid loss for imbalanced, correlated multi-label data (paper 20; Aslam et al. 2024,
"Improving Arabic Multi-Label Emotion Classification using Stacked Embeddings and Hybrid Loss
Function").

``L = alpha * L_wBCE + beta * L_corr + gamma * L_con``

The paper names the three parts (class weighting, a label-correlation matrix, contrastive
learning) but its body, its exact forms and its weights could not be read and no code was
found. Each part below is therefore a standard form chosen here, not the paper's verified one:

- ``L_wBCE``: binary cross-entropy with per-label weights ``w_j`` that multiply the whole
  entry (as ``weight`` in ``F.binary_cross_entropy_with_logits``), averaged over the known
  entries of a sample. :func:`inverse_frequency_weights` gives ``w_j = mean_k(n_k) / n_j``
  from the positive counts ``n_j``, so ``w_j n_j`` is constant and equal counts give 1.
- ``L_corr``: the squared gap between the predicted label co-activation and the empirical
  label co-occurrence matrix, ``mean_{i,j} (C_hat_ij - C_ij)^2`` with
  ``C_hat = sum_n p_n p_n^T / N`` (``p = sigmoid(logits)``) and ``C_ij = P(y_i = 1, y_j = 1)``
  (:func:`label_correlation`; the diagonal holds the label frequencies). Under a mask, a pair
  ``(i, j)`` is averaged over the samples where both entries are known, and pairs never
  known together are left out. Without ``correlation`` the target is the batch's own label
  co-occurrence. It is 0 when the predictions reproduce ``C``.
- ``L_con``: a multi-label supervised contrastive loss (SupCon, Khosla et al. 2020) over the
  batch: samples that share at least one known positive label are positives of each other,
  ``l_a = -mean_{p in P(a)} log(exp(z_a.z_p / t) / sum_{b != a} exp(z_a.z_b / t))`` on
  L2-normalised ``z``; an anchor with no positive gives 0. ``z`` is ``features[N, D]`` when
  given, else the sigmoid output vector with unknown entries set to 0.

Defaults (chosen here, not from the paper): ``alpha = 1``, ``beta = 1``, ``gamma = 0.1``,
``temperature = 0.07`` (SupCon's). ``beta = gamma = 0`` with no (or uniform) class weights is
:func:`losskit.multilabel.bce.binary_cross_entropy` times ``alpha``.

Reduction: one value per sample, ``alpha * wBCE_i + beta * L_corr + gamma * con_i``; the
batch-level ``L_corr`` is added to every sample that has a known entry, so ``"mean"`` is the
loss above and ``"sum"`` counts ``L_corr`` once per sample.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.precision import upcast
from losskit._core.registry import register
from losskit.multilabel._common import (
    Counts,
    as_class_counts,
    check_label_vector,
    finish_samples,
    prepare_multilabel,
    reduce_entries,
)


def inverse_frequency_weights(class_counts: Counts) -> Tensor:
    """``w_j = mean_k(n_k) / n_j`` (float32) from positive counts ``n[L]``; a count of 0 is
    taken as 1 so an unseen label gets a large but finite weight."""
    counts = as_class_counts(class_counts).to(torch.float64).clamp_min(1.0)
    return (counts.mean() / counts).to(torch.float32)


def _check_weights(
    alpha: float, beta: float, gamma: float, temperature: float
) -> tuple[float, float, float, float]:
    """Validate the term weights (>= 0) and the contrastive temperature (> 0)."""
    return (
        check_number("alpha", alpha, low=0.0),
        check_number("beta", beta, low=0.0),
        check_number("gamma", gamma, low=0.0),
        check_number("temperature", temperature, low=0.0, low_open=True),
    )


def label_correlation(cooccurrence: Tensor, num_samples: int) -> Tensor:
    """``C_ij = cooccurrence_ij / num_samples``: the rate at which labels ``i`` and ``j`` are
    positive together (float32 ``[L, L]``), from the arena's ``label_cooccurrence``."""
    n = check_number("num_samples", num_samples, low=0.0, low_open=True)
    if not isinstance(cooccurrence, Tensor) or cooccurrence.ndim != 2:
        raise ValueError("cooccurrence must be a square [L, L] tensor")
    if cooccurrence.shape[0] != cooccurrence.shape[1]:
        raise ValueError(f"cooccurrence must be square, got {tuple(cooccurrence.shape)}")
    c = cooccurrence.to(torch.float64) / n
    if checks_enabled() and bool(((c < 0) | (c > 1)).any()):
        raise ValueError("cooccurrence must hold counts between 0 and num_samples")
    return c.to(torch.float32)


def label_correlation_from_labels(labels: Tensor) -> Tensor:
    """``C = Y^T Y / N`` (float32) from a 0/1 label matrix ``Y[N, L]``."""
    if not isinstance(labels, Tensor) or labels.ndim != 2 or labels.shape[0] < 1:
        raise ValueError("labels must be a non-empty [N, L] 0/1 tensor")
    y = labels.to(torch.float64)
    if checks_enabled() and bool(((y != 0) & (y != 1)).any()):
        raise ValueError("labels entries must be 0 or 1")
    return (y.T @ y / y.shape[0]).to(torch.float32)


def hybrid_loss(
    logits: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    class_weight: Tensor | None = None,
    correlation: Tensor | None = None,
    features: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.1,
    temperature: float = 0.07,
    reduction: str = "mean",
) -> Tensor:
    """Hybrid loss (module docstring); each term is skipped when its weight is 0."""
    a, be, g, t = _check_weights(alpha, beta, gamma, temperature)
    b = prepare_multilabel(logits, target, mask, reduction=reduction)
    n, num_labels = b.x.shape
    check_label_vector(class_weight, num_labels, "class_weight")
    _check_correlation(correlation, num_labels)
    _check_features(features, n)
    known = torch.ones_like(b.x) if b.known is None else b.known
    p = torch.where(known > 0, torch.sigmoid(b.x), 0)
    y = b.y * known
    per_sample = b.x.new_zeros(n)
    if a > 0:
        bce = b.y * F.softplus(-b.x) + (1 - b.y) * F.softplus(b.x)
        wide = dataclasses.replace(b, dtype=b.x.dtype)
        per_sample = per_sample + a * reduce_entries(bce, wide, "none", class_weight)
    if be > 0:
        per_sample = per_sample + be * _correlation_gap(p, y, known, correlation)
    if g > 0 and n > 1:
        z = p if features is None else upcast(features).to(b.x.dtype)
        per_sample = per_sample + g * _supcon(z, y, t)
    return finish_samples(per_sample, b, reduction)


def _correlation_gap(p: Tensor, y: Tensor, known: Tensor, target: Tensor | None) -> Tensor:
    """``mean_{i,j} (C_hat_ij - C_ij)^2`` over pairs known together in at least one sample."""
    pairs = known.T @ known
    count = pairs.clamp_min(1.0)
    c_hat = p.T @ p / count
    c = y.T @ y / count if target is None else target.to(p.dtype)
    valid = pairs > 0
    gap = torch.where(valid, (c_hat - c) ** 2, 0)
    return gap.sum() / valid.sum().clamp_min(1).to(p.dtype)


def _supcon(z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Per-anchor multi-label SupCon: positives share a known positive label (N >= 2)."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature
    other = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    positive = ((y @ y.T) > 0) & other
    log_prob = sim - torch.logsumexp(torch.where(other, sim, -torch.inf), dim=1, keepdim=True)
    total = torch.where(positive, log_prob, 0).sum(dim=1)
    return -total / positive.sum(dim=1).clamp_min(1).to(z.dtype)


def _check_correlation(correlation: Tensor | None, num_labels: int) -> None:
    if correlation is None:
        return
    if not isinstance(correlation, Tensor) or not correlation.is_floating_point():
        raise ValueError(f"correlation must be a floating tensor of shape {(num_labels,) * 2}")
    if tuple(correlation.shape) != (num_labels, num_labels):
        raise ValueError(
            f"correlation must have shape {(num_labels,) * 2}, got {tuple(correlation.shape)}"
        )
    check_finite("correlation", correlation)


def _check_features(features: Tensor | None, n: int) -> None:
    if features is None:
        return
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise ValueError("features must be a floating tensor of shape [N, D]")
    if features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features must have shape [{n}, D], got {tuple(features.shape)}")
    check_finite("features", features)


class HybridLoss(nn.Module):
    """Module form of :func:`hybrid_loss`. ``class_counts`` (positives per label) gives the
    inverse-frequency ``class_weight``; ``label_cooccurrence`` with ``num_samples`` gives the
    target ``correlation`` (both buffers; the arena fills these context arguments). Without
    them the weights are uniform and the target correlation is the batch's own."""

    def __init__(
        self,
        class_counts: Counts | None = None,
        label_cooccurrence: Tensor | None = None,
        num_samples: int | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 0.1,
        temperature: float = 0.07,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.gamma, self.temperature = _check_weights(
            alpha, beta, gamma, temperature
        )
        self.reduction = check_reduction(reduction)
        weight = None if class_counts is None else inverse_frequency_weights(class_counts)
        if label_cooccurrence is not None and num_samples is None:
            raise ValueError("num_samples is required with label_cooccurrence")
        corr = (
            None
            if label_cooccurrence is None
            else label_correlation(label_cooccurrence, num_samples)  # type: ignore[arg-type]
        )
        if weight is not None and corr is not None and corr.shape[0] != weight.shape[0]:
            raise ValueError("label_cooccurrence and class_counts disagree on the label count")
        self.register_buffer("class_weight", weight)
        self.register_buffer("correlation", corr)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        mask: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        return hybrid_loss(
            logits,
            target,
            mask=mask,
            class_weight=self.class_weight,
            correlation=self.correlation,
            features=features,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            temperature=self.temperature,
            reduction=self.reduction,
        )


register(
    "hybrid_multilabel",
    kind="loss",
    family="multilabel",
    papers=(20,),
    summary="Hybrid loss: inverse-frequency weighted BCE + label co-occurrence gap + "
    "multi-label supervised contrastive term, each switchable.",
    defaults={"alpha": 1.0, "beta": 1.0, "gamma": 0.1, "temperature": 0.07},
    function=hybrid_loss,
    module=HybridLoss,
)
