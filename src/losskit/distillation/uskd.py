"""Universal self-knowledge distillation, USKD (paper 44: Yang et al., ICCV 2023, "From
Knowledge Distillation to Self-Knowledge Distillation"): NKD's form with soft labels the
student makes for itself, no teacher.

Inputs (this objective does not follow the teacher/student contract of ``_common.py``):

==================  =========================================================================
``student``         ``[N, C]`` logits of the final classifier, floating
``target``          ``[N]`` integer class indices (``ignore_index`` entries skipped)
``weak_logits``     ``[N, C]`` logits of the weak head, a linear classifier on an intermediate
                    feature (:class:`USKDHead`); optional in :func:`uskd_loss`
==================  =========================================================================

With ``S = softmax(s)``, ``W = softmax(w)`` (weak head), the target ``y`` and
``N(P)_j = P_j / (1 - P_y)`` the renormalised non-target probabilities::

    USKD_i = alpha * L_target + beta * L_non + L_weak
    L_target = -p_y log S_y,          p_y = S_y^2 + 1 - mean_batch(S_y^2)     (squared target)
    L_non    = -sum_{j != y} z_j log N(S)_j,    z_j = (1 / r_j) / sum_{k=1}^{C-1} (1 / k)  (Zipf)
    L_weak   = mu * CE(w, 0.9 * onehot(y) + 0.1 / C)

``p_y`` and ``z`` are constants (detached). ``p_y`` averages to 1 over the batch, like a hard
label, and rises with the student's own confidence; the batch mean is taken over the samples
that are not ignored, so ``reduction="none"`` values depend on the whole batch. ``r_j`` is the
rank (1 = first) of non-target class ``j``; the labels ``z`` sum to 1 over the non-target
classes and fall as ``1 / r``. Without ``weak_logits`` the weak term is absent and the ranking
uses the student alone. Defaults from the reference code (yzd-v/cls_KD ``USKDLoss``, ImageNet):
``alpha = 1.0``, ``beta = 0.1``, ``mu = 0.005``; its CIFAR-100 config uses ``alpha = 0.1``,
``beta = 0.1``, ``mu = 0.1`` with a 256-channel intermediate feature. USKD is added to the
student's cross-entropy, which the caller adds.

Ranking. ``ranking="paper"`` (default) orders the non-target classes by the sum of the two
renormalised non-target distributions, ``N(W)_j + N(S)_j``, and ranks the ``C - 1``
non-target classes among themselves. ``ranking="code"`` reproduces the released code, which
computes ``W_j / (1 - W_y + 1e-6) + s_j / (1 - s_y + 1e-6)`` after ``s`` has been reassigned to
log-probabilities: it adds a log-probability to a probability (the log term dominates), and it
ranks all ``C`` classes with the target among them, so that when the target ranks first the
non-target labels follow ``1/2, 1/3, ...`` before renormalising. Mixed (soft) labels, which the
code handles through their two largest entries, are not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import (
    check_choice,
    check_class_target,
    check_number,
    check_reduction,
    check_scores,
)
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss, safe_target, sample_weights
from losskit._core.registry import register
from losskit.distillation.dkd import non_target_log_softmax

RANKINGS = ("paper", "code")
WEAK_SMOOTHING = 0.1  # the weak head's label: 0.9 * onehot + 0.1 / C


def _prepare(
    student: Tensor, target: Tensor, weak_logits: Tensor | None, ignore_index: int
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None, Tensor | None]:
    check_scores(student, "student")
    check_class_target(target, student, ignore_index=ignore_index, allow_soft=False)
    if weak_logits is not None:
        check_scores(weak_logits, "weak_logits")
        if tuple(weak_logits.shape) != tuple(student.shape):
            raise ValueError(
                f"weak_logits must have the student's shape {tuple(student.shape)}, "
                f"got {tuple(weak_logits.shape)}"
            )
    s, w = upcast_all(student, weak_logits)
    wt, keep = sample_weights(target, None, ignore_index)
    return s, w, safe_target(target, keep), keep, wt


def _soft_labels(
    s: Tensor, w: Tensor | None, y: Tensor, keep: Tensor | None, ranking: str
) -> tuple[Tensor, Tensor]:
    """Squared-target labels ``[N]`` and Zipf non-target labels ``[N, C]``, detached."""
    s, w = s.detach(), None if w is None else w.detach()
    log_s = torch.log_softmax(s, dim=1)
    sq = log_s.gather(1, y[:, None]).squeeze(1).mul(2).exp()  # S_y^2
    if keep is None:
        mean = sq.mean()
    else:
        k = keep.to(sq.dtype)
        mean = (sq * k).sum() / k.sum().clamp_min(1.0)
    p_y = sq + 1 - mean
    if ranking == "paper":
        score = non_target_log_softmax(s, y).exp()
        if w is not None:
            score = score + non_target_log_softmax(w, y).exp()
        score = score.scatter(1, y[:, None], float("-inf"))  # the target ranks last
    else:
        log_s_y = log_s.gather(1, y[:, None])
        score = log_s / (1 - log_s_y + 1e-6)
        if w is not None:
            p_w = torch.softmax(w, dim=1)
            score = score + p_w / (1 - p_w.gather(1, y[:, None]) + 1e-6)
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    ranks = torch.arange(1, s.shape[1] + 1, dtype=s.dtype, device=s.device)
    rank = torch.empty_like(s).scatter_(1, order, ranks.expand_as(s))
    z = (1.0 / rank).scatter(1, y[:, None], 0.0)
    return p_y, z / z.sum(dim=1, keepdim=True)


def uskd_soft_labels(
    student: Tensor,
    target: Tensor,
    *,
    weak_logits: Tensor | None = None,
    ranking: str = "paper",
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """The soft labels USKD trains on: the squared-target label ``p_y`` ``[N]`` and the Zipf
    non-target labels ``z`` ``[N, C]`` (0 at the target, rows summing to 1), both detached and
    in the compute dtype (float32 or float64)."""
    check_choice("ranking", ranking, RANKINGS)
    s, w, y, keep, _ = _prepare(student, target, weak_logits, ignore_index)
    return _soft_labels(s, w, y, keep, ranking)


def _check_hyper(alpha: float, beta: float, mu: float, ranking: str) -> tuple[float, float, float]:
    """Validate the term weights (>= 0) and the ranking."""
    weights = (
        check_number("alpha", alpha, low=0.0),
        check_number("beta", beta, low=0.0),
        check_number("mu", mu, low=0.0),
    )
    check_choice("ranking", ranking, RANKINGS)
    return weights


def uskd_loss(
    student: Tensor,
    target: Tensor,
    *,
    weak_logits: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 0.1,
    mu: float = 0.005,
    ranking: str = "paper",
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """``alpha * L_target + beta * L_non + L_weak`` per sample (see the module docstring);
    ``L_weak`` only with ``weak_logits``, whose gradient trains the weak head."""
    a, b, m = _check_hyper(alpha, beta, mu, ranking)
    check_reduction(reduction)
    s, w, y, keep, wt = _prepare(student, target, weak_logits, ignore_index)
    p_y, z = _soft_labels(s, w, y, keep, ranking)
    log_s_y = torch.log_softmax(s, dim=1).gather(1, y[:, None]).squeeze(1)
    log_s_hat = non_target_log_softmax(s, y)
    non = -(z * torch.where(z > 0, log_s_hat, torch.zeros_like(log_s_hat))).sum(dim=1)
    loss = a * (-p_y * log_s_y) + b * non
    if w is not None:
        weak = F.cross_entropy(w, y, reduction="none", label_smoothing=WEAK_SMOOTHING)
        loss = loss + m * weak
    return reduce_loss(loss, reduction, wt).to(student.dtype)


class USKDHead(nn.Linear):
    """The weak supervision head: a linear classifier ``[N, D] -> [N, C]`` on an intermediate
    feature of the student (the reference code uses the pooled output of the stage before the
    last, 256 channels for a CIFAR ResNet-18)."""


class USKDLoss(nn.Module):
    """Module form of :func:`uskd_loss`. With ``in_features`` and ``num_classes`` it owns a
    :class:`USKDHead` and takes the intermediate ``features`` ``[N, D]``; otherwise it takes
    ``weak_logits`` directly (or neither: no weak term). Add the head's parameters (they are
    this module's) to the optimiser. ``forward(student, target, features=None,
    weak_logits=None)``."""

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 0.1,
        mu: float = 0.005,
        ranking: str = "paper",
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.mu = _check_hyper(alpha, beta, mu, ranking)
        self.ranking = ranking
        self.reduction = check_reduction(reduction)
        self.ignore_index = ignore_index
        self.head: USKDHead | None = None
        if (in_features is None) != (num_classes is None):
            raise ValueError("in_features and num_classes must be given together for the head")
        if in_features is not None and num_classes is not None:
            check_number("in_features", in_features, low=1)
            check_number("num_classes", num_classes, low=2)
            self.head = USKDHead(int(in_features), int(num_classes))

    def forward(
        self,
        student: Tensor,
        target: Tensor,
        features: Tensor | None = None,
        weak_logits: Tensor | None = None,
    ) -> Tensor:
        if features is not None:
            if weak_logits is not None:
                raise ValueError("give features or weak_logits, not both")
            if self.head is None:
                raise ValueError("features need a head: build USKDLoss(in_features, num_classes)")
            check_scores(features, "features", min_classes=1)
            if features.shape[1] != self.head.in_features:
                raise ValueError(
                    f"features must have shape [N, {self.head.in_features}], "
                    f"got {tuple(features.shape)}"
                )
            weak_logits = self.head(features)
        return uskd_loss(
            student, target, weak_logits=weak_logits, alpha=self.alpha, beta=self.beta,
            mu=self.mu, ranking=self.ranking, ignore_index=self.ignore_index,
            reduction=self.reduction,
        )  # fmt: skip


register(
    "uskd",
    kind="loss",
    family="distillation",
    papers=(44,),
    summary="Teacher-free self-KD: squared-target soft label, Zipf non-target labels ranked "
    "with a weak head on an intermediate feature.",
    defaults={"alpha": 1.0, "beta": 0.1, "mu": 0.005, "ranking": "paper"},
    function=uskd_loss,
    module=USKDLoss,
)
