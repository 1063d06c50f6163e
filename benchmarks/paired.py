"""The paired-timing harness the benchmark scripts share: each objective is timed
interleaved with a baseline on the same inputs (one baseline step, one objective step,
``repeats`` times after a warm-up of each), so that load from other processes hits both
sides alike. Memory is the peak allocated bytes on CUDA; on the CPU, where torch has no
allocator statistics, it is the bytes of the tensors autograd saves for the backward pass
(custom functions' ctx attributes included) plus the output.

The scripts import it as a sibling (``python benchmarks/<script>.py`` puts this folder on
``sys.path``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

import losskit

Call = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Stat = Callable[[Sequence[float]], float]


def add_arguments(parser: argparse.ArgumentParser, n: int) -> None:
    """The options every benchmark takes: batch size ``--n`` (default ``n``), ``--repeats``,
    ``--threads``, ``--stat``, ``--only`` and ``--device``."""
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def setup(args: argparse.Namespace) -> tuple[torch.device, Stat]:
    """Applies ``--threads``, turns losskit's input checks off, and returns the device and
    the statistic that ``--stat`` names."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    losskit.set_checks(False)
    stat = statistics.median if args.stat == "median" else min
    return torch.device(args.device), stat


def _step(fn: Call, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one forward+backward of ``fn`` on a fresh leaf copy of ``x``."""
    xg = x.detach().requires_grad_(True)
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(xg, y).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(
    fn: Call, base: Call, x: torch.Tensor, y: torch.Tensor, repeats: int
) -> tuple[list[float], list[float]]:
    """Forward+backward seconds of ``fn`` and of the baseline ``base``, interleaved."""
    _step(base, x, y)
    _step(fn, x, y)
    times: list[float] = []
    base_times: list[float] = []
    for _ in range(repeats):
        base_times.append(_step(base, x, y))
        times.append(_step(fn, x, y))
    return times, base_times


def memory(fn: Call, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes one forward+backward of ``fn`` adds (see the module docstring)."""
    xg = x.detach().requires_grad_(True)
    if x.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(xg, y).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() != xg.data_ptr():
            seen[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(xg, y)
    # tensors a custom autograd function keeps on its ctx (a scratch buffer for the backward)
    nodes, visited = [out.grad_fn], set()
    while nodes:
        node = nodes.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for t in getattr(node, "__dict__", {}).values():
            if isinstance(t, torch.Tensor):
                seen[t.data_ptr()] = t.numel() * t.element_size()
        nodes.extend(f for f, _ in node.next_functions)
    out.backward()
    return sum(seen.values()) + out.numel() * out.element_size()


def compare(
    objectives: dict[str, Call],
    base: Call,
    x: torch.Tensor,
    y: torch.Tensor,
    args: argparse.Namespace,
    stat: Stat,
) -> tuple[float, int, dict[str, tuple[float, float]]]:
    """Times and measures the objectives whose name contains one of ``args.only`` (all
    without it) against ``base`` on ``(x, y)``. Returns the baseline's seconds (``stat`` over
    all its steps), its bytes, and per objective its time and memory ratios to the
    baseline."""
    base_m = memory(base, x, y)
    all_base: list[float] = []
    ratios: dict[str, tuple[float, float]] = {}
    for name, fn in objectives.items():
        if args.only and not any(k in name for k in args.only):
            continue
        times, base_times = measure(fn, base, x, y, args.repeats)
        all_base += base_times
        ratios[name] = (stat(times) / stat(base_times), memory(fn, x, y) / base_m)
    return stat(all_base), base_m, ratios
