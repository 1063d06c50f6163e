"""Label scenarios for the arena: noise, long tails, partial multi-labels (registered kind
"scenario", family "labels"). See :mod:`losskit.labels.scenarios` for the spec strings."""

from __future__ import annotations

from losskit.labels.aggregate import (
    AggregateBagLoss,
    AggregateInstanceLoss,
    AggregateInterpolatingLoss,
    aggregate_bag_loss,
    aggregate_instance_loss,
    aggregate_interpolating_loss,
    within_bag_scatter,
)
from losskit.labels.aggregate_linear import LinearFit, cross_validate_rho, fit_aggregate_linear
from losskit.labels.bags import bag_folds, bag_responses, random_bags, sorted_bags
from losskit.labels.confident_learning import (
    NoiseEstimates,
    calibrate_confident_joint,
    compute_confident_joint,
    confident_thresholds,
    estimate_joint,
    estimate_noise_matrices,
)
from losskit.labels.cross_validation import (
    cross_val_pred_probs,
    cross_val_pred_probs_features,
    stratified_folds,
)
from losskit.labels.imbalance import (
    class_counts,
    class_groups,
    long_tail_counts,
    long_tail_indices,
)
from losskit.labels.label_issues import FILTERS, find_label_issues
from losskit.labels.modular import ModularDataset, modular_dataset, modular_labels
from losskit.labels.multilabel import (
    PartialLabels,
    apply_multilabel_scenario,
    canonical_multilabel_scenario,
    frequency_drop_rates,
    list_multilabel_scenarios,
)
from losskit.labels.noise import (
    CIFAR10N_SETS,
    noise_matrix_from_trace,
    pairflip_noise,
    sample_from_noise_matrix,
    symmetric_noise,
)
from losskit.labels.partial import drop_positives
from losskit.labels.quality_scores import label_quality_scores, multilabel_quality_scores
from losskit.labels.scenarios import (
    Corrupted,
    apply_scenario,
    canonical_scenario,
    is_long_tailed,
    list_scenarios,
    parse_scenario,
    parse_steps,
)

__all__ = [
    "AggregateBagLoss",
    "AggregateInstanceLoss",
    "AggregateInterpolatingLoss",
    "aggregate_bag_loss",
    "aggregate_instance_loss",
    "aggregate_interpolating_loss",
    "within_bag_scatter",
    "LinearFit",
    "cross_validate_rho",
    "fit_aggregate_linear",
    "bag_folds",
    "bag_responses",
    "random_bags",
    "sorted_bags",
    "NoiseEstimates",
    "calibrate_confident_joint",
    "compute_confident_joint",
    "confident_thresholds",
    "estimate_joint",
    "estimate_noise_matrices",
    "cross_val_pred_probs",
    "cross_val_pred_probs_features",
    "stratified_folds",
    "FILTERS",
    "find_label_issues",
    "label_quality_scores",
    "multilabel_quality_scores",
    "ModularDataset",
    "modular_dataset",
    "modular_labels",
    "CIFAR10N_SETS",
    "Corrupted",
    "PartialLabels",
    "apply_multilabel_scenario",
    "apply_scenario",
    "canonical_multilabel_scenario",
    "canonical_scenario",
    "class_counts",
    "class_groups",
    "drop_positives",
    "frequency_drop_rates",
    "is_long_tailed",
    "list_multilabel_scenarios",
    "list_scenarios",
    "long_tail_counts",
    "long_tail_indices",
    "noise_matrix_from_trace",
    "pairflip_noise",
    "parse_scenario",
    "parse_steps",
    "sample_from_noise_matrix",
    "symmetric_noise",
]
