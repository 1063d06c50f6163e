"""ECE, classwise ECE and reliability bins against slow loops and exact cases."""

from __future__ import annotations

import pytest
import torch

from losskit import get
from losskit.diagnostics.calibration import (
    ReliabilityBins,
    classwise_ece,
    expected_calibration_error,
    reliability_bins,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread avoids OpenMP spin on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_probs(n=300, c=5, dtype=torch.float64, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(scale * torch.randn(n, c, generator=g), dim=1).to(dtype)
    target = torch.randint(0, c, (n,), generator=g)
    return probs, target


def _slow_bins(scores, hits, n_bins):
    """Per-bin (mean score, mean hit, count) by a loop over (lo, hi] bins, first bin [0, hi]."""
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=scores.dtype).tolist()
    scores, hits = scores.tolist(), hits.tolist()  # exact: float32 -> float64 is lossless
    out = []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        inside = [i for i, s in enumerate(scores) if (s > lo or b == 0) and s <= hi]
        if inside:
            s = sum(scores[i] for i in inside) / len(inside)
            a = sum(hits[i] for i in inside) / len(inside)
            out.append((s, a, len(inside)))
        else:
            out.append((float("nan"), float("nan"), 0))
    return out


def _slow_error(bins, n, norm):
    full = [(s, a, k) for s, a, k in bins if k > 0]
    if norm == "l1":
        return sum(k / n * abs(s - a) for s, a, k in full)
    if norm == "l2":
        return sum(k / n * (s - a) ** 2 for s, a, k in full) ** 0.5
    return max(abs(s - a) for s, a, k in full)


def _slow_ece(probs, target, n_bins, norm):
    conf, pred = probs.max(dim=1)
    hits = (pred == target).to(probs.dtype)
    return _slow_error(_slow_bins(conf, hits, n_bins), len(target), norm)


def _slow_classwise(probs, target, n_bins, norm):
    c = probs.shape[1]
    errs = []
    for k in range(c):
        hits = (target == k).to(probs.dtype)
        errs.append(_slow_error(_slow_bins(probs[:, k], hits, n_bins), len(target), norm))
    return sum(errs) / c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_bins", [1, 7, 15])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_metrics_match_slow_loops(dtype, n_bins, norm):
    probs, target = _random_probs(120, 4, dtype=dtype)
    ece = expected_calibration_error(probs, target, n_bins=n_bins, norm=norm)
    cw = classwise_ece(probs, target, n_bins=n_bins, norm=norm)
    assert ece.dtype == dtype and cw.dtype == dtype and ece.ndim == 0
    ref_ece = torch.tensor(_slow_ece(probs, target, n_bins, norm), dtype=dtype)
    ref_cw = torch.tensor(_slow_classwise(probs, target, n_bins, norm), dtype=dtype)
    torch.testing.assert_close(ece, ref_ece)
    torch.testing.assert_close(cw, ref_cw)


def test_reliability_bins_match_loop_and_ece():
    probs, target = _random_probs(200, 6, scale=1.0)
    bins = reliability_bins(probs, target, n_bins=10)
    assert isinstance(bins, ReliabilityBins)
    conf, pred = probs.max(dim=1)
    ref = _slow_bins(conf, (pred == target).double(), 10)
    as_tensor = lambda j: torch.tensor([r[j] for r in ref], dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(bins.confidence, as_tensor(0), equal_nan=True)
    torch.testing.assert_close(bins.accuracy, as_tensor(1), equal_nan=True)
    assert bins.count.tolist() == [r[2] for r in ref] and int(bins.count.sum()) == 200
    assert bins.count[0] == 0 and torch.isnan(bins.confidence[0])  # conf >= 1/6 > 0.1
    torch.testing.assert_close(bins.edges, torch.linspace(0, 1, 11, dtype=torch.float64))
    full = bins.count > 0
    gap = (bins.confidence[full] - bins.accuracy[full]).abs()
    torch.testing.assert_close(
        (bins.count[full] * gap).sum() / 200, expected_calibration_error(probs, target, n_bins=10)
    )


def test_bin_edges_are_right_closed():
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75]])
    target = torch.tensor([0, 0, 1, 1])
    bins = reliability_bins(probs, target, n_bins=4)
    assert bins.count.tolist() == [0, 2, 2, 0]  # 0.5 lies in (0.25, 0.5], 0.75 in (0.5, 0.75]


