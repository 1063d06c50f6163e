"""Embedding objectives: ``embeddings[N, D]`` + ``labels[N]`` (optionally against reference
candidates), or ``query[N, D]``/``keys[M, D]`` pairs with a positive index or mask (see
``losskit.embedding._common``)."""

from losskit.embedding.amcl import (
    AMCLLoss,
    MultiHeadProjection,
    PairTemperature,
    amcl_loss,
    temperature_regularizer,
)
from losskit.embedding.diffsort import soft_sort, sorting_network
from losskit.embedding.focal_info_nce import (
    FocalInfoNCELoss,
    focal_info_nce_loss,
    mix_hard_negatives,
)
from losskit.embedding.groco import GroCoLoss, groco_loss, groco_views_loss
from losskit.embedding.hyperspherical import (
    HypersphericalSoftmaxLoss,
    class_prototypes,
    hyperspherical_softmax_loss,
    predict_novel_classes,
)
from losskit.embedding.info_nce import InfoNCELoss, info_nce_loss
from losskit.embedding.margin_heads import ArcFaceHead, CosFaceHead
from losskit.embedding.multi_similarity import MultiSimilarityLoss, multi_similarity_loss
from losskit.embedding.set_contrastive import SetSupConLoss, pool_sets, set_supcon_loss
from losskit.embedding.soft_label_contrastive import (
    SoftLabelContrastiveLoss,
    soft_label_contrastive_loss,
)
from losskit.embedding.supcon import SupConLoss, supcon_loss
from losskit.embedding.tcm import TCMLoss, tcm_loss
from losskit.embedding.triplet import TripletMarginLoss, triplet_margin_loss
from losskit.embedding.unime import UniMELoss, unime_loss
from losskit.embedding.unpg import UNPGLoss, box_whisker_filter, unpg_loss, unpg_negatives

__all__ = [
    "AMCLLoss",
    "MultiHeadProjection",
    "PairTemperature",
    "amcl_loss",
    "temperature_regularizer",
    "soft_sort",
    "sorting_network",
    "GroCoLoss",
    "groco_loss",
    "groco_views_loss",
    "SetSupConLoss",
    "pool_sets",
    "set_supcon_loss",
    "SoftLabelContrastiveLoss",
    "soft_label_contrastive_loss",
    "UniMELoss",
    "unime_loss",
    "HypersphericalSoftmaxLoss",
    "class_prototypes",
    "hyperspherical_softmax_loss",
    "predict_novel_classes",
    "UNPGLoss",
    "box_whisker_filter",
    "unpg_loss",
    "unpg_negatives",
    "FocalInfoNCELoss",
    "focal_info_nce_loss",
    "mix_hard_negatives",
    "ArcFaceHead",
    "CosFaceHead",
    "InfoNCELoss",
    "MultiSimilarityLoss",
    "SupConLoss",
    "TCMLoss",
    "TripletMarginLoss",
    "info_nce_loss",
    "multi_similarity_loss",
    "supcon_loss",
    "tcm_loss",
    "triplet_margin_loss",
]
