"""Losses for aggregate responses: bag level, instance level and their interpolation
(Javanmard, Chen, Mirrokni, Badanidiyuru, Fu; ICLR 2024; paper 48).

The training set is split into bags ``B_1, ..., B_m`` (disjoint, together all instances) and
only each bag's mean response ``ybar_b = 1/|B_b| sum_{i in B_b} y_i`` is known. With model
predictions ``f_i`` and the bag mean of the predictions ``fbar_b = 1/|B_b| sum_{i in B_b} f_i``:

- **bag level**, one value per bag: ``l_b = (ybar_b - fbar_b)^2`` (the aggregate prediction
  fits the aggregate response);
- **instance level**, one value per instance: ``l_i = (ybar_{b(i)} - f_i)^2`` (every
  instance is regressed onto its bag's response);
- **within-bag scatter** of the predictions, one value per bag:
  ``R_b = sum_{i in B_b} (f_i - fbar_b)^2``.

Expanding ``ybar - f_i = (ybar - fbar) - (f_i - fbar)`` and using ``sum_i (f_i - fbar) = 0``
gives the paper's observation that the instance-level loss is a regularised bag-level loss,
exactly and for any predictions:

``sum_{i in B_b} (ybar_b - f_i)^2 = |B_b| (ybar_b - fbar_b)^2 + R_b``.

The **interpolating loss** keeps a fraction ``rho`` in ``[0, 1]`` of that regulariser, one
value per bag: ``L_b(rho) = |B_b| (ybar_b - fbar_b)^2 + rho R_b``. ``rho = 0`` is the bag-level
loss (weighted by bag size), ``rho = 1`` the instance-level loss summed over the bag, and
``L_b(rho) = (1 - rho) |B_b| l_b + rho sum_{i in B_b} l_i``: the regularised form and the
convex combination of the two losses are the same objective. In the paper's linear-regression
analysis (random bags) the bag-level estimator is unbiased and the regulariser trades bias for
variance. The paper gives no default ``rho``, so it is required here;
:func:`losskit.labels.aggregate_linear.cross_validate_rho` chooses it by cross-validation over
bags for linear models.

Inputs: ``predictions[n]`` (or ``[n, 1]``) floating; ``bag_ids[n]`` integer bag of each
instance in ``[0, m)``; ``bag_responses[m]`` floating, ``m = len(bag_responses)``. Every bag
must hold at least one instance. Reductions: ``"none"`` gives one value per bag (bag level,
interpolating) or per instance (instance level); ``"mean"`` averages the bag-level loss over
bags, the instance-level loss over instances, and divides the interpolating loss by ``n`` (so
that it equals the instance-level mean at ``rho = 1``, and the bag-level mean at ``rho = 0``
when all bags have the same size). Computed in at least float32, returned in the dtype of
``predictions``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losskit._core.checks import check_finite, check_number, check_reduction, checks_enabled
from losskit._core.precision import upcast_all
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register

_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _vector(name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"{name} must have shape [n] with n >= 1, got {tuple(x.shape)}")
    check_finite(name, x)
    return x


def _inputs(
    predictions: Tensor, bag_ids: Tensor, bag_responses: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Validated ``(f, bag_ids, ybar, counts, fbar)`` in the common compute dtype."""
    f = _vector("predictions", predictions)
    ybar = _vector("bag_responses", bag_responses)
    n, m = f.shape[0], ybar.shape[0]
    if not isinstance(bag_ids, Tensor) or bag_ids.dtype not in _INTS:
        got = bag_ids.dtype if isinstance(bag_ids, Tensor) else type(bag_ids).__name__
        raise ValueError(f"bag_ids must be an integer torch.Tensor, got {got}")
    if tuple(bag_ids.shape) != (n,):
        raise ValueError(
            f"bag_ids must have shape ({n},) to match predictions, got {tuple(bag_ids.shape)}"
        )
    bag_ids = bag_ids.long()
    if checks_enabled() and bool(((bag_ids < 0) | (bag_ids >= m)).any()):
        bad = bag_ids[(bag_ids < 0) | (bag_ids >= m)][0].item()
        raise ValueError(f"bag_ids holds bag {bad}, outside [0, {m}) (m = len(bag_responses))")
    counts = torch.bincount(bag_ids, minlength=m)
    if checks_enabled() and bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0)[0].item()
        raise ValueError(
            f"bag {empty} is empty: every bag of bag_responses needs at least one instance "
            "in bag_ids"
        )
    f, ybar = upcast_all(f, ybar)
    counts = counts.to(f.dtype)
    fbar = f.new_zeros(m).index_add(0, bag_ids, f) / counts
    return f, bag_ids, ybar, counts, fbar


def _scatter(f: Tensor, ids: Tensor, fbar: Tensor) -> Tensor:
    return fbar.new_zeros(fbar.shape[0]).index_add(0, ids, (f - fbar[ids]) ** 2)


