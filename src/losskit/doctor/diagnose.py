"""The diagnosis of ``losskit doctor``: balance, noise, likely label errors, recommendation.

From labels ``ỹ`` and out-of-sample probabilities ``p̂`` (paper 34's confident learning,
:mod:`losskit.labels.confident_learning`):

- **class balance**: counts ``n_j``; **imbalance ratio** ``max_j n_j / min_j n_j`` over the
  classes present;
- **noise rate** ``1 - trace(Q)`` of the estimated joint and the **noise matrix**
  ``P(ỹ = i | y* = j)``;
- **noise structure**: per true class ``j``, the share of its largest off-diagonal entry in its
  off-diagonal mass, ``c_j = max_{i≠j} N_ij / sum_{i≠j} N_ij``, averaged with weights
  ``P(y* = j) sum_{i≠j} N_ij``. Symmetric noise gives ``c ≈ 1 / (K - 1)``, pair flips ``c ≈ 1``;
  the structure is ``pair`` above the midpoint ``(1 / (K - 1) + 1) / 2``, else ``symmetric``
  (``none`` under :data:`~losskit.doctor.recommend.CLEAN_NOISE`; with 2 classes the two
  coincide and it is ``symmetric``);
- the **most likely label errors**: :func:`~losskit.labels.find_label_issues` ranked by
  self-confidence ``p̂_iỹ`` (lowest first), with the model's guess ``argmax_j p̂_ij``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from losskit.doctor.inputs import DoctorData
from losskit.doctor.recommend import CLEAN_NOISE, load_evidence, recommend
from losskit.labels.confident_learning import estimate_noise_matrices
from losskit.labels.label_issues import find_label_issues


@dataclass
class Diagnosis:
    """Everything the doctor reports (JSON-ready through :meth:`to_dict`)."""

    source: str
    probs_from: str
    class_names: list[str]
    class_counts: np.ndarray
    imbalance_ratio: float
    noise_rate: float
    noise_matrix: np.ndarray
    pair_concentration: float
    structure: str
    num_issues: int
    top_issues: list[dict] = field(default_factory=list)
    recommendation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "probabilities": self.probs_from,
            "num_examples": int(self.class_counts.sum()),
            "num_classes": len(self.class_names),
            "class_names": self.class_names,
            "class_counts": [int(c) for c in self.class_counts],
            "imbalance_ratio": self.imbalance_ratio,
            "noise_rate": self.noise_rate,
            "noise_matrix": self.noise_matrix.tolist(),
            "pair_concentration": None
            if np.isnan(self.pair_concentration)
            else self.pair_concentration,
            "noise_structure": self.structure,
            "num_label_issues": self.num_issues,
            "top_label_issues": self.top_issues,
            "recommendation": self.recommendation,
        }


def imbalance_ratio(counts: np.ndarray) -> float:
    """``max / min`` of the non-zero class counts."""
    present = counts[counts > 0]
    return float(present.max() / present.min())


def pair_concentration(noise_matrix: np.ndarray, true_prior: np.ndarray) -> float:
    """Weighted mean share of the largest off-diagonal entry per column (module docstring);
    NaN when the matrix has no off-diagonal mass."""
    m = np.asarray(noise_matrix, dtype=np.float64)
    off = m - np.diag(m.diagonal())
    mass = off.sum(axis=0)
    weights = np.asarray(true_prior, dtype=np.float64) * mass
    if weights.sum() <= 0:
        return float("nan")
    share = off.max(axis=0) / np.where(mass > 0, mass, 1.0)
    return float(np.sum(weights * share) / weights.sum())


def noise_structure(noise_rate: float, concentration: float, num_classes: int) -> str:
    """``none``, ``symmetric`` or ``pair`` (module docstring)."""
    if noise_rate < CLEAN_NOISE or np.isnan(concentration):
        return "none"
    if num_classes <= 2:
        return "symmetric"
    midpoint = (1.0 / (num_classes - 1) + 1.0) / 2.0
    return "pair" if concentration > midpoint else "symmetric"


def diagnose(
    data: DoctorData, *, top_k: int = 20, results_dir: str | Path | None = None
) -> Diagnosis:
    """The doctor's diagnosis of validated ``data`` (module docstring)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
    y, p = data.labels, data.pred_probs
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    est = estimate_noise_matrices(y, p)
    conc = pair_concentration(est.noise_matrix, est.true_prior)
    rate = max(est.noise_rate, 0.0)
    structure = noise_structure(rate, conc, k)
    ratio = imbalance_ratio(counts)
    issues = find_label_issues(y, p, return_indices_ranked_by="self_confidence")
    top = [
        {
            "index": int(i),
            "given_label": data.class_names[y[i]],
            "suggested_label": data.class_names[int(p[i].argmax())],
            "self_confidence": float(p[i, y[i]]),
            "suggested_probability": float(p[i].max()),
        }
        for i in issues[:top_k]
    ]
    rec = recommend(rate, structure, ratio, load_evidence(results_dir), dataset=data.dataset)
    return Diagnosis(
        source=data.source,
        probs_from=data.probs_from,
        class_names=data.class_names,
        class_counts=counts,
        imbalance_ratio=ratio,
        noise_rate=rate,
        noise_matrix=est.noise_matrix,
        pair_concentration=conc,
        structure=structure,
        num_issues=len(issues),
        top_issues=top,
        recommendation=rec,
    )
