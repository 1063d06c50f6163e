"""Post-hoc calibration: temperature scaling and the correctness-aware calibrator (paper 52).

**Temperature scaling** (baseline, no paper): calibrated logits ``z / T`` with one ``T > 0``
fitted on held-out data by minimising the NLL; it never changes the predicted class.

**Correctness-aware (CA) loss** (paper 52): with a per-sample temperature ``T_i``,
``conf_i = max_c softmax(z_i / T_i)_c`` and the correctness of the *uncalibrated* prediction
``c_i = 1[argmax z_i = y_i]``,

    L_CA = sum_i w_i (conf_i - c_i)^2 / sum_i w_i,   w_i = 1 - acc if c_i = 1, acc otherwise,

where ``acc`` is the accuracy of the batch: both outcomes carry the same total weight
``acc (1 - acc) N``. The weights carry no gradient (they depend only on correctness), as in
the reference. The loss pushes confidence up on correct and down on wrong predictions, unlike
cross-entropy which pushes the true-class score up even for narrow misclassifications.
Since ``conf >= 1/C`` the loss is at least ``1 / (2 C^2)`` whenever both outcomes occur.

**Calibrator** (paper 52, code ``Temperature_adaptive``): ``T(x) = clamp(W2 relu(W1 f(x) + b1)
+ b2, 0.1, 10)`` with hidden size 5, where the features ``f`` are the softmax probabilities of
each transformed view at the top-4 classes of the original view (:func:`calibration_features`).
It is trained with Adam (lr 1e-4, batch 1000, 10 epochs) on a validation set
(:func:`fit_correctness_aware`). Deviations from the reference code: the output layer starts at
``T = 1`` (``init_temperature``; the reference's random initialisation can start below the clamp,
where the gradient is zero); the auxiliary correctness head, computed but never added to the
loss there, is left out; a batch holding only correct (or only wrong) predictions, where the
balanced weights are all zero and the reference gives 0/0, weights every sample by 1.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit._core.checks import (
    check_class_target,
    check_finite,
    check_number,
    check_scores,
    checks_enabled,
)
from losskit._core.precision import upcast, upcast_all
from losskit._core.reduction import reduce_loss
from losskit._core.registry import register
from losskit.classification._common import per_class_expectation, prepare

LOG_T_RANGE = (math.log(1e-2), math.log(1e2))  # fit_temperature searches T in [0.01, 100]


def _int(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _temperature(temperature: Tensor | float, n: int) -> Tensor:
    """A positive temperature as a tensor of shape [1] or [N] (from a number, [], [1], [N] or
    [N, 1])."""
    if not isinstance(temperature, Tensor):
        return torch.tensor([check_number("temperature", temperature, low=0, low_open=True)])
    if not temperature.is_floating_point():
        raise ValueError(f"temperature must be a floating tensor, got dtype {temperature.dtype}")
    if tuple(temperature.shape) not in ((), (1,), (n,), (n, 1)):
        raise ValueError(
            f"temperature must be a number or have shape (), (1,), ({n},) or ({n}, 1), "
            f"got {tuple(temperature.shape)}"
        )
    check_finite("temperature", temperature)
    if checks_enabled() and bool((temperature <= 0).any()):
        raise ValueError("temperature must be positive")
    return temperature.reshape(-1)


def temperature_scale(logits: Tensor, temperature: Tensor | float) -> Tensor:
    """``logits / T`` for a global (number, [] or [1]) or per-sample ([N] or [N, 1]) ``T > 0``;
    computed in at least float32, returned in the logits' dtype, differentiable in both."""
    check_scores(logits)
    t = _temperature(temperature, logits.shape[0]).to(logits.device)
    x, t = upcast_all(upcast(logits), t)
    return (x / t[:, None]).to(logits.dtype)


