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
from losskit.embedding.chunked import chunked_info_nce_loss, chunked_supcon_loss
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
from losskit.embedding.icnn import ICNNLoss, icnn_loss, icnn_score
from losskit.embedding.info_nce import InfoNCELoss, info_nce_loss
from losskit.embedding.margin_heads import ArcFaceHead, CosFaceHead
from losskit.embedding.metrix import MetrixLoss, metrix_loss
from losskit.embedding.metrix_mix import MetrixBatch, metrix_mix, metrix_pairs
from losskit.embedding.mixed_targets import (
    MixedContrastiveLoss,
    MixedMultiSimilarityLoss,
    MixedProxyAnchorLoss,
    mixed_contrastive_loss,
    mixed_multi_similarity_loss,
    mixed_proxy_anchor_loss,
)
from losskit.embedding.multi_similarity import MultiSimilarityLoss, multi_similarity_loss
from losskit.embedding.pooling_bias import (
    PoolingBiasLoss,
    pooling_bias_loss,
    pooling_bias_weights,
)
from losskit.embedding.proto_triplet import ProtoTripletLoss, proto_triplet_loss
from losskit.embedding.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
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
    "chunked_info_nce_loss",
    "chunked_supcon_loss",
    "ICNNLoss",
    "icnn_loss",
    "icnn_score",
    "MetrixLoss",
    "metrix_loss",
    "MetrixBatch",
    "metrix_mix",
    "metrix_pairs",
    "MixedContrastiveLoss",
    "MixedMultiSimilarityLoss",
    "MixedProxyAnchorLoss",
    "mixed_contrastive_loss",
    "mixed_multi_similarity_loss",
    "mixed_proxy_anchor_loss",
    "PoolingBiasLoss",
    "pooling_bias_loss",
    "pooling_bias_weights",
    "ProtoTripletLoss",
    "proto_triplet_loss",
    "ProxyAnchorLoss",
    "proxy_anchor_loss",
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
