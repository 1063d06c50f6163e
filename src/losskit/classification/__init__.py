"""Multiclass objectives: ``logits[N, C]`` and integer ``target[N]`` or distributions ``[N, C]``."""

from losskit.classification.adversarial_comp_sum import (
    SmoothAdversarialCompSumLoss,
    pgd_perturb,
    smooth_adversarial_comp_sum_loss,
)
from losskit.classification.calibration import (
    CorrectnessAwareCalibrator,
    CorrectnessAwareLoss,
    TemperatureScaler,
    calibration_features,
    correctness_aware_loss,
    default_views,
    fit_correctness_aware,
    fit_temperature,
    temperature_scale,
)
from losskit.classification.comp_sum import (
    CompSumLoss,
    GeneralizedCrossEntropyLoss,
    MeanAbsoluteErrorLoss,
    comp_sum_loss,
    generalized_cross_entropy,
    mean_absolute_error_loss,
)
from losskit.classification.cross_entropy import CrossEntropyLoss, cross_entropy
from losskit.classification.dice import (
    DiceLoss,
    SelfAdjustingDiceLoss,
    dice_loss,
    self_adjusting_dice_loss,
)
from losskit.classification.ensloss import EnsLoss, ens_loss
from losskit.classification.focal import FocalLoss, focal_loss
from losskit.classification.ldam import LDAMLoss, drw_weights, ldam_loss, ldam_margins
from losskit.classification.ldr import (
    ALDRKLLoss,
    LDRKLLoss,
    aldr_kl_lambda,
    aldr_kl_loss,
    ldr_kl_loss,
)
from losskit.classification.logsumexp_penalty import LogSumExpPenalty, logsumexp_penalty
from losskit.classification.spherical import (
    SphericalSoftmaxLoss,
    SphericalSquaredError,
    SphericalZLoss,
    TaylorSoftmaxLoss,
    spherical_softmax_loss,
    spherical_softmax_loss_from_stats,
    spherical_squared_error,
    spherical_squared_error_from_stats,
    spherical_z_loss,
    spherical_z_loss_from_stats,
    taylor_softmax_loss,
    taylor_softmax_loss_from_stats,
)

__all__ = [
    "ALDRKLLoss",
    "LDAMLoss",
    "GeneralizedCrossEntropyLoss",
    "LDRKLLoss",
    "CompSumLoss",
    "CorrectnessAwareCalibrator",
    "CorrectnessAwareLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "EnsLoss",
    "FocalLoss",
    "LogSumExpPenalty",
    "MeanAbsoluteErrorLoss",
    "SelfAdjustingDiceLoss",
    "SmoothAdversarialCompSumLoss",
    "SphericalSoftmaxLoss",
    "SphericalSquaredError",
    "SphericalZLoss",
    "TaylorSoftmaxLoss",
    "TemperatureScaler",
    "aldr_kl_lambda",
    "aldr_kl_loss",
    "calibration_features",
    "comp_sum_loss",
    "correctness_aware_loss",
    "cross_entropy",
    "dice_loss",
    "ens_loss",
    "default_views",
    "drw_weights",
    "fit_correctness_aware",
    "fit_temperature",
    "focal_loss",
    "generalized_cross_entropy",
    "ldam_loss",
    "ldam_margins",
    "ldr_kl_loss",
    "logsumexp_penalty",
    "mean_absolute_error_loss",
    "pgd_perturb",
    "self_adjusting_dice_loss",
    "smooth_adversarial_comp_sum_loss",
    "spherical_softmax_loss",
    "spherical_softmax_loss_from_stats",
    "spherical_squared_error",
    "spherical_squared_error_from_stats",
    "spherical_z_loss",
    "spherical_z_loss_from_stats",
    "taylor_softmax_loss",
    "taylor_softmax_loss_from_stats",
    "temperature_scale",
]
