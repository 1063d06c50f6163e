"""Confident learning (paper 34): the confident joint, its calibration and the noise estimates.

Paper 34 (Northcutt, Athalye, Mueller, 2021) finds label errors in test sets with confident
learning (Northcutt et al., JAIR 2021) on out-of-sample predicted probabilities ``p̂`` (from
cross-validation, :mod:`losskit.labels.cross_validation`). With given labels ``ỹ`` and ``K``
classes (this module follows cleanlab 2.x, ``cleanlab.count``, to the integer):

- **Per-class threshold** ``t_j = mean_{i: ỹ_i = j} p̂_ij``, the mean self-confidence of the
  class, clipped below at ``2e-6``; a class absent from the labels gets ``t_j = 2`` (nothing
  can reach it). The sums are exact and independent of their order, so a chunked pass over
  the rows gives the same thresholds bit for bit.
- **Confident joint** ``C[ỹ][y*]``: example ``i`` is counted when some class passes
  ``p̂_ij >= t_j - 1e-6``; ``y*`` is the passing class, or the overall ``argmax_j p̂_ij`` when
  several pass (the argmax need not be one of them). The diagonal is clipped to ``>= 1``.
- **Calibration**: rows are rescaled to the label counts ``n_j = |{i: ỹ_i = j}|``, the whole
  to ``n``, and each row rounded to integers keeping its total (largest remainder).
- **Joint** ``Q = C_cal / n``; **noise matrix** ``P(ỹ = i | y* = j) = C_cal[i, j] / sum_i``,
  **inverse noise matrix** ``P(y* = j | ỹ = i) = C_cal[i, j] / sum_j`` (stored as ``[j, i]``,
  columns sum to one, as in cleanlab); **true prior** by cleanlab's "cnt" rule; the **noise
  rate** (estimated fraction of wrong labels) is ``1 - trace(Q)``.

With one-hot ``p̂`` that agrees with the labels, ``C`` is diagonal with the class counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from losskit._core.registry import register
from losskit.labels._issue_inputs import check_inputs, check_labels, to_numpy

THRESHOLD_FLOOR = 2e-6
"""Lower clip of the per-class thresholds (twice :data:`SLACK`)."""
ABSENT_CLASS_THRESHOLD = 2.0
"""Threshold of a class that no label names: above every probability."""
SLACK = 1e-6
"""A probability counts as confident when ``p >= t - SLACK``."""
_TINY = 1e-100
_LEVELS = 8  # 16-bit digits kept per value by the exact sums (resolution 2**-128)


class ClassSums:
    """Per-class sums of values in ``[0, 1]`` that do not depend on the order of addition.

    Each value is split into ``_LEVELS`` exact 16-bit integer digits (``v = sum_l d_l
    2^(-16(l+1))`` up to ``2^-128``); integer digit sums are associative, so any chunking gives
    the same sum (per-chunk digit sums stay exact in float64 below 2^37 rows).
    """

    def __init__(self, num_classes: int) -> None:
        self.digits = np.zeros((_LEVELS, num_classes), dtype=np.int64)
        self.counts = np.zeros(num_classes, dtype=np.int64)

    def add(self, labels: np.ndarray, values: np.ndarray) -> None:
        k = self.counts.shape[0]
        self.counts += np.bincount(labels, minlength=k)
        rest = values.astype(np.float64)
        for level in range(_LEVELS):
            rest = rest * 2.0**16
            digit = np.floor(rest)
            rest = rest - digit
            self.digits[level] += np.bincount(labels, weights=digit, minlength=k).astype(np.int64)

    def means(self) -> np.ndarray:
        """Correctly rounded means of the (truncated) sums; NaN for classes never seen."""
        out = np.full(self.counts.shape[0], np.nan)
        for j in np.flatnonzero(self.counts):
            digits = enumerate(self.digits[:, j])
            total = sum(Fraction(int(d), 2 ** (16 * (lv + 1))) for lv, d in digits)
            out[j] = float(total / int(self.counts[j]))
        return out


def thresholds_from_sums(sums: ClassSums) -> np.ndarray:
    """Thresholds from the self-confidence sums: clipped means, 2 for absent classes."""
    means = sums.means()
    return np.clip(np.where(np.isnan(means), ABSENT_CLASS_THRESHOLD, means), THRESHOLD_FLOOR, None)


def thresholds_of(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    """:func:`confident_thresholds` of validated inputs."""
    sums = ClassSums(p.shape[1])
    sums.add(labels, p[np.arange(len(labels)), labels])
    return thresholds_from_sums(sums)


def confident_thresholds(labels: Any, pred_probs: Any) -> np.ndarray:
    """Per-class thresholds ``t_j``: the mean predicted probability of class ``j`` over the
    examples labelled ``j`` (clipped below at 2e-6; 2 for a class absent from ``labels``)."""
    return thresholds_of(*check_inputs(labels, pred_probs))


def confident_guess(p: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether some class passes its threshold, and the guessed true class ``y*``
    (the passing class, or the argmax of the row when several pass)."""
    passes = p >= thresholds - SLACK
    n_pass = passes.sum(axis=1)
    guess = np.where(n_pass > 1, p.argmax(axis=1), passes.argmax(axis=1))
    return n_pass > 0, guess