def test_calibrated_synthetic_data_gives_small_ece_and_sharpened_large():
    g = torch.Generator().manual_seed(3)
    logits = 1.5 * torch.randn(40_000, 4, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, dim=1)
    target = torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert expected_calibration_error(probs, target) < 0.015
    assert classwise_ece(probs, target) < 0.015
    assert expected_calibration_error(probs, target, norm="l2") < 0.015
    sharp = torch.softmax(3 * logits, dim=1)
    assert expected_calibration_error(sharp, target) > 0.1
    assert classwise_ece(sharp, target) > 0.03


@pytest.mark.parametrize("c", [2, 5])
def test_exact_cases(c):
    target = torch.arange(12) % c
    wrong = torch.nn.functional.one_hot((target + 1) % c, c).double()
    right = torch.nn.functional.one_hot(target, c).double()
    for norm in ("l1", "l2", "max"):
        assert expected_calibration_error(wrong, target, norm=norm) == 1
        assert expected_calibration_error(right, target, norm=norm) == 0
        assert classwise_ece(right, target, norm=norm) == 0
    torch.testing.assert_close(classwise_ece(wrong, target), torch.tensor(2 / c).double())


def test_from_logits_and_half_inputs():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 5, generator=g)
    target = torch.randint(0, 5, (64,), generator=g)
    probs = torch.softmax(logits, dim=1)
    for fn in (expected_calibration_error, classwise_ece):
        torch.testing.assert_close(fn(logits, target, from_logits=True), fn(probs, target))
        for dtype in (torch.bfloat16, torch.float16):
            half = fn((logits * 1e3).to(dtype), target, from_logits=True)
            assert half.dtype == torch.float32 and torch.isfinite(half)
            ref = fn((logits * 1e3).to(dtype).float(), target, from_logits=True)
            torch.testing.assert_close(half, ref)
    bins = reliability_bins(logits, target, from_logits=True)
    torch.testing.assert_close(bins.count, reliability_bins(probs, target).count)


def test_metrics_detach_inputs():
    logits = torch.randn(10, 3, requires_grad=True)
    out = expected_calibration_error(logits, torch.zeros(10, dtype=torch.long), from_logits=True)
    assert not out.requires_grad


@pytest.mark.parametrize("fn", [expected_calibration_error, classwise_ece, reliability_bins])
def test_bad_inputs(fn):
    probs, target = _random_probs(6, 3, dtype=torch.float32)
    cases = [
        ((probs * 2, target), {}, "probs"),
        ((probs - 0.5, target), {}, "probs"),
        ((probs[0], target), {}, "probs"),
        ((probs[:0], target[:0]), {}, "probs"),
        ((torch.full_like(probs, float("nan")), target), {"from_logits": True}, "logits"),
        ((probs, target[:4]), {}, "target"),
        ((probs, torch.full_like(target, 3)), {}, "target"),
        ((probs, probs), {}, "target"),
        ((probs, target), {"n_bins": 0}, "n_bins"),
        ((probs, target), {"n_bins": 2.5}, "n_bins"),
    ]
    if fn is not reliability_bins:
        cases.append(((probs, target), {"norm": "l3"}, "norm"))
    for args, kw, name in cases:
        with pytest.raises(ValueError, match=name):
            fn(*args, **kw)


def test_registered_as_metrics():
    for name, fn in (
        ("ece", expected_calibration_error),
        ("classwise_ece", classwise_ece),
        ("reliability_bins", reliability_bins),
    ):
        entry = get(name)
        assert entry.kind == "metric" and entry.papers == () and entry.function is fn
