"""Multi-label label scenarios: missing positives, uniform or frequency-dependent, and unknowns.

:func:`apply_multilabel_scenario` turns the true training targets ``Y[n, L]`` (0/1) into what
a learner observes, a :class:`PartialLabels` ``(labels, mask, clean)``. Rows are never removed
and the test split is never touched (the arena applies this to the training split only).

=====================  ===================================================================
spec                   observed labels
=====================  ===================================================================
``clean``              ``Y`` as it is; ``mask`` None
``partial:r``          every positive independently dropped (observed 0) with prob. ``r``;
                       ``mask`` None: a missing positive looks exactly like a negative
                       (papers 19, 43). Same draws as ``losskit.labels.apply_scenario``'s
                       ``partial:r`` at the same seed, so the two give the same labels.
``partial_freq:r``     as ``partial`` with a per-label drop probability that is higher for
                       rarer labels; the expected overall fraction of dropped positives is
                       exactly ``r`` (see below)
``partial_known:r``    the drop of ``partial:r`` (same draws, same labels), and ``mask`` marks
                       as *unknown* the dropped entries plus as many true negatives chosen
                       uniformly at random (all negatives if there are fewer): the learner
                       knows which entries are unlabelled but not which of them are positive
=====================  ===================================================================

``r`` is in ``[0, 1)``; ``partial:0.3`` and ``partial:rate=0.3`` are the same spec, and each
name may carry the ``multilabel_`` prefix under which it is registered (kind ``"scenario"``,
family ``"multilabel"``). **A row can lose all of its positives** (nothing is given back: the
expected drop fraction stays exactly ``r``, and an all-zero observed row is what a learner
with missing labels meets in practice); losses that need a positive per row must skip such
rows.

**Frequency-dependent drop: rarer labels are dropped more.** The drop probability of label
``l`` with ``n_l`` true training positives follows the propensity model of Jain, Prabhu and
Varma (KDD 2016, the one behind propensity-scored P@k): the probability that a true label is
*observed* is ``1 / (1 + C (n_l + B)^-A)`` with ``A = 0.55``, ``B = 1.5``, i.e. the drop
probability is ``sigmoid(c - A log(n_l + B))``. The constant ``c`` (``log C`` in the paper)
is re-fitted by bisection so that ``sum_l n_l d_l = r sum_l n_l``. Rare labels being missed more
often is what that model measured on real extreme-classification data (annotators and click
logs miss tail labels), and it is the harder case for the tail-gain claims (paper 19). The
frequencies are those of the ``Y`` given (the true training labels).

The registered functions (``multilabel_clean``, ``multilabel_partial``, ...) take
``(y, rng)`` or ``(y, rng, rate=r)`` and return a :class:`PartialLabels`. Every scenario is a
function of ``(spec, Y, seed)`` only: one ``np.random.default_rng(seed)``
stream, first a uniform draw per entry (entry dropped when the draw is below its label's drop
probability), then, for ``partial_known``, the negatives to hide.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from losskit._core.registry import register
from losskit.labels.noise import check_rate
from losskit.labels.partial import check_multilabel

PROPENSITY_A = 0.55
PROPENSITY_B = 1.5
PREFIX = "multilabel_"


@dataclass(frozen=True, eq=False)
class PartialLabels:
    """Observed multi-label training targets: ``labels`` (int64 0/1 ``[n, L]``), ``mask``
    (bool ``[n, L]``, True = known entry; ``None`` = every entry known) and ``clean`` (the true
    int64 0/1 targets)."""

    labels: np.ndarray
    mask: np.ndarray | None
    clean: np.ndarray

    def __post_init__(self) -> None:
        if self.labels.shape != self.clean.shape or self.labels.ndim != 2:
            raise ValueError(
                f"labels {self.labels.shape} and clean {self.clean.shape} must be equal [n, L]"
            )
        if self.mask is not None and (
            self.mask.shape != self.labels.shape or self.mask.dtype != np.bool_
        ):
            raise ValueError(f"mask must be bool {self.labels.shape}, got {self.mask.shape}")

    @property
    def drop_rate(self) -> float:
        """Fraction of the true positives observed as 0 (0 when there are none)."""
        positives = int(self.clean.sum())
        return (
            float(((self.clean == 1) & (self.labels == 0)).sum() / positives) if positives else 0.0
        )

    @property
    def unknown_rate(self) -> float:
        """Fraction of the entries marked unknown by ``mask``."""
        return 0.0 if self.mask is None or self.mask.size == 0 else float(1.0 - self.mask.mean())


def frequency_drop_rates(counts: np.ndarray, rate: float) -> np.ndarray:
    """Per-label drop probabilities ``sigmoid(c - A log(n_l + B))`` with ``c`` such that
    ``sum_l n_l d_l = rate * sum_l n_l`` (to float64 precision); zeros when ``rate == 0`` or
    there is no positive. Non-increasing in ``counts``."""
    rate = check_rate(rate)
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or (n < 0).any():
        raise ValueError(f"counts must be non-negative [L], got shape {n.shape}")
    if rate == 0.0 or n.sum() == 0:
        return np.zeros_like(n)
    shape = -PROPENSITY_A * np.log(n + PROPENSITY_B)

    def rates(c: float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(c + shape)))

    lo, hi = -60.0, 60.0  # the fraction is monotone in c, ~0 at lo and ~1 at hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (n * rates(mid)).sum() < rate * n.sum() else (lo, mid)
    return rates(0.5 * (lo + hi))


def _drop(y: np.ndarray, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y`` with each positive of label ``l`` set to 0 with probability ``rates[l]``."""
    drop = (rng.random(y.shape) < rates[None, :]) & (y == 1)
    return np.where(drop, 0, y).astype(np.int64)


