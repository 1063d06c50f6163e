"""ConR: contrastive regularizer for deep imbalanced regression (Keramati, Meng, Evans;
ICLR 2024; paper 53).

Input: L2-normalised (here: normalised inside) features ``z[N, D]`` of the batch with both
augmented views concatenated (``N = 2B``), the regression ``predictions[N]`` and the
continuous ``targets[N]``. For anchor ``j`` and the other samples ``k != j``:

- positives ``P(j) = {k: |y_j - y_k| <= omega}`` (similar labels);
- negatives ``N(j) = {k: |y_j - y_k| > omega and |yhat_j - yhat_k| <= delta}`` (dissimilar
  labels whose predictions are confusable), ``delta = prediction_threshold``;
- pushing weight ``eta_jn = S(y_j, y_n) = exp(beta * |y_j - y_n|)`` (the AgeDB/IMDB-WIKI
  form; ``beta = 0`` gives ``eta = 1``);

``L_j = -1/|P(j)| sum_{p in P(j)} log( e^{s_jp/T} /
(sum_{p' in P(j)} e^{s_jp'/T} + sum_{n in N(j)} eta_jn e^{s_jn/T}) )``

with cosine similarities ``s``. Following the paper, an anchor without negatives (nothing
confusable) gives 0: ConR only acts where predictions are confused. With
``require_negative=False`` such an anchor keeps its pull term, which is then exactly the
supervised-contrastive (L_out over positives only) form. An anchor without a positive gives 0
and drops out of the ``"mean"``, whose denominator is the number of anchors with a positive.

``reference_plus_one=True`` reproduces BorealisAI/ConR's ``loss.py``: its denominator is
``exp(masked).sum(1)``, so every non-positive entry (the diagonal and the negatives included)
adds ``exp(0) = 1``, i.e. ``N - |P(j)|`` more in each denominator. It is off by default.

Predictions and targets only select pairs and weigh them: no gradient flows into them.
The total training objective is ``regression_loss + lambda * ConR``; that outer weight
(4 on AgeDB) is the caller's. The LDS per-anchor weights ``w_j`` of the reference are not
included (``w_j = 1``). Defaults (the paper's AgeDB setting): ``omega = delta = 1``,
``temperature = 0.2``, ``beta = 0.01``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction
from losskit._core.precision import compute_dtype
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register

_DEFAULTS = {
    "label_similarity_threshold": 1.0,
    "prediction_threshold": 1.0,
    "temperature": 0.2,
    "beta": 0.01,
}


def _check_vector(name: str, x: Tensor, n: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real tensor, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if tuple(x.shape) != (n,):
        raise ValueError(
            f"{name} must have shape ({n},) (or ({n}, 1)) to match features, got {tuple(x.shape)}"
        )
    check_finite(name, x)
    return x


def _check_hparams(omega, delta, temperature, beta):
    omega = check_number("label_similarity_threshold", omega, low=0.0, high_open=True)
    delta = check_number("prediction_threshold", delta, low=0.0, high_open=True)
    t = check_number("temperature", temperature, low=0.0, low_open=True, high_open=True)
    b = check_number("beta", beta, low=0.0, high_open=True)
    return omega, delta, t, b


def conr_loss(
    features: Tensor,
    predictions: Tensor,
    targets: Tensor,
    *,
    label_similarity_threshold: float = 1.0,
    prediction_threshold: float = 1.0,
    temperature: float = 0.2,
    beta: float = 0.01,
    reference_plus_one: bool = False,
    require_negative: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """ConR of ``features[N, D]`` (both views concatenated) with ``predictions[N]`` and
    ``targets[N]``; ``"none"`` gives one value per anchor."""
    omega, delta, t, b = _check_hparams(
        label_similarity_threshold, prediction_threshold, temperature, beta
    )
    check_reduction(reduction)
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise ValueError("features must be a floating torch.Tensor of shape [N, D]")
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise ValueError(
            f"features must have shape [N, D] with N >= 2, got {tuple(features.shape)}"
        )
    check_finite("features", features)
    n = features.shape[0]
    predictions = _check_vector("predictions", predictions, n)
    targets = _check_vector("targets", targets, n)

    dtype = compute_dtype(features.dtype)
    z = F.normalize(features.to(dtype), dim=1)
    logits = z @ z.T / t
    y = targets.detach().to(dtype)
    yhat = predictions.detach().to(dtype)
    dy = (y[:, None] - y[None, :]).abs()
    dp = (yhat[:, None] - yhat[None, :]).abs()
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    pos = (dy <= omega) & ~eye
    neg = (dy > omega) & (dp <= delta) & ~eye

    neg_inf = torch.finfo(dtype).min
    # log of each denominator term: e^{s/T} for positives, eta * e^{s/T} for negatives
    terms = torch.where(pos, logits, torch.where(neg, logits + b * dy, neg_inf))
    if reference_plus_one:
        extra = (n - pos.sum(1)).to(dtype).log()
        terms = torch.cat([terms, extra[:, None]], dim=1)
    log_den = torch.logsumexp(terms, dim=1)
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    pos_logit = torch.where(pos, logits, torch.zeros_like(logits)).sum(1)
    loss = log_den - pos_logit / n_pos.clamp_min(1).to(dtype)
    keep = has_pos & neg.any(1) if require_negative else has_pos
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    out = reduce_loss(loss, reduction, has_pos.to(dtype), weighted=True)
    return out.to(features.dtype)


class ConRLoss(nn.Module):
    """Module form of :func:`conr_loss`; hyperparameters are validated here."""

    def __init__(
        self,
        label_similarity_threshold: float = 1.0,
        prediction_threshold: float = 1.0,
        temperature: float = 0.2,
        beta: float = 0.01,
        *,
        reference_plus_one: bool = False,
        require_negative: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        (
            self.label_similarity_threshold,
            self.prediction_threshold,
            self.temperature,
            self.beta,
        ) = _check_hparams(label_similarity_threshold, prediction_threshold, temperature, beta)
        self.reference_plus_one = bool(reference_plus_one)
        self.require_negative = bool(require_negative)
        self.reduction = check_reduction(reduction)

    def forward(self, features: Tensor, predictions: Tensor, targets: Tensor) -> Tensor:
        return conr_loss(
            features,
            predictions,
            targets,
            label_similarity_threshold=self.label_similarity_threshold,
            prediction_threshold=self.prediction_threshold,
            temperature=self.temperature,
            beta=self.beta,
            reference_plus_one=self.reference_plus_one,
            require_negative=self.require_negative,
            reduction=self.reduction,
        )


register(
    "conr",
    kind="loss",
    family="regression",
    papers=(53,),
    summary="ConR: pull label-similar pairs, push label-dissimilar pairs with confusable "
    "predictions, weighted by label distance.",
    defaults=_DEFAULTS,
    function=conr_loss,
    module=ConRLoss,
)
