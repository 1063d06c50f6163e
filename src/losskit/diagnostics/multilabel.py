"""Multi-label and extreme-classification metrics: ranking (P@k, nDCG@k, their
propensity-scored forms, label-wise mean average precision) and set metrics on thresholded
predictions (micro/macro-F1, Hamming loss, sample Jaccard).

Inputs are NumPy arrays or torch tensors (detached, moved to the CPU): ``scores[N, L]``
(logits or similarities; larger ranks higher), ``target[N, L]`` and ``pred[N, L]`` with
entries in {0, 1} (any dtype). Scores are ranked in their own precision (float16/bfloat16 and
integers widened; ranking float32 in float64 would change nothing); all sums and results are
float64, returned as Python floats. Bad input (shapes, ``k`` outside ``[1, L]``, entries
outside {0, 1}, NaN/Inf scores) raises ``ValueError`` naming the argument. Work is done in
chunks of about 4M entries, so N = 1e4, L = 1e5 (float32) needs no copy of the matrix.

Conventions (extreme classification, as in the XC repository's ``xclib.evaluation.xc_metrics``):

- **P@k** ``= |top_k(s_i) ∩ y_i| / k`` and **nDCG@k** ``= DCG@k / IDCG@min(k, |y_i|)`` with
  ``DCG@k = sum_{r<=k} y_{i, pi(r)} / log2(r + 1)``, averaged over the rows with at least one
  positive. Rows without positives are *excluded* (xclib counts them as 0, so its P@k and
  nDCG@k are ours times the fraction of rows with a positive). Ties in the top k are broken
  arbitrarily, as in xclib.
- **Propensity** (Jain et al., 2016): ``p_l = 1 / (1 + C (N_l + B)^(-A))`` with
  ``C = (log N - 1)(B + 1)^A``; :func:`label_propensity`, defaults A = 0.55, B = 1.5.
- **PSP@k** and **PSnDCG@k** weight every hit by ``1 / p_l`` and divide, as xclib does, the
  mean over rows by the mean of the best achievable value (each row's positives ranked by
  decreasing ``1 / p_l``); with uniform propensities PSP@k is P@k over the P@k of a perfect
  ranking. Rows without positives add 0 to both means, so they do not matter here.
- **mAP**: the mean, over labels with at least one positive, of the per-label average
  precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds (scikit-learn's
  ``average_precision_score(average="macro")`` restricted to those labels).
- **micro-F1** ``2 TP / (2 TP + FP + FN)`` over all entries; **macro-F1** the mean of the
  per-label F1 over all L labels. A label (or, for micro-F1, the whole matrix) with neither a
  predicted nor a true positive scores ``zero_division`` (default 0, scikit-learn's default;
  ``nan`` drops such labels from the mean, as scikit-learn's ``zero_division=np.nan``).
- **Hamming loss**: the fraction of wrong entries. **Jaccard**: the mean over rows of
  ``|pred ∩ y| / |pred ∪ y|`` (scikit-learn's ``average="samples"``); a row with an empty
  union (nothing predicted, nothing true: an exact answer) scores ``zero_division``, default 1.

Every ranking metric returns NaN when no row (label, for mAP) has a positive.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from losskit._core.checks import check_number
from losskit._core.registry import register

_CHUNK = 1 << 22  # entries per chunk (16-32 MiB of scores)


def _as_array(x: Any, name: str, ndim: int = 2) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    try:
        x = np.asarray(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a NumPy array or torch tensor") from None
    if x.ndim != ndim or 0 in x.shape:
        want = "[N, L]" if ndim == 2 else "[L]"
        raise ValueError(f"{name} must be a non-empty {want} array, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be bool, integer or floating, got dtype {x.dtype}")
    return x


def _pair(a: Any, b: Any, a_name: str, b_name: str = "target") -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(a, a_name), _as_array(b, b_name)
    if x.shape != y.shape:
        raise ValueError(f"{b_name} must have shape {x.shape} like {a_name}, got {y.shape}")
    return x, y


def _checked(x: np.ndarray, name: str, binary: bool) -> np.ndarray:
    """Validated values: 0/1 arrays as bool; scores as float32 or float64 (ranks and
    comparisons are exact in the input's own precision, so no float64 copy is made)."""
    if binary:
        if x.dtype == np.bool_:
            return x
        off = (x != 0) & (x != 1)
        if off.any():
            raise ValueError(f"{name} entries must be 0 or 1, got {x[off][0]}")
        return x != 0
    if x.dtype.kind != "f" or x.itemsize < 4:
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
    return x


def _row_chunks(
    x: np.ndarray, y: np.ndarray, x_name: str, x_binary: bool, y_name: str = "target"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    step = max(1, _CHUNK // x.shape[1])
    for i in range(0, x.shape[0], step):
        yield _checked(x[i : i + step], x_name, x_binary), _checked(y[i : i + step], y_name, True)


def _check_k(k: int, num_labels: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"{name} must be an int in [1, {num_labels}], got {k!r}")
    check_number(name, k, low=1, high=num_labels)
    return int(k)


def _inverse_propensity(propensity: Any, num_labels: int) -> np.ndarray:
    p = _checked(_as_array(propensity, "propensity", ndim=1), "propensity", False)
    p = p.astype(np.float64)
    if p.shape != (num_labels,):
        raise ValueError(f"propensity must have shape ({num_labels},), got {p.shape}")
    if (p <= 0).any():
        raise ValueError("propensity must be positive")
    return 1.0 / p


@dataclass
class _Ranking:
    """Per-row top-``kmax`` statistics: ``hits`` in rank order, positives per row, and with
    propensities the weighted hits and the best achievable weighted hits (decreasing)."""

    hits: np.ndarray
    npos: np.ndarray
    whits: np.ndarray | None
    wbest: np.ndarray | None


def _best_weights(t: np.ndarray, w: np.ndarray, kmax: int) -> np.ndarray:
    """Each row's ``kmax`` largest weights ``w_l`` over its positives, decreasing (0-padded),
    from the positives alone (sparse in extreme classification)."""
    rows, cols = np.nonzero(t)
    ws = w[cols]
    order = np.lexsort((-ws, rows))
    rows, ws = rows[order], ws[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
    keep = rank < kmax
    best = np.zeros((t.shape[0], kmax))
    best[rows[keep], rank[keep]] = ws[keep]
    return best


def _ranking(scores: Any, target: Any, kmax: int, propensity: Any = None) -> _Ranking:
    x, y = _pair(scores, target, "scores")
    kmax = _check_k(kmax, x.shape[1])
    w = None if propensity is None else _inverse_propensity(propensity, x.shape[1])
    hits, npos, whits, wbest = [], [], [], []
    first = x.shape[1] - kmax  # the top kmax sit at positions first.. after a partition
    for s, t in _row_chunks(x, y, "scores", False):
        idx = np.argpartition(s, first, axis=1)[:, first:]
        order = np.argsort(-np.take_along_axis(s, idx, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
        h = np.take_along_axis(t, idx, axis=1).astype(np.float64)
        hits.append(h)
        npos.append(t.sum(axis=1, dtype=np.float64))
        if w is not None:
            whits.append(h * w[idx])
            wbest.append(_best_weights(t, w, kmax))
    cat = np.concatenate
    return _Ranking(
        cat(hits), cat(npos), cat(whits) if whits else None, cat(wbest) if wbest else None
    )


def _discount(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _ideal_dcg(npos: np.ndarray, k: int) -> np.ndarray:
    """``IDCG@min(k, |y_i|)``; rows without positives get 1 (their DCG is 0)."""
    cum = np.cumsum(_discount(k))
    return np.where(npos > 0, cum[np.clip(npos.astype(np.int64), 1, k) - 1], 1.0)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _p_at(r: _Ranking, k: int) -> float:
    return _mean(r.hits[r.npos > 0, :k].sum(axis=1)) / k


def _ndcg_at(r: _Ranking, k: int) -> float:
    rows = r.npos > 0
    return _mean((r.hits[rows, :k] @ _discount(k)) / _ideal_dcg(r.npos[rows], k))


def _psp_at(r: _Ranking, k: int) -> float:
    return _ratio(float(r.whits[:, :k].sum()), float(r.wbest[:, :k].sum()))


def _psndcg_at(r: _Ranking, k: int) -> float:
    d, idcg = _discount(k), _ideal_dcg(r.npos, k)
    return _ratio(
        float(((r.whits[:, :k] @ d) / idcg).sum()), float(((r.wbest[:, :k] @ d) / idcg).sum())
    )


def precision_at_k(scores: Any, target: Any, k: int) -> float:
    """P@k over the rows with a positive (see the module docstring)."""
    return _p_at(_ranking(scores, target, k), k)


def ndcg_at_k(scores: Any, target: Any, k: int) -> float:
    """nDCG@k ``= DCG@k / IDCG@min(k, |y|)`` over the rows with a positive; 1 for a
    ranking that puts every row's positives first."""
    return _ndcg_at(_ranking(scores, target, k), k)


def psp_at_k(scores: Any, target: Any, k: int, propensity: Any) -> float:
    """Propensity-scored P@k, normalised by the best achievable (xclib's ``psprecision``)."""
    return _psp_at(_ranking(scores, target, k, propensity), k)


def psndcg_at_k(scores: Any, target: Any, k: int, propensity: Any) -> float:
    """Propensity-scored nDCG@k, normalised by the best achievable (xclib's ``psndcg``)."""
    return _psndcg_at(_ranking(scores, target, k, propensity), k)


def label_propensity(
    class_counts: Any, num_samples: int, a: float = 0.55, b: float = 1.5
) -> np.ndarray:
    """Jain et al. (2016) propensities ``p_l = 1 / (1 + C (N_l + b)^(-a))``, ``C = (log N -
    1)(b + 1)^a``, for ``N_l`` = ``class_counts`` positives among ``N`` = ``num_samples``.
    Typical (a, b): (0.55, 1.5) default, (0.6, 2.6) Amazon, (0.5, 0.4) Wikipedia. Needs
    ``N >= 3`` so that ``C >= 0`` and every ``p_l`` lies in (0, 1]."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise ValueError(f"num_samples must be an int >= 3, got {num_samples!r}")
    check_number("num_samples", num_samples, low=3)
    a = check_number("a", a, low=0, low_open=True)
    b = check_number("b", b, low=0, low_open=True)
    counts = _checked(_as_array(class_counts, "class_counts", ndim=1), "class_counts", False)
    counts = counts.astype(np.float64)
    if (counts < 0).any() or (counts > num_samples).any():
        raise ValueError(f"class_counts must lie in [0, num_samples={num_samples}]")
    c = (math.log(num_samples) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * (counts + b) ** (-a))


def mean_average_precision(scores: Any, target: Any) -> float:
    """Mean over labels with a positive of the per-label average precision (ties in a
    label's scores form one threshold, as in scikit-learn)."""
    x, y = _pair(scores, target, "scores")
    n, num_labels = x.shape
    step, aps = max(1, _CHUNK // n), []
    for j in range(0, num_labels, step):
        cols = slice(j, j + step)
        s, t = _checked(x[:, cols], "scores", False).T, _checked(y[:, cols], "target", True).T
        keep = t.any(axis=1)  # one row per label from here on: [labels, N]
        s, t = s[keep], t[keep]
        order = np.argsort(-s, axis=1)  # tie order is irrelevant: ties share one threshold
        s, t = np.take_along_axis(s, order, axis=1), np.take_along_axis(t, order, axis=1)
        last = np.ones_like(s, dtype=bool)
        last[:, :-1] = s[:, 1:] != s[:, :-1]
        end = np.where(last, np.arange(n), n)
        end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
        tp = np.cumsum(t, axis=1, dtype=np.float64)
        precision = np.take_along_axis(tp, end, axis=1) / (end + 1)
        aps.append((precision * t).sum(axis=1) / t.sum(axis=1))
    return _mean(np.concatenate(aps))


def _zero_division(value: float, allow_nan: bool) -> float:
    if allow_nan and isinstance(value, float) and math.isnan(value):
        return value
    return check_number("zero_division", value, low=0.0, high=1.0)


@dataclass
class _Counts:
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    jaccard: float
    entries: int


def _counts(chunks: Iterator[tuple[np.ndarray, np.ndarray]], jaccard_zero: float) -> _Counts:
    """Per-label TP, FP, FN and the summed per-row Jaccard over bool chunks."""
    tp = fp = fn = np.zeros(1)
    jac, entries = 0.0, 0
    for p, t in chunks:
        both = p & t
        inter, union = both.sum(axis=1), (p | t).sum(axis=1)
        jac += float(np.where(union > 0, inter / np.maximum(union, 1), jaccard_zero).sum())
        tp = tp + both.sum(axis=0)
        fp = fp + (p & ~t).sum(axis=0)
        fn = fn + (t & ~p).sum(axis=0)
        entries += p.size
    return _Counts(tp, fp, fn, jac, entries)


def _pred_counts(pred: Any, target: Any, jaccard_zero: float = 1.0) -> _Counts:
    p, t = _pair(pred, target, "pred")
    return _counts(_row_chunks(p, t, "pred", True), jaccard_zero)


def _micro(c: _Counts, zero: float) -> float:
    tp, den = float(c.tp.sum()), float(2 * c.tp.sum() + c.fp.sum() + c.fn.sum())
    return 2 * tp / den if den > 0 else zero


def _macro(c: _Counts, zero: float) -> float:
    den = 2 * c.tp + c.fp + c.fn
    f1 = np.where(den > 0, 2 * c.tp / np.maximum(den, 1), zero)
    return _mean(f1[~np.isnan(f1)])


def micro_f1(pred: Any, target: Any, *, zero_division: float = 0.0) -> float:
    """``2 TP / (2 TP + FP + FN)`` over all entries of the 0/1 ``pred`` and ``target``."""
    zero = _zero_division(zero_division, allow_nan=True)
    return _micro(_pred_counts(pred, target), zero)


def macro_f1(pred: Any, target: Any, *, zero_division: float = 0.0) -> float:
    """Mean per-label F1 over the L labels (``zero_division`` for labels with TP + FP + FN =
    0; ``nan`` drops them)."""
    zero = _zero_division(zero_division, allow_nan=True)
    return _macro(_pred_counts(pred, target), zero)


def hamming_loss(pred: Any, target: Any) -> float:
    """Fraction of entries where ``pred`` and ``target`` differ."""
    c = _pred_counts(pred, target)
    return float(c.fp.sum() + c.fn.sum()) / c.entries


def jaccard_score(pred: Any, target: Any, *, zero_division: float = 1.0) -> float:
    """Mean over rows of ``|pred ∩ target| / |pred ∪ target|`` (``zero_division`` for empty
    unions)."""
    zero = _zero_division(zero_division, allow_nan=False)
    p, _ = _pair(pred, target, "pred")
    return _pred_counts(pred, target, zero).jaccard / p.shape[0]


def threshold_predictions(scores: Any, threshold: float = 0.0) -> np.ndarray:
    """0/1 predictions (``int8``) ``scores > threshold``; 0 suits logits, 0.5 probabilities."""
    threshold = check_number("threshold", threshold)
    x = _as_array(scores, "scores")
    step = max(1, _CHUNK // x.shape[1])
    return np.concatenate(
        [
            (_checked(x[i : i + step], "scores", False) > threshold).astype(np.int8)
            for i in range(0, x.shape[0], step)
        ]
    )


def multilabel_metrics(
    scores: Any,
    target: Any,
    *,
    threshold: float = 0.0,
    ks: Sequence[int] = (1, 3, 5),
    propensity: Any = None,
) -> dict[str, float]:
    """Every metric of this module in one pass over the data, as plain floats.

    Keys: ``p@k``, ``ndcg@k`` (and with ``propensity``: ``psp@k``, ``psndcg@k``) for each
    ``k`` in ``ks``; ``map``; and on ``threshold_predictions(scores, threshold)``:
    ``micro_f1``, ``macro_f1`` (zero_division 0), ``hamming_loss``, ``jaccard``
    (zero_division 1)."""
    x, y = _pair(scores, target, "scores")
    ks = [_check_k(k, x.shape[1], "ks") for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one k")
    threshold = check_number("threshold", threshold)
    rank = _ranking(x, y, max(ks), propensity)
    out: dict[str, float] = {}
    for k in ks:
        out[f"p@{k}"] = _p_at(rank, k)
        out[f"ndcg@{k}"] = _ndcg_at(rank, k)
        if propensity is not None:
            out[f"psp@{k}"] = _psp_at(rank, k)
            out[f"psndcg@{k}"] = _psndcg_at(rank, k)
    out["map"] = mean_average_precision(x, y)
    chunks = ((s > threshold, t) for s, t in _row_chunks(x, y, "scores", False))
    c = _counts(chunks, 1.0)
    out["micro_f1"] = _micro(c, 0.0)
    out["macro_f1"] = _macro(c, 0.0)
    out["hamming_loss"] = float(c.fp.sum() + c.fn.sum()) / c.entries
    out["jaccard"] = c.jaccard / x.shape[0]
    return out


_IN = "scores[N, L] and 0/1 target (NumPy or torch)"
_PRED = "0/1 pred and target [N, L] (NumPy or torch)"
for _name, _fn, _summary in (
    ("precision_at_k", precision_at_k, f"P@k over rows with a positive; {_IN}."),
    ("ndcg_at_k", ndcg_at_k, f"nDCG@k (IDCG@min(k, |y|)) over rows with a positive; {_IN}."),
    ("psp_at_k", psp_at_k, f"Propensity-scored P@k normalised by the best achievable; {_IN}."),
    ("psndcg_at_k", psndcg_at_k, f"Propensity-scored nDCG@k, normalised as in xclib; {_IN}."),
    ("multilabel_map", mean_average_precision, f"Mean per-label average precision; {_IN}."),
    ("multilabel_micro_f1", micro_f1, f"Micro-averaged F1; {_PRED}."),
    ("multilabel_macro_f1", macro_f1, f"Macro-averaged F1 over labels; {_PRED}."),
    ("multilabel_hamming_loss", hamming_loss, f"Fraction of wrong entries; {_PRED}."),
    ("multilabel_jaccard", jaccard_score, f"Sample-averaged Jaccard index; {_PRED}."),
    ("multilabel_metrics", multilabel_metrics, f"All multi-label metrics as a dict; {_IN}."),
):
    register(_name, kind="metric", family="multilabel", summary=_summary, function=_fn)
register(
    "label_propensity",
    kind="diagnostic",
    family="multilabel",
    summary="Jain et al. (2016) label propensities from label counts, for PSP@k / PSnDCG@k.",
    defaults={"a": 0.55, "b": 1.5},
    function=label_propensity,
)
