"""Distillation objectives: ``student[N, C]`` and ``teacher[N, C]`` outputs (+ target, +
features); see ``losskit.distillation._common``."""

from losskit.distillation.distill_vq import DistillVQLoss, candidate_scores, distill_vq_loss
from losskit.distillation.dkd import DKDLoss, binary_log_probs, dkd_loss, non_target_log_softmax
from losskit.distillation.dual_head import (
    BinaryKLLoss,
    DualHeadKDLoss,
    DualHeadLogits,
    DualHeadStudent,
    binary_kl_loss,
    dual_head_kd_loss,
    gradient_aligned_backward,
)
from losskit.distillation.feature_norm import (
    NDLoss,
    class_means_from_features,
    nd_loss,
    nd_projector,
    teacher_class_means,
)
from losskit.distillation.ferkd import FerKDLoss, ferkd_loss, ferkd_soft_labels, selfmix
from losskit.distillation.kd import KDLoss, kd_loss
from losskit.distillation.landmark import LandmarkKDLoss, landmark_kd_loss
from losskit.distillation.latent import (
    LatentDistillationLoss,
    attention_map_loss,
    hidden_state_loss,
    latent_distillation_loss,
    uniform_layer_map,
)
from losskit.distillation.nkd import NKDLoss, nkd_loss
from losskit.distillation.score_distribution import (
    ScoreDistributionLoss,
    ScoreRankingLoss,
    predicted_score,
    score_distribution_loss,
    score_ranking_loss,
    score_soft_labels,
)
from losskit.distillation.uskd import USKDHead, USKDLoss, uskd_loss, uskd_soft_labels
from losskit.distillation.vector_quantizer import ProductQuantizer, VectorQuantizer

__all__ = [
    "LatentDistillationLoss",
    "attention_map_loss",
    "hidden_state_loss",
    "latent_distillation_loss",
    "uniform_layer_map",
    "DistillVQLoss",
    "ProductQuantizer",
    "VectorQuantizer",
    "candidate_scores",
    "distill_vq_loss",
    "BinaryKLLoss",
    "DualHeadKDLoss",
    "DualHeadLogits",
    "DualHeadStudent",
    "NDLoss",
    "binary_kl_loss",
    "class_means_from_features",
    "dual_head_kd_loss",
    "gradient_aligned_backward",
    "nd_loss",
    "nd_projector",
    "teacher_class_means",
    "FerKDLoss",
    "LandmarkKDLoss",
    "ScoreDistributionLoss",
    "ScoreRankingLoss",
    "ferkd_loss",
    "ferkd_soft_labels",
    "landmark_kd_loss",
    "predicted_score",
    "score_distribution_loss",
    "score_ranking_loss",
    "score_soft_labels",
    "selfmix",
    "DKDLoss",
    "KDLoss",
    "NKDLoss",
    "USKDHead",
    "USKDLoss",
    "binary_log_probs",
    "dkd_loss",
    "kd_loss",
    "nkd_loss",
    "non_target_log_softmax",
    "uskd_loss",
    "uskd_soft_labels",
]
