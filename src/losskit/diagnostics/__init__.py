"""Measures of data, labels, predictions and representations."""

from losskit.diagnostics.calibration import (
    ReliabilityBins,
    classwise_ece,
    expected_calibration_error,
    reliability_bins,
)
from losskit.diagnostics.embedding import alignment, tolerance, uniformity, utilization
from losskit.diagnostics.multilabel import (
    hamming_loss,
    jaccard_score,
    label_propensity,
    macro_f1,
    mean_average_precision,
    micro_f1,
    multilabel_metrics,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psp_at_k,
    threshold_predictions,
)

__all__ = [
    "alignment",
    "tolerance",
    "uniformity",
    "utilization",
    "ReliabilityBins",
    "classwise_ece",
    "expected_calibration_error",
    "hamming_loss",
    "jaccard_score",
    "label_propensity",
    "macro_f1",
    "mean_average_precision",
    "micro_f1",
    "multilabel_metrics",
    "ndcg_at_k",
    "precision_at_k",
    "psndcg_at_k",
    "psp_at_k",
    "reliability_bins",
    "threshold_predictions",
]