def clean_labels(y: np.ndarray, rng: np.random.Generator) -> PartialLabels:
    """Step ``clean``: the targets as they are."""
    return PartialLabels(y.copy(), None, y.copy())


def partial_labels(y: np.ndarray, rng: np.random.Generator, *, rate: float) -> PartialLabels:
    """Step ``partial:rate``: uniform missing positives, observed as negatives."""
    rates = np.full(y.shape[1], check_rate(rate))
    return PartialLabels(_drop(y, rates, rng), None, y.copy())


def partial_freq_labels(y: np.ndarray, rng: np.random.Generator, *, rate: float) -> PartialLabels:
    """Step ``partial_freq:rate``: missing positives, rarer labels missed more often."""
    rates = frequency_drop_rates(y.sum(axis=0), rate)
    return PartialLabels(_drop(y, rates, rng), None, y.copy())


def partial_known_labels(y: np.ndarray, rng: np.random.Generator, *, rate: float) -> PartialLabels:
    """Step ``partial_known:rate``: the drop of ``partial`` with the dropped entries and as
    many uniformly drawn true negatives marked unknown in ``mask``."""
    observed = partial_labels(y, rng, rate=rate).labels
    dropped = (y == 1) & (observed == 0)
    negatives = np.flatnonzero(y.reshape(-1) == 0)
    k = min(int(dropped.sum()), negatives.size)
    hidden = rng.choice(negatives, size=k, replace=False)
    unknown = dropped.reshape(-1).copy()
    unknown[hidden] = True
    return PartialLabels(observed, ~unknown.reshape(y.shape), y.copy())


_STEPS: dict[str, tuple[Callable[..., PartialLabels], bool, str, tuple[int, ...]]] = {
    # name: (function, takes a rate, summary, papers)
    "clean": (clean_labels, False, "Multi-label targets as they are.", ()),
    "partial": (
        partial_labels,
        True,
        "Missing labels: each positive dropped to 0 with prob. rate (looks like a negative).",
        (19, 43),
    ),
    "partial_freq": (
        partial_freq_labels,
        True,
        "Missing labels, rarer labels dropped more (Jain et al. 2016 propensity shape), "
        "expected drop fraction rate.",
        (),
    ),
    "partial_known": (
        partial_known_labels,
        True,
        "Unknown labels: the partial drop, with the dropped entries and as many random "
        "negatives marked unknown in the mask.",
        (),
    ),
}


def parse_multilabel_scenario(spec: str) -> tuple[str, float | None]:
    """``"partial:0.3"`` -> ``("partial", 0.3)``, ``"clean"`` -> ``("clean", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be a non-empty multi-label scenario string, got {spec!r}")
    name, sep, arg = (part.strip() for part in spec.strip().partition(":"))
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if name not in _STEPS:
        raise ValueError(
            f"unknown multi-label scenario {name!r} in spec {spec!r}; known: {list(_STEPS)}"
        )
    if not _STEPS[name][1]:
        if sep:
            raise ValueError(f"malformed scenario spec {spec!r}: {name} takes no argument")
        return name, None
    key, eq, value = arg.partition("=")
    if eq and key.strip() != "rate":
        raise ValueError(f"malformed scenario spec {spec!r}: {name} takes only 'rate'")
    text = value.strip() if eq else arg
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(
            f"malformed scenario spec {spec!r}: {name} needs a rate in [0, 1), got {text!r}"
        ) from None
    try:
        return name, check_rate(rate)
    except ValueError as error:
        raise ValueError(f"scenario spec {spec!r}: {error}") from None


def canonical_multilabel_scenario(spec: str) -> str:
    """One spelling per scenario (``multilabel_partial:rate=0.30`` -> ``partial:0.3``)."""
    name, rate = parse_multilabel_scenario(spec)
    return name if rate is None else f"{name}:{rate!r}"


def is_multilabel_scenario(spec: str) -> bool:
    """Whether ``spec`` parses as a multi-label scenario."""
    try:
        parse_multilabel_scenario(spec)
    except ValueError:
        return False
    return True


def apply_multilabel_scenario(spec: str, y: np.ndarray, *, seed: int) -> PartialLabels:
    """Apply ``spec`` to the true training targets ``y`` (0/1 ``[n, L]``), seeded; the same
    ``(spec, y, seed)`` always gives the same result and ``y`` is not modified."""
    name, rate = parse_multilabel_scenario(spec)
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y must be multi-label targets [n, L], got shape {y.shape}")
    y = check_multilabel(y, y.shape[1]).copy()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    function = _STEPS[name][0]
    return function(y, rng) if rate is None else function(y, rng, rate=rate)


def list_multilabel_scenarios() -> list[str]:
    """The multi-label scenario names accepted in specs."""
    return list(_STEPS)


for _name, (_function, _takes_rate, _summary, _papers) in _STEPS.items():
    register(
        PREFIX + _name,
        kind="scenario",
        family="multilabel",
        papers=_papers,
        summary=_summary,
        function=_function,
    )
