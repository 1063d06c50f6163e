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
from losskit.diagnostics.grokking import (
    PHASES,
    classify_phase,
    fourier_ipr,
    neuron_ipr,
    split_accuracies,
)
from losskit.diagnostics.label_metrics import (
    check_label_metric,
    discrete_metric,
    embedding_metric,
    tree_metric,
)
from losskit.diagnostics.learning_curves import LearningCurves, learning_curves, logistic_probe
from losskit.diagnostics.loki import (
    expected_squared_distance,
    frechet_variance,
    loki_predict,
    prediction_scores,
)
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
from losskit.diagnostics.retrieval import (
    kmeans_nmi,
    map_at_r,
    normalized_mutual_info,
    recall_at_k,
    retrieval_metrics,
)

__all__ = [
    "PHASES",
    "classify_phase",
    "fourier_ipr",
    "neuron_ipr",
    "split_accuracies",
    "check_label_metric",
    "discrete_metric",
    "embedding_metric",
    "tree_metric",
    "expected_squared_distance",
    "frechet_variance",
    "loki_predict",
    "prediction_scores",
    "kmeans_nmi",
    "map_at_r",
    "normalized_mutual_info",
    "recall_at_k",
    "retrieval_metrics",
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
