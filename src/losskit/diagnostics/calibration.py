"""Calibration metrics: expected calibration error, classwise ECE and reliability bins.

No paper of the catalog introduces these; they are the measures that calibration methods
report (paper 52, the correctness-aware calibrator, reports ECE with 25 bins in its code;
15 bins is the common default kept here). All three use ``n_bins`` equal-width bins on
``[0, 1]`` with edges ``e_b = b / n_bins``; bin ``b`` holds the scores in ``(e_b, e_{b+1}]``,
and the first bin is closed, ``[0, e_1]``, so that a zero score is counted.

Inputs: ``probs[N, C]`` probabilities (rows non-negative and summing to one) or, with
``from_logits=True``, logits that go through a softmax in at least float32; ``target[N]``
integer class indices. The metrics are measures, not losses: inputs are detached and results
are 0-d tensors in the compute dtype (float32, or float64 for float64 inputs).

- **ECE** (top-label): confidence ``conf_i = max_c p_ic``, correctness ``a_i = 1[argmax p_i
  = y_i]``; per bin the gap ``|mean conf - mean a|`` weighted by the bin's share of samples.
  ``norm="l1"`` is the usual ECE ``sum_b |B_b|/N * gap_b``, ``"l2"`` the root-mean-square
  calibration error ``sqrt(sum_b |B_b|/N * gap_b^2)``, ``"max"`` the maximum calibration error
  ``max_b gap_b`` over non-empty bins.
- **Classwise ECE** (Kull et al., 2019): the same binning applied to every class score
  ``p_ik`` against ``1[y_i = k]``, one calibration error per class (same norms), averaged over
  the classes.
- **Reliability bins**: the per-bin mean confidence, accuracy and count behind the top-label
  ECE, for reliability diagrams.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from losskit._core.checks import check_choice, check_class_target, check_number, check_scores
from losskit._core.precision import upcast
from losskit._core.registry import register

NORMS = ("l1", "l2", "max")


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of the top-label confidence (all tensors have ``n_bins`` entries,
    ``edges`` has ``n_bins + 1``). ``confidence`` and ``accuracy`` are NaN in empty bins,
    where ``count`` is 0."""

    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    edges: Tensor


def _probabilities(probs: Tensor, target: Tensor, from_logits: bool) -> Tensor:
    """Validated probabilities [N, C] in the compute dtype, detached."""
    if from_logits:
        check_scores(probs, "logits")
        p = torch.softmax(upcast(probs.detach()), dim=1)
    else:
        check_scores(probs, "probs")
        check_class_target(probs, probs, name="probs")
        p = upcast(probs.detach())
    check_class_target(target, p, allow_soft=False)
    return p


def _bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int):
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    check_number("n_bins", n_bins, low=1)
    return n_bins


def _edges_and_index(scores: Tensor, n_bins: int) -> tuple[Tensor, Tensor]:
    """Bin edges and the bin of each score: ``(e_b, e_{b+1}]``, the first bin closed at 0."""
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=scores.dtype, device=scores.device)
    index = torch.bucketize(scores, edges[1:-1], right=False)
    return edges, index


