"""Memorisation and generalisation on corrupted modular arithmetic (paper 55, Doshi, Das, He,
Gromov): the inverse participation ratio of weights in the Fourier basis, accuracy on the
clean and corrupted parts of the training set, and the paper's phases.

**Fourier IPR** (the paper's Eq. 3, footnote 4): for a weight vector ``x`` of length ``p``
indexed by an element of ``Z_p`` (an operand or an output class), with ``x~ = rfft(x)`` its
one-sided discrete Fourier transform (``n = floor(p/2) + 1`` coefficients, the constant
included, as the paper's code computes it)::

    IPR_r(x) = sum_j (|x~_j| / ||x~||_2)^{2r} = (||x~||_{2r} / ||x~||_2)^{2r},   r = 2.

A pure cosine ``cos(2 pi k i / p + phi)`` (one frequency) has ``IPR = 1``; by the power-mean
inequality ``IPR_r >= n^{1 - r}``, with equality for a flat spectrum (e.g. a one-hot vector).
High IPR marks periodic (generalising) weights, low IPR memorising ones. With the two-sided
DFT a cosine would give 1/2 and the floor would be ``p^{1-r}``; the paper's stated range
``[1/p, 1]`` is that convention's, its code and histograms use the one-sided one kept here.

**Per-neuron IPR** (Eq. 4): ``IPR_k = (IPR(U_k.) + IPR(V_k.) + IPR(W_.k)) / 3`` for the
two-layer network ``f(a, b) = W phi(U e_a + V e_b)``, ``U, V [N, p]``, ``W [p, N]``.

**Phases** (Appendix C, Table 2), from the accuracy on the (corrupted) training labels and
on the test set, with corruption fraction ``xi``: test >= 90 % and train >= 90 %:
*coexistence*; test >= 90 % and ``100 (1.05 - xi) %`` <= train < 90 %: *partial inversion*;
test >= 90 % and train < ``100 (1.05 - xi) %``: *full inversion*; test < 90 % and train >=
90 %: *memorization*; both < 90 %: *forgetting* (the paper's "forgetting or confusion").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from losskit._core.checks import check_number
from losskit._core.registry import register
from losskit.labels.modular import ModularDataset

PHASES = ("coexistence", "partial inversion", "full inversion", "memorization", "forgetting")
ACCURACY_KEYS = ("train", "train_clean", "train_corrupted", "train_corrupted_true", "test")


def fourier_ipr(weights: ArrayLike, *, r: float = 2.0) -> np.ndarray:
    """``IPR_r`` of the one-sided DFT of each row of ``weights`` ``[m, p]`` (or of one
    vector ``[p]``, giving a 0-d array); float64. A row of zeros (a neuron that weight decay
    switched off) has no spectrum: its IPR is NaN."""
    x = np.asarray(weights, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] < 2:
        raise ValueError(f"weights must have shape [p] or [m, p] with p >= 2, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("weights must be finite, got NaN or Inf values")
    r = check_number("r", r, low=1.0, low_open=True)
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    total = power.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((power / total) ** r).sum(axis=-1)


def neuron_ipr(u: ArrayLike, v: ArrayLike, w: ArrayLike, *, r: float = 2.0) -> np.ndarray:
    """Per-neuron IPR ``[N]`` (Eq. 4): the mean of the IPRs of row ``k`` of ``u [N, p]``,
    row ``k`` of ``v [N, p]`` and column ``k`` of ``w [p, N]``."""
    u, v, w = (np.asarray(t, dtype=np.float64) for t in (u, v, w))
    if u.ndim != 2 or v.shape != u.shape or w.shape != u.shape[::-1]:
        raise ValueError(
            f"u, v must have shape [N, p] and w shape [p, N]; got {u.shape}, {v.shape}, {w.shape}"
        )
    return (fourier_ipr(u, r=r) + fourier_ipr(v, r=r) + fourier_ipr(w.T, r=r)) / 3.0


def split_accuracies(pred: ArrayLike, data: ModularDataset) -> dict[str, float]:
    """Accuracies of predictions ``pred [p^2]`` (one class per pair, canonical order).

    ``train``: against the training labels as given (corrupted ones included);
    ``train_clean``: on training examples whose label is true; ``train_corrupted``: on those
    whose label is wrong, against that wrong label (memorisation); ``train_corrupted_true``:
    on the same examples against the true label (generalisation on them); ``test``: on the
    test pairs. An empty part gives NaN.
    """
    pred = np.asarray(pred)
    n = data.p * data.p
    if pred.shape != (n,) or not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f"pred must hold integer classes of shape ({n},), got {pred.shape}")
    tr = pred[data.train]
    hit = tr == data.train_labels
    wrong = data.wrong

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if x.size else float("nan")

    return {
        "train": mean(hit),
        "train_clean": mean(hit[~wrong]),
        "train_corrupted": mean(hit[wrong]),
        "train_corrupted_true": mean(tr[wrong] == data.labels[data.train][wrong]),
        "test": mean(pred[data.test] == data.test_labels),
    }


def classify_phase(
    train_accuracy: float, test_accuracy: float, corruption: float, *, level: float = 0.9
) -> str:
    """The paper's phase (Appendix C) of a run from its train and test accuracies in
    ``[0, 1]`` and its corruption fraction ``xi``; ``level`` is the paper's 90 %."""
    tr = check_number("train_accuracy", train_accuracy, low=0.0, high=1.0)
    te = check_number("test_accuracy", test_accuracy, low=0.0, high=1.0)
    xi = check_number("corruption", corruption, low=0.0, high=1.0)
    level = check_number("level", level, low=0.0, high=1.0, low_open=True)
    if te >= level:
        if tr >= level:
            return "coexistence"
        return "partial inversion" if tr >= 1.05 - xi else "full inversion"
    return "memorization" if tr >= level else "forgetting"


register(
    "fourier_ipr",
    kind="diagnostic",
    family="diagnostics",
    papers=(55,),
    summary="Inverse participation ratio of weight rows in the (one-sided) Fourier basis; "
    "1 for a single frequency, n^(1-r) for a flat spectrum.",
    defaults={"r": 2.0},
    function=fourier_ipr,
)
register(
    "neuron_ipr",
    kind="diagnostic",
    family="diagnostics",
    papers=(55,),
    summary="Per-neuron Fourier IPR of a two-layer modular-arithmetic MLP (mean over U, V, W); "
    "high = periodic/generalising, low = memorising.",
    defaults={"r": 2.0},
    function=neuron_ipr,
)
register(
    "grokking_phase",
    kind="metric",
    family="diagnostics",
    papers=(55,),
    summary="Phase of a run on corrupted modular data (coexistence, partial/full inversion, "
    "memorization, forgetting) from train and test accuracy.",
    defaults={"level": 0.9},
    function=classify_phase,
)
