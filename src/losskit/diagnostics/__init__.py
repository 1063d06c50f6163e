"""Measures of data, labels, predictions and representations."""

from losskit.diagnostics.calibration import (
    ReliabilityBins,
    classwise_ece,
    expected_calibration_error,
    reliability_bins,
)
from losskit.diagnostics.embedding import alignment, tolerance, uniformity, utilization
from losskit.diagnostics.generative_linear import (
    GaussianNaiveBayes,
    NBStatistics,
    merge_nb_statistics,
    nb_statistics,
)
from losskit.diagnostics.learning_curves import LearningCurves, learning_curves, logistic_probe
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
    "GaussianNaiveBayes",
    "NBStatistics",
    "merge_nb_statistics",
    "nb_statistics",
    "LearningCurves",
    "learning_curves",
    "logistic_probe",
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