def joint_counts(labels: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Counts ``C[ỹ][y*]`` over the confident rows of one chunk (no diagonal clip)."""
    k = p.shape[1]
    confident, guess = confident_guess(p, thresholds)
    flat = labels[confident] * k + guess[confident]
    return np.bincount(flat, minlength=k * k).reshape(k, k)


def compute_confident_joint(
    labels: Any,
    pred_probs: Any,
    *,
    thresholds: Any = None,
    calibrate: bool = True,
) -> np.ndarray:
    """The confident joint ``C[ỹ][y*]`` (int ``[K, K]``, diagonal clipped to >= 1), calibrated
    to the label counts by default. ``thresholds`` defaults to :func:`confident_thresholds`."""
    y, p = check_inputs(labels, pred_probs)
    k = p.shape[1]
    if thresholds is None:
        t = thresholds_of(y, p)
    else:
        t = to_numpy(thresholds, "thresholds").astype(np.float64).reshape(-1)
        if t.shape != (k,):
            raise ValueError(f"thresholds must have shape ({k},), got {t.shape}")
    cj = joint_counts(y, p, t)
    np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
    return calibrate_counts(cj, np.bincount(y, minlength=k)) if calibrate else cj


def round_preserving_row_totals(x: np.ndarray) -> np.ndarray:
    """Round each row to integers keeping its rounded total: round every entry, then move
    the entries with the largest (or smallest) remainders up (or down) by one."""
    out = np.empty(x.shape, dtype=np.int64)
    for r, row in enumerate(np.asarray(x, dtype=np.float64)):
        ints = row.round()
        diff = int(np.round(row.sum().round() - ints.sum().round()))
        if diff:
            order = np.argsort(row - ints)[:: -1 if diff > 0 else 1][: abs(diff)]
            ints[order] += 1 if diff > 0 else -1
        out[r] = ints.astype(np.int64)
    return out


def calibrate_counts(confident_joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rows rescaled to ``label_counts``, the total to ``sum(label_counts)``, rows rounded."""
    cj = np.asarray(confident_joint, dtype=np.float64)
    counts = np.asarray(label_counts, dtype=np.float64)
    cal = cj / np.clip(cj.sum(axis=1), _TINY, None)[:, None] * counts[:, None]
    cal = cal / np.clip(np.sum(cal), _TINY, None) * counts.sum()
    return round_preserving_row_totals(cal)


def calibrate_confident_joint(confident_joint: Any, labels: Any) -> np.ndarray:
    """Calibrated confident joint: row ``i`` sums to ``|{ỹ = i}|``, the total is ``n``."""
    cj = to_numpy(confident_joint, "confident_joint")
    if cj.ndim != 2 or cj.shape[0] != cj.shape[1] or (cj < 0).any():
        raise ValueError(f"confident_joint must be non-negative [K, K], got shape {cj.shape}")
    y = to_numpy(labels, "labels")
    y = check_labels(y, len(y), cj.shape[0])
    return calibrate_counts(cj, np.bincount(y, minlength=cj.shape[0]))


def estimate_joint(labels: Any, pred_probs: Any) -> np.ndarray:
    """The joint distribution ``Q[ỹ][y*]`` (float ``[K, K]`` summing to 1): the calibrated
    confident joint divided by its total. Row sums equal the label frequencies."""
    cal = compute_confident_joint(labels, pred_probs, calibrate=True)
    return cal / np.clip(float(cal.sum()), _TINY, None)


@dataclass(frozen=True)
class NoiseEstimates:
    """What confident learning estimates about the label noise (all numpy arrays).

    ``noise_matrix[i, j] = P(ỹ = i | y* = j)`` and ``inverse_noise_matrix[j, i] =
    P(y* = j | ỹ = i)`` both have columns summing to one; ``joint[i, j] = P(ỹ = i, y* = j)``.
    """

    thresholds: np.ndarray
    confident_joint: np.ndarray
    calibrated_joint: np.ndarray
    joint: np.ndarray
    given_prior: np.ndarray
    true_prior: np.ndarray
    noise_matrix: np.ndarray
    inverse_noise_matrix: np.ndarray

    @property
    def noise_rate(self) -> float:
        """Estimated fraction of wrong labels, ``1 - trace(joint)``."""
        return float(1.0 - np.trace(self.joint))

    @property
    def num_issues(self) -> int:
        """Estimated number of wrong labels, ``rint(noise_rate * n)``."""
        return int(np.rint(self.noise_rate * self.calibrated_joint.sum()))


def _clip_noise_rates(m: np.ndarray) -> np.ndarray:
    """Off-diagonal rates clipped to [0, 0.9999], then columns renormalised to one."""
    out = np.clip(m, 0.0, 0.9999)
    np.fill_diagonal(out, m.diagonal())
    return out / np.clip(out.sum(axis=0), _TINY, None)


def _renormalised(x: np.ndarray, low: float) -> np.ndarray:
    x = np.clip(x, low, 1.0)
    return x / np.clip(np.sum(x), _TINY, None)


def _true_prior(ps: np.ndarray, noise: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """cleanlab's "cnt" rule ``P(y*=j) = inv[j, j] / noise[j, j] * P(ỹ=j)``, clipped."""
    return _renormalised(inverse.diagonal() / np.clip(noise.diagonal(), _TINY, None) * ps, 1e-6)


def estimate_noise_matrices(
    labels: Any, pred_probs: Any, *, converge: bool = True
) -> NoiseEstimates:
    """Thresholds, confident joint (raw and calibrated), joint, priors and noise matrices.

    ``converge`` makes the priors and the two matrices mutually consistent by cleanlab's
    fixed-point iteration (3 outer x 5 inner rounds; cleanlab's default, on).
    """
    y, p = check_inputs(labels, pred_probs)
    k = p.shape[1]
    t = thresholds_of(y, p)
    raw = joint_counts(y, p, t)
    np.fill_diagonal(raw, np.maximum(raw.diagonal(), 1))
    counts = np.bincount(y, minlength=k)
    cal = calibrate_counts(raw, counts)
    ps = counts / len(y)
    cal_f = cal.astype(np.float64)
    noise = cal_f / np.clip(cal_f.sum(axis=0), _TINY, None)
    inverse = cal_f.T / np.clip(cal_f.sum(axis=1), _TINY, None)
    py = _true_prior(ps, noise, inverse)
    noise, inverse = _clip_noise_rates(noise), _clip_noise_rates(inverse)
    if converge:
        for _ in range(3):
            for _ in range(5):
                inverse = _clip_noise_rates((noise * py).T / np.clip(ps, _TINY, None))
                py = _true_prior(ps, noise, inverse)
            noise = _clip_noise_rates((inverse * ps).T / np.clip(py, _TINY, None))
        py = _renormalised(py, 1e-5)
        noise, inverse = _clip_noise_rates(noise), _clip_noise_rates(inverse)
    return NoiseEstimates(
        thresholds=t,
        confident_joint=raw,
        calibrated_joint=cal,
        joint=cal / np.clip(float(cal.sum()), _TINY, None),
        given_prior=ps,
        true_prior=py,
        noise_matrix=noise,
        inverse_noise_matrix=inverse,
    )


register(
    "confident_learning_noise",
    kind="diagnostic",
    family="labels",
    papers=(34,),
    summary="Confident joint, calibrated joint, noise / inverse noise matrices and the noise "
    "rate from out-of-sample predicted probabilities (confident learning).",
    defaults={"converge": True},
    function=estimate_noise_matrices,
)
