"""Multi-label objectives: ``scores[N, L]``, ``target[N, L]`` in {0, 1} and an optional
``mask[N, L]`` of known entries (see ``losskit.multilabel._common``)."""

from losskit.multilabel.asymmetric import AsymmetricLoss, asymmetric_loss
from losskit.multilabel.balanced_head import (
    BranchLogits,
    HeadTailBalancedClassifier,
    branch_sample_weights,
    head_tail_balanced_loss,
)
from losskit.multilabel.bce import BinaryCrossEntropyLoss, binary_cross_entropy
from losskit.multilabel.cluster_discrimination import (
    ClusterDiscriminationHead,
    ClusterDiscriminationLoss,
    cluster_discrimination_loss,
)
from losskit.multilabel.code_attention import CodeWiseAttention
from losskit.multilabel.comic import COMICLoss
from losskit.multilabel.comic_loss import (
    MultiFocalModifierLoss,
    comic_class_weights,
    multi_focal_modifier_loss,
)
from losskit.multilabel.decoupled_softmax import DecoupledSoftmaxLoss, decoupled_softmax_loss
from losskit.multilabel.focal import FocalBinaryCrossEntropyLoss, focal_binary_cross_entropy
from losskit.multilabel.hybrid import (
    HybridLoss,
    hybrid_loss,
    inverse_frequency_weights,
    label_correlation,
    label_correlation_from_labels,
)
from losskit.multilabel.label_corrector import (
    ReflectiveCorrectorLoss,
    reflective_corrector_loss,
    reflective_label_correction,
)
from losskit.multilabel.ldam import (
    MultiLabelLDAMLoss,
    multilabel_ldam_loss,
    multilabel_ldam_margins,
)
from losskit.multilabel.pu_mlc import (
    MixedBatch,
    PUMLCLoss,
    pu_mixup_batch,
    pu_mixup_loss,
    pu_mixup_targets,
    pu_mlc_loss,
)
from losskit.multilabel.soft_top_k import SoftTopKLoss, soft_top_k, soft_top_k_loss
from losskit.multilabel.softmax import MultiPositiveSoftmaxLoss, multi_positive_softmax_loss
from losskit.multilabel.triplet_ohnm import TripletOHNMLoss, triplet_ohnm_loss

__all__ = [
    "DecoupledSoftmaxLoss",
    "MultiPositiveSoftmaxLoss",
    "SoftTopKLoss",
    "decoupled_softmax_loss",
    "multi_positive_softmax_loss",
    "soft_top_k",
    "soft_top_k_loss",
    "MixedBatch",
    "PUMLCLoss",
    "pu_mixup_batch",
    "pu_mixup_loss",
    "pu_mixup_targets",
    "pu_mlc_loss",
    "AsymmetricLoss",
    "BinaryCrossEntropyLoss",
    "BranchLogits",
    "COMICLoss",
    "ClusterDiscriminationHead",
    "ClusterDiscriminationLoss",
    "CodeWiseAttention",
    "FocalBinaryCrossEntropyLoss",
    "HeadTailBalancedClassifier",
    "HybridLoss",
    "MultiFocalModifierLoss",
    "MultiLabelLDAMLoss",
    "ReflectiveCorrectorLoss",
    "TripletOHNMLoss",
    "asymmetric_loss",
    "binary_cross_entropy",
    "branch_sample_weights",
    "cluster_discrimination_loss",
    "comic_class_weights",
    "focal_binary_cross_entropy",
    "head_tail_balanced_loss",
    "hybrid_loss",
    "inverse_frequency_weights",
    "label_correlation",
    "label_correlation_from_labels",
    "multi_focal_modifier_loss",
    "multilabel_ldam_loss",
    "multilabel_ldam_margins",
    "reflective_corrector_loss",
    "reflective_label_correction",
    "triplet_ohnm_loss",
]