def within_bag_scatter(predictions: Tensor, bag_ids: Tensor, num_bags: int) -> Tensor:
    """``R_b = sum_{i in B_b} (f_i - fbar_b)^2`` for each of the ``num_bags`` bags, ``[m]``:
    the regulariser that turns the bag-level loss into the instance-level one."""
    if isinstance(num_bags, bool) or not isinstance(num_bags, int) or num_bags < 1:
        raise ValueError(f"num_bags must be an int >= 1, got {num_bags!r}")
    f = _vector("predictions", predictions)
    f, ids, _, _, fbar = _inputs(f, bag_ids, f.new_zeros(num_bags))
    return _scatter(f, ids, fbar).to(predictions.dtype)


def aggregate_bag_loss(
    predictions: Tensor, bag_ids: Tensor, bag_responses: Tensor, *, reduction: str = "mean"
) -> Tensor:
    """Bag-level squared loss ``(ybar_b - fbar_b)^2``; ``"none"`` gives ``[m]``, one per bag."""
    check_reduction(reduction)
    _, _, ybar, _, fbar = _inputs(predictions, bag_ids, bag_responses)
    return reduce_loss((ybar - fbar) ** 2, reduction).to(predictions.dtype)


def aggregate_instance_loss(
    predictions: Tensor, bag_ids: Tensor, bag_responses: Tensor, *, reduction: str = "mean"
) -> Tensor:
    """Instance-level squared loss ``(ybar_{b(i)} - f_i)^2``; ``"none"`` gives ``[n]``."""
    check_reduction(reduction)
    f, ids, ybar, _, _ = _inputs(predictions, bag_ids, bag_responses)
    return reduce_loss((ybar[ids] - f) ** 2, reduction).to(predictions.dtype)


def aggregate_interpolating_loss(
    predictions: Tensor,
    bag_ids: Tensor,
    bag_responses: Tensor,
    *,
    rho: float,
    reduction: str = "mean",
) -> Tensor:
    """Interpolating loss ``|B_b| (ybar_b - fbar_b)^2 + rho R_b`` per bag (``"none"``: ``[m]``);
    ``"mean"`` divides the sum by ``n``. ``rho = 0``: bag level, ``rho = 1``: instance level."""
    rho = check_number("rho", rho, low=0.0, high=1.0)
    check_reduction(reduction)
    f, ids, ybar, counts, fbar = _inputs(predictions, bag_ids, bag_responses)
    loss = counts * (ybar - fbar) ** 2 + rho * _scatter(f, ids, fbar)
    return reduce_loss(loss, reduction, counts, weighted=True).to(predictions.dtype)


class AggregateBagLoss(nn.Module):
    """Module form of :func:`aggregate_bag_loss`."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, predictions: Tensor, bag_ids: Tensor, bag_responses: Tensor) -> Tensor:
        return aggregate_bag_loss(predictions, bag_ids, bag_responses, reduction=self.reduction)


class AggregateInstanceLoss(nn.Module):
    """Module form of :func:`aggregate_instance_loss`."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, predictions: Tensor, bag_ids: Tensor, bag_responses: Tensor) -> Tensor:
        return aggregate_instance_loss(
            predictions, bag_ids, bag_responses, reduction=self.reduction
        )


class AggregateInterpolatingLoss(nn.Module):
    """Module form of :func:`aggregate_interpolating_loss`; ``rho`` is validated here."""

    def __init__(self, rho: float, *, reduction: str = "mean") -> None:
        super().__init__()
        self.rho = check_number("rho", rho, low=0.0, high=1.0)
        self.reduction = check_reduction(reduction)

    def forward(self, predictions: Tensor, bag_ids: Tensor, bag_responses: Tensor) -> Tensor:
        return aggregate_interpolating_loss(
            predictions, bag_ids, bag_responses, rho=self.rho, reduction=self.reduction
        )


register(
    "aggregate_bag",
    kind="loss",
    family="aggregate",
    papers=(48,),
    summary="Bag-level squared loss between a bag's mean response and the mean of its "
    "predictions (unbiased, high variance).",
    function=aggregate_bag_loss,
    module=AggregateBagLoss,
)
register(
    "aggregate_instance",
    kind="loss",
    family="aggregate",
    papers=(48,),
    summary="Instance-level squared loss of each prediction to its bag's mean response: the "
    "bag loss plus the within-bag variance of the predictions.",
    function=aggregate_instance_loss,
    module=AggregateInstanceLoss,
)
register(
    "aggregate_interpolating",
    kind="loss",
    family="aggregate",
    papers=(48,),
    summary="Bag-level loss plus rho times the within-bag prediction scatter (rho = 0 bag "
    "level, rho = 1 instance level); the paper sets no rho: the default 0.05 is typical of "
    "cross_validate_rho's choice, prefer choosing it so.",
    defaults={"rho": 0.05},
    function=aggregate_interpolating_loss,
    module=AggregateInterpolatingLoss,
)