def _binned(scores: Tensor, hits: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-bin sums of scores, sums of hits and counts (float64 accumulation), and edges.

    ``scores`` and ``hits`` are [N] or [N, K]; with [N, K] every column is binned on its own
    and the results have shape [K, n_bins]."""
    edges, index = _edges_and_index(scores, n_bins)
    cols = 1 if scores.ndim == 1 else scores.shape[1]
    flat = index.reshape(index.shape[0], -1) + n_bins * torch.arange(cols, device=index.device)
    flat = flat.reshape(-1)
    size = cols * n_bins

    def total(values: Tensor) -> Tensor:
        out = torch.zeros(size, dtype=torch.float64, device=scores.device)
        return out.index_add_(0, flat, values.reshape(-1).to(torch.float64)).view(cols, n_bins)

    count = torch.bincount(flat, minlength=size).view(cols, n_bins)
    return total(scores), total(hits), count, edges


def _calibration_error(conf_sum: Tensor, hit_sum: Tensor, count: Tensor, norm: str) -> Tensor:
    """Calibration error of each row of per-bin sums [K, n_bins] -> [K]."""
    n = count.sum(dim=1).to(torch.float64)
    if norm == "l1":
        return (conf_sum - hit_sum).abs().sum(dim=1) / n
    nonempty = count > 0
    gap = (conf_sum - hit_sum).abs() / count.clamp(min=1)
    if norm == "l2":
        return ((count * gap**2).sum(dim=1) / n).sqrt()
    return torch.where(nonempty, gap, torch.zeros_like(gap)).amax(dim=1)


def expected_calibration_error(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    from_logits: bool = False,
) -> Tensor:
    """Top-label expected calibration error with ``n_bins`` equal-width bins.

    ``norm`` is ``"l1"`` (ECE), ``"l2"`` (RMS calibration error) or ``"max"`` (MCE). Equals
    0 for perfectly calibrated predictions in the infinite-sample limit and 1 when every
    prediction has confidence 1 and is wrong.
    """
    n_bins = _bins(n_bins)
    check_choice("norm", norm, NORMS)
    p = _probabilities(probs, target, from_logits)
    conf, pred = p.max(dim=1)
    hits = (pred == target).to(p.dtype)
    conf_sum, hit_sum, count, _ = _binned(conf, hits, n_bins)
    return _calibration_error(conf_sum, hit_sum, count, norm)[0].to(p.dtype)


def classwise_ece(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    from_logits: bool = False,
) -> Tensor:
    """Classwise ECE: the calibration error of every class score ``p_k`` against
    ``1[y = k]`` (all N samples binned per class), averaged over the C classes.

    With ``norm="l1"`` it is ``(1/C) sum_k sum_b |B_kb|/N * |mean p_k - freq(y = k)|``; it is
    0 for exact one-hot correct predictions and ``2/C`` for one-hot predictions that are all
    wrong.
    """
    n_bins = _bins(n_bins)
    check_choice("norm", norm, NORMS)
    p = _probabilities(probs, target, from_logits)
    onehot = torch.zeros_like(p).scatter_(1, target[:, None], 1.0)
    conf_sum, hit_sum, count, _ = _binned(p, onehot, n_bins)
    return _calibration_error(conf_sum, hit_sum, count, norm).mean().to(p.dtype)


def reliability_bins(
    probs: Tensor, target: Tensor, *, n_bins: int = 15, from_logits: bool = False
) -> ReliabilityBins:
    """Per-bin mean top-label confidence, accuracy and count (the reliability diagram).

    ``sum_b count_b * |confidence_b - accuracy_b| / N`` over non-empty bins is the l1 ECE.
    """
    n_bins = _bins(n_bins)
    p = _probabilities(probs, target, from_logits)
    conf, pred = p.max(dim=1)
    hits = (pred == target).to(p.dtype)
    conf_sum, hit_sum, count, edges = _binned(conf, hits, n_bins)
    denom = torch.where(count > 0, count.to(torch.float64), torch.full_like(conf_sum, torch.nan))
    return ReliabilityBins(
        confidence=(conf_sum / denom)[0].to(p.dtype),
        accuracy=(hit_sum / denom)[0].to(p.dtype),
        count=count[0],
        edges=edges,
    )


_SHARED = "equal-width bins; probabilities or logits (from_logits=True)"
register(
    "ece",
    kind="metric",
    family="diagnostics",
    summary=f"Top-label expected calibration error (l1/l2/max), {_SHARED}; used by paper 52.",
    defaults={"n_bins": 15, "norm": "l1"},
    function=expected_calibration_error,
)
register(
    "classwise_ece",
    kind="metric",
    family="diagnostics",
    summary=f"Classwise ECE: per-class calibration error averaged over classes, {_SHARED}.",
    defaults={"n_bins": 15, "norm": "l1"},
    function=classwise_ece,
)
register(
    "reliability_bins",
    kind="metric",
    family="diagnostics",
    summary="Per-bin confidence, accuracy and count of the top label (reliability diagram).",
    defaults={"n_bins": 15},
    function=reliability_bins,
)
