"""Training recipes that own models and loops (progressive distillation, active distillation,
the soft-label protocol, ...)."""

from losskit.procedures.active_distillation import (
    SELECTORS,
    ActiveDistillationResult,
    active_distillation,
    margin_select,
    rad_inclusion,
    rad_probabilities,
    rad_select,
    random_select,
    student_gains,
)
from losskit.procedures.facile import FacileResult, facile, instance_transfer, set_pretrain
from losskit.procedures.modular_mlp import (
    GrokkingRun,
    ModularMLP,
    evaluate,
    one_hot_pairs,
    predict,
    prune_neurons,
    pruning_curve,
    train_modular_mlp,
)
from losskit.procedures.progressive_distillation import (
    PAPER_STAGES,
    ProgressiveDistillation,
    Stage,
    StageLog,
)
from losskit.procedures.soft_label_protocol import (
    SoftLabelLoss,
    soft_label_loss,
    soft_label_protocol,
)
from losskit.procedures.unlearning import (
    LAFResult,
    RepresentationVAE,
    fit_representation_vae,
    laf_alignment_loss,
    laf_extractor_loss,
    laf_unlearn,
    vae_loss,
)
from losskit.procedures.unlearning_baselines import (
    finetune_unlearn,
    predict_logits,
    retrain_unlearn,
    train_classifier,
)
from losskit.procedures.unlearning_mia import (
    attack_features,
    fit_logistic,
    membership_inference_score,
)

__all__ = [
    "LAFResult",
    "RepresentationVAE",
    "fit_representation_vae",
    "laf_alignment_loss",
    "laf_extractor_loss",
    "laf_unlearn",
    "vae_loss",
    "finetune_unlearn",
    "predict_logits",
    "retrain_unlearn",
    "train_classifier",
    "attack_features",
    "fit_logistic",
    "membership_inference_score",
    "GrokkingRun",
    "ModularMLP",
    "evaluate",
    "one_hot_pairs",
    "predict",
    "prune_neurons",
    "pruning_curve",
    "train_modular_mlp",
    "FacileResult",
    "facile",
    "instance_transfer",
    "set_pretrain",
    "PAPER_STAGES",
    "ProgressiveDistillation",
    "Stage",
    "StageLog",
    "SELECTORS",
    "ActiveDistillationResult",
    "SoftLabelLoss",
    "active_distillation",
    "margin_select",
    "rad_inclusion",
    "rad_probabilities",
    "rad_select",
    "random_select",
    "soft_label_loss",
    "soft_label_protocol",
    "student_gains",
]