def fit_temperature(
    logits: Tensor, target: Tensor, *, max_iter: int = 50, ignore_index: int = -100
) -> float:
    """The temperature minimising the mean NLL of ``softmax(logits / T)`` (hard or soft
    targets, ``ignore_index`` skipped), found by L-BFGS over ``log T`` in float64 from T = 1.

    The search is bounded to ``T in [0.01, 100]``; on a separable set, where the NLL keeps
    falling as T -> 0, it stops once the gradient vanishes. Returns a positive float.
    """
    max_iter = _int("max_iter", max_iter)
    b = prepare(logits, target, ignore_index=ignore_index, allow_soft=True)
    x = b.x.detach().to(torch.float64)
    b = replace(b, x=x, y=b.y.detach().to(torch.float64) if b.soft else b.y, weight=None)
    log_t = torch.zeros((), dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        scaled = x * torch.exp(-log_t.clamp(*LOG_T_RANGE))
        nll = per_class_expectation(-torch.log_softmax(scaled, dim=1), b)
        loss = reduce_loss(nll, "mean", b.w)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(torch.exp(log_t.detach().clamp(*LOG_T_RANGE)))
    if not math.isfinite(t) or t <= 0:  # pragma: no cover - guarded by the clamp
        raise ValueError(f"temperature fit failed, got {t}")
    return t


class TemperatureScaler(nn.Module):
    """A global temperature kept in the ``temperature`` buffer; :meth:`fit` sets it with
    :func:`fit_temperature`, ``forward`` divides the logits by it."""

    def __init__(self, temperature: float = 1.0, *, max_iter: int = 50) -> None:
        super().__init__()
        t = check_number("temperature", temperature, low=0, low_open=True)
        self.max_iter = _int("max_iter", max_iter)
        self.register_buffer("temperature", torch.tensor(t))

    def forward(self, logits: Tensor) -> Tensor:
        return temperature_scale(logits, self.temperature)

    @torch.no_grad()
    def fit(self, logits: Tensor, target: Tensor, *, ignore_index: int = -100) -> TemperatureScaler:
        with torch.enable_grad():
            t = fit_temperature(logits, target, max_iter=self.max_iter, ignore_index=ignore_index)
        self.temperature.fill_(t)
        return self


def correctness_aware_loss(
    logits: Tensor,
    temperature: Tensor | float,
    target: Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """The CA loss of paper 52 (formula in the module docstring).

    ``logits[N, C]`` are the uncalibrated logits, ``temperature`` a positive number or a
    per-sample tensor ([N] or [N, 1]), ``target[N]`` class indices. ``"none"`` returns
    ``w_i (conf_i - c_i)^2`` per sample, ``"sum"`` their sum, ``"mean"`` divides by ``sum w_i``;
    ``acc`` and the weights are computed over the samples that are not ``ignore_index``
    (those give 0). Differentiable in the temperature and the logits.
    """
    b = prepare(logits, target, ignore_index=ignore_index, reduction=reduction, allow_soft=False)
    t = _temperature(temperature, b.x.shape[0]).to(b.x.device)
    x, t = upcast_all(b.x, t)
    z = x / t[:, None]
    conf = torch.exp(z.amax(dim=1) - torch.logsumexp(z, dim=1))
    correct = x.argmax(dim=1) == b.y
    keep = torch.ones_like(conf) if b.keep is None else b.keep.to(conf.dtype)
    acc = (correct * keep).sum() / keep.sum()
    balanced = torch.where(correct, 1 - acc, acc)
    one_outcome = (acc == 0) | (acc == 1)
    w = torch.where(one_outcome, torch.ones_like(balanced), balanced) * keep
    loss = (conf - correct.to(conf.dtype)) ** 2
    return reduce_loss(loss, reduction, w).to(b.dtype)


class CorrectnessAwareLoss(nn.Module):
    """Module form of :func:`correctness_aware_loss`: ``forward(logits, temperature, target)``."""

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, temperature: Tensor | float, target: Tensor) -> Tensor:
        return correctness_aware_loss(
            logits, temperature, target, ignore_index=self.ignore_index, reduction=self.reduction
        )


def calibration_features(view_logits: list[Tensor], *, top_k: int = 4) -> Tensor:
    """Features of paper 52's calibrator from V >= 2 views of the same inputs.

    ``view_logits[0]`` are the logits of the original inputs, the others those of transformed
    inputs (all [N, C]). For every transformed view ``v`` (in order) the softmax of ``v`` is
    gathered at the ``top_k`` classes of the original view (in decreasing order):
    ``[N, (V - 1) * top_k]``, in the dtype of ``view_logits[0]``.
    """
    if not isinstance(view_logits, (list, tuple)) or len(view_logits) < 2:
        raise ValueError("view_logits must be a list of at least 2 logit tensors [N, C]")
    for i, v in enumerate(view_logits):
        check_scores(v, f"view_logits[{i}]")
        if v.shape != view_logits[0].shape:
            raise ValueError(
                f"view_logits[{i}] must have shape {tuple(view_logits[0].shape)} like "
                f"view_logits[0], got {tuple(v.shape)}"
            )
    top_k = _int("top_k", top_k)
    if top_k > view_logits[0].shape[1]:
        raise ValueError(f"top_k must be <= the {view_logits[0].shape[1]} classes, got {top_k}")
    index = view_logits[0].topk(top_k, dim=1).indices
    feats = [torch.softmax(upcast(v), dim=1).gather(1, index) for v in view_logits[1:]]
    return torch.cat(feats, dim=1).to(view_logits[0].dtype)


def default_views(x: Tensor, *, degrees: float = 15.0) -> list[Tensor]:
    """Four views of images ``x[N, C, H, W]`` with torch ops only: identity, greyscale
    (ITU-R 601 luma for C = 3, channel mean otherwise, repeated over the channels), horizontal
    flip, and rotation by ``degrees`` about the centre (bilinear, zero padding). Paper 52 uses
    grey, colour-jitter and rotation; colour jitter is random and is left to the model side."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating image tensor [N, C, H, W], got {got}")
    angle = math.radians(check_number("degrees", degrees, low=-180, high=180))
    xf = upcast(x)
    if x.shape[1] == 3:
        luma = xf.new_tensor([0.299, 0.587, 0.114])
        grey = (xf * luma[None, :, None, None]).sum(dim=1, keepdim=True)
    else:
        grey = xf.mean(dim=1, keepdim=True)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = xf.new_tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    rotated = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return [x, grey.expand_as(xf).to(x.dtype).contiguous(), x.flip(-1), rotated.to(x.dtype)]


class CorrectnessAwareCalibrator(nn.Module):
    """Per-sample temperature of paper 52: ``clamp(Linear(ReLU(Linear(f))), min, max)``.

    ``num_views`` counts the original view; ``forward(view_logits)`` returns ``T`` [N] and
    :meth:`calibrate` the calibrated logits of the original view. ``init_temperature`` sets
    the output layer to a constant ``T`` (zero weights); ``None`` keeps PyTorch's default
    initialisation as in the reference code.
    """

    def __init__(
        self,
        num_views: int = 4,
        *,
        top_k: int = 4,
        hidden: int = 5,
        min_temperature: float = 0.1,
        max_temperature: float = 10.0,
        init_temperature: float | None = 1.0,
    ) -> None:
        super().__init__()
        self.num_views = _int("num_views", num_views, low=2)
        self.top_k = _int("top_k", top_k)
        self.min_temperature = check_number(
            "min_temperature", min_temperature, low=0, low_open=True
        )
        self.max_temperature = check_number("max_temperature", max_temperature, low=min_temperature)
        self.in_features = (self.num_views - 1) * self.top_k
        self.embed = nn.Linear(self.in_features, _int("hidden", hidden))
        self.head = nn.Linear(hidden, 1)
        if init_temperature is not None:
            t0 = check_number(
                "init_temperature",
                init_temperature,
                low=self.min_temperature,
                high=self.max_temperature,
            )
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.fill_(t0)

    def temperature_from_features(self, features: Tensor) -> Tensor:
        """``T`` [N] in ``[min_temperature, max_temperature]`` from features [N, in_features]."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"features must have shape [N, {self.in_features}], got {tuple(features.shape)}"
            )
        w = self.head.weight
        t = self.head(torch.relu(self.embed(features.to(device=w.device, dtype=w.dtype))))
        return t.squeeze(1).clamp(self.min_temperature, self.max_temperature)

    def forward(self, view_logits: list[Tensor]) -> Tensor:
        if not isinstance(view_logits, (list, tuple)) or len(view_logits) != self.num_views:
            raise ValueError(f"view_logits must be a list of {self.num_views} logit tensors")
        return self.temperature_from_features(calibration_features(view_logits, top_k=self.top_k))

    def calibrate(self, view_logits: list[Tensor]) -> Tensor:
        """``view_logits[0] / T(x)`` in the dtype of ``view_logits[0]``."""
        return temperature_scale(view_logits[0], self(view_logits))


