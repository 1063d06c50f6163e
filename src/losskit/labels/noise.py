"""Label noise: symmetric, pair-flip, a noise matrix with a given trace, real human label sets.

All functions are pure NumPy and draw from the ``numpy.random.Generator`` they are given, so
a seed fixes the result. Labels are integer class ids ``[n]`` in ``[0, num_classes)``.

Conventions chosen here (the literature uses both; one default, the other an option):

* **symmetric** (default ``target="other"``): each label is, independently with probability
  ``rate``, replaced by a class drawn uniformly from the ``C - 1`` *other* classes, so the
  achieved noise rate is ``rate`` in expectation. ``target="any"`` draws from all ``C``
  classes (the "uniform noise" convention); a flip may then land on the true class and the
  achieved rate is ``rate * (C - 1) / C``.
* **pair-flip**: class ``i`` becomes ``(i + 1) mod C`` with probability ``rate``.
* **noise matrix**: ``T[i, j] = P(observed = j | true = i)``, row-stochastic, with a given
  trace; see :func:`noise_matrix_from_trace` for what "valid" means.
* **real label sets** (CIFAR-10N): the human labels replace the clean ones as they are.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

SYMMETRIC_TARGETS = ("other", "any")
CIFAR10N_SETS = ("aggre", "worst", "random1", "random2", "random3")
"""CIFAR-10N label sets; in ``cifar10n_labels.npz`` they are ``aggre_label``, ``worse_label``
(the paper's "worst"), ``random_label1`` ... ``random_label3``."""


def check_num_classes(num_classes: int, *, minimum: int = 2) -> int:
    """``num_classes`` as an int, at least ``minimum``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < minimum:
        raise ValueError(f"num_classes must be at least {minimum}, got {num_classes}")
    return int(num_classes)


def check_rate(rate: float, name: str = "rate") -> float:
    """A probability in ``[0, 1)``; 1 would leave no clean label at all."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), got {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {rate}")
    return rate


def check_class_labels(y: np.ndarray, num_classes: int, name: str = "y") -> np.ndarray:
    """Integer class ids ``[n]`` in ``[0, num_classes)``, returned as int64."""
    num_classes = check_num_classes(num_classes)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be class ids of shape [n], got shape {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int64, copy=False)


def symmetric_noise(
    y: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    *,
    target: str = "other",
) -> np.ndarray:
    """Each label, independently with probability ``rate``, replaced by a uniform class.

    ``target="other"`` (default) draws among the other ``C - 1`` classes, so every flip
    changes the label; ``target="any"`` draws among all ``C`` classes.
    """
    y = check_class_labels(y, num_classes)
    rate = check_rate(rate)
    if target not in SYMMETRIC_TARGETS:
        raise ValueError(f"target must be one of {SYMMETRIC_TARGETS}, got {target!r}")
    flip = rng.random(y.shape[0]) < rate
    out = y.copy()
    if target == "other":
        out[flip] = (y[flip] + rng.integers(1, num_classes, size=int(flip.sum()))) % num_classes
    else:
        out[flip] = rng.integers(0, num_classes, size=int(flip.sum()))
    return out