def fit_correctness_aware(
    calibrator: CorrectnessAwareCalibrator,
    view_logits: list[Tensor],
    target: Tensor,
    *,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 1000,
    ignore_index: int = -100,
    generator: torch.Generator | None = None,
) -> CorrectnessAwareCalibrator:
    """Train ``calibrator`` in place with :func:`correctness_aware_loss` on a validation set
    (paper 52: Adam, lr 1e-4, batch 1000, 10 epochs, shuffled each epoch with ``generator``).

    The features and logits are fixed (detached); the data moves to the calibrator's device.
    Returns the calibrator in eval mode.
    """
    if not isinstance(calibrator, CorrectnessAwareCalibrator):
        raise ValueError(f"calibrator must be a CorrectnessAwareCalibrator, got {type(calibrator)}")
    epochs = _int("epochs", epochs)
    batch_size = _int("batch_size", batch_size)
    lr = check_number("lr", lr, low=0, low_open=True)
    if not isinstance(view_logits, (list, tuple)) or len(view_logits) != calibrator.num_views:
        raise ValueError(f"view_logits must be a list of {calibrator.num_views} logit tensors")
    features = calibration_features(view_logits, top_k=calibrator.top_k).detach()
    check_class_target(target, view_logits[0], ignore_index=ignore_index, allow_soft=False)
    device = calibrator.head.weight.device
    logits, features, target = (t.detach().to(device) for t in (view_logits[0], features, target))
    opt = torch.optim.Adam(calibrator.parameters(), lr=lr)
    calibrator.train()
    n = logits.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            t = calibrator.temperature_from_features(features[idx])
            loss = correctness_aware_loss(logits[idx], t, target[idx], ignore_index=ignore_index)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return calibrator.eval()


register(
    "temperature_scaling",
    kind="procedure",
    family="classification",
    summary="Temperature scaling: one global T fitted by NLL (L-BFGS on log T) on held-out data.",
    defaults={"max_iter": 50},
    function=fit_temperature,
    module=TemperatureScaler,
)
register(
    "correctness_aware",
    kind="loss",
    family="classification",
    papers=(52,),
    summary="CA loss: class-balanced squared gap between calibrated confidence and correctness.",
    function=correctness_aware_loss,
    module=CorrectnessAwareLoss,
)
register(
    "fit_correctness_aware",
    kind="procedure",
    family="classification",
    papers=(52,),
    summary="Per-sample temperature from transformed views, trained with the CA loss (Adam).",
    defaults={
        "num_views": 4,
        "top_k": 4,
        "hidden": 5,
        "min_temperature": 0.1,
        "max_temperature": 10.0,
    },
    function=fit_correctness_aware,
    module=CorrectnessAwareCalibrator,
)