def pairflip_noise(
    y: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Class ``i`` becomes ``(i + 1) mod C``, independently with probability ``rate``."""
    y = check_class_labels(y, num_classes)
    rate = check_rate(rate)
    flip = rng.random(y.shape[0]) < rate
    out = y.copy()
    out[flip] = (y[flip] + 1) % num_classes
    return out


def check_trace(num_classes: int, trace: float) -> float:
    """A trace a valid noise matrix can have: ``1 < trace <= C`` (``C`` is no noise)."""
    num_classes = check_num_classes(num_classes)
    if isinstance(trace, bool) or not isinstance(trace, numbers.Real):
        raise ValueError(f"trace must be a number, got {trace!r}")
    trace = float(trace)
    if not (math.isfinite(trace) and 1.0 < trace <= num_classes):
        raise ValueError(
            f"trace must be in (1, {num_classes}] for {num_classes} classes "
            f"(mean diagonal in (1/C, 1]), got {trace}"
        )
    return trace


def noise_matrix_from_trace(
    num_classes: int, trace: float, rng: np.random.Generator | int
) -> np.ndarray:
    """A random valid noise matrix ``T`` (``T[i, j] = P(observed j | true i)``) with a trace.

    *Valid* here means: rows are probability vectors, ``trace(T) == trace`` and every
    diagonal entry is strictly larger than every off-diagonal entry of its row **and** of its
    column, so the true class stays the most likely observed label and no other class
    receives more of class ``j`` than ``j`` keeps (a learnable signal, as cleanlab's
    validity asks).

    Construction: the diagonal is ``m = trace / C`` plus a centred uniform jitter of at most
    ``min(0.2, m - 1/C, 1 - m) / 2`` (so the trace is exact and ``1/C < T[i, i] <= 1``);
    row ``i`` spreads ``1 - T[i, i]`` over the other classes with Dirichlet(1) weights,
    shrunk towards the uniform spread (``lambda = 1, 1/2, 1/4, ...``, finally 0) until the
    row is valid. The uniform spread is always valid, so the loop ends.
    """
    trace = check_trace(num_classes, trace)
    rng = np.random.default_rng(rng)
    c = int(num_classes)
    m = trace / c
    jitter = rng.uniform(-1.0, 1.0, size=c)
    jitter -= jitter.mean()
    peak = np.abs(jitter).max()
    delta = 0.5 * min(0.2, m - 1.0 / c, 1.0 - m)
    diag = np.full(c, m) if peak == 0 or delta <= 0 else m + delta * jitter / peak
    diag *= trace / diag.sum()  # exact trace up to rounding
    t = np.zeros((c, c))
    uniform = np.full(c - 1, 1.0 / (c - 1))
    for i in range(c):
        others = np.delete(np.arange(c), i)
        weights = rng.dirichlet(np.ones(c - 1))
        rest = max(1.0 - diag[i], 0.0)
        bound = np.minimum(diag[i], diag[others])
        for lam in [2.0**-k for k in range(10)] + [0.0]:
            row = rest * (lam * weights + (1.0 - lam) * uniform)
            if np.all(row < bound) or rest == 0.0:
                break
        t[i, others] = row
        t[i, i] = diag[i]
    return t


def check_noise_matrix(noise_matrix: np.ndarray, num_classes: int) -> np.ndarray:
    """A row-stochastic ``[C, C]`` float matrix."""
    t = np.asarray(noise_matrix, dtype=np.float64)
    if t.shape != (num_classes, num_classes):
        raise ValueError(
            f"noise_matrix must have shape ({num_classes}, {num_classes}), got {t.shape}"
        )
    if not np.all(np.isfinite(t)) or t.min() < 0 or not np.allclose(t.sum(axis=1), 1.0):
        raise ValueError("noise_matrix must be non-negative with rows summing to 1")
    return t


def sample_from_noise_matrix(
    y: np.ndarray, noise_matrix: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Observed labels drawn per sample from row ``y[i]`` of ``noise_matrix``."""
    t = np.asarray(noise_matrix)
    c = t.shape[0] if t.ndim == 2 else 0
    y = check_class_labels(y, c)
    t = check_noise_matrix(t, c)
    cum = np.cumsum(t, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(y.shape[0])
    out = np.empty_like(y)
    for k in range(c):
        rows = y == k
        out[rows] = np.searchsorted(cum[k], u[rows], side="right")
    return np.minimum(out, c - 1)


def real_noisy_labels(
    y: np.ndarray, num_classes: int, noisy: np.ndarray, *, name: str = "noisy"
) -> np.ndarray:
    """Human labels (e.g. a CIFAR-10N set) for the samples of ``y``, checked and as int64."""
    y = check_class_labels(y, num_classes)
    noisy = check_class_labels(noisy, num_classes, name=name)
    if noisy.shape != y.shape:
        raise ValueError(f"{name} must have shape {y.shape} like y, got {noisy.shape}")
    return noisy.copy()


# Scenario steps (registered by losskit.labels.scenarios): (y, num_classes, rng, **params)
# -> (index into y of the kept samples, their observed labels); noise keeps every sample.
def symmetric_scenario(
    y: np.ndarray, num_classes: int, rng: np.random.Generator, *, rate: float, target: str = "other"
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``symmetric:rate[:target]``, see :func:`symmetric_noise`."""
    return np.arange(len(y)), symmetric_noise(y, num_classes, rate, rng, target=target)


def pairflip_scenario(
    y: np.ndarray, num_classes: int, rng: np.random.Generator, *, rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``pairflip:rate``, see :func:`pairflip_noise`."""
    return np.arange(len(y)), pairflip_noise(y, num_classes, rate, rng)


def matrix_scenario(
    y: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    *,
    trace: float | None = None,
    diag: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``matrix:trace`` or ``matrix:diag=d`` (trace ``d * C``): the matrix
    ``noise_matrix_from_trace(C, trace, rng)`` is drawn first, then the labels from it."""
    if (trace is None) == (diag is None):
        raise ValueError("matrix needs exactly one of trace (e.g. trace=7) or diag (e.g. 0.7)")
    num_classes = check_num_classes(num_classes)
    trace = check_trace(num_classes, trace if diag is None else diag * num_classes)
    y = check_class_labels(y, num_classes)
    t = noise_matrix_from_trace(num_classes, trace, rng)
    return np.arange(len(y)), sample_from_noise_matrix(y, t, rng)


def cifar10n_scenario(
    y: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    *,
    label_set: str,
    noisy: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``cifar10n:set``: the human labels ``noisy`` (aligned with ``y``) replace ``y``."""
    if label_set not in CIFAR10N_SETS:
        raise ValueError(f"label_set must be one of {CIFAR10N_SETS}, got {label_set!r}")
    if noisy is None:
        raise ValueError(f"cifar10n:{label_set} needs the human labels (noisy=...)")
    observed = real_noisy_labels(y, num_classes, noisy, name=f"cifar10n/{label_set}")
    return np.arange(len(y)), observed
