"""Forward+backward time and memory of every classification loss, as ratios to
``torch.nn.functional.cross_entropy`` measured in the same process.

    python benchmarks/classification.py [--n 4096] [--classes 10 1000 32000] [--repeats 5]
        [--threads T] [--flush-denormal] [--stat median|min] [--only NAME ...]

Each objective is timed interleaved with ``F.cross_entropy`` on the same inputs (one baseline
step, one objective step, ``--repeats`` times after a warm-up of each), so that load from other
processes hits both sides alike; its time ratio is the ratio of the two medians (``--stat
min``: of the two fastest steps, the steadier estimate on a loaded CPU or when the allocator
alternates between reusing and page-faulting fresh ``[N, C]`` buffers). The ``F.cross_entropy
(abs)`` row is the same statistic over all its steps at that class count. Memory is the peak
allocated bytes on CUDA; on the CPU, where torch has no allocator statistics, it is the bytes
of the tensors autograd saves for the backward pass plus the output (what a loss adds to a
training step). ``--threads`` sets ``torch.set_num_threads`` (default: torch's choice);
``--flush-denormal`` sets ``torch.set_flush_denormal(True)``: on x86 CPUs arithmetic on
subnormal floats is many times slower, and losses that scale the logits (LDAM's ``s = 30``)
meet them on these random inputs where ``F.cross_entropy`` on the unscaled logits does not.
``--only`` keeps the objectives whose name contains one of the given strings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import losskit

Call = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _counts(c: int, device: torch.device) -> torch.Tensor:
    return torch.clamp((1000 * 0.98 ** torch.arange(c, dtype=torch.float32)).long(), min=1).to(
        device
    )


def objectives(c: int, n: int, device: torch.device) -> dict[str, Call]:
    """One call per registered multiclass loss, with the context a trainer would give it."""
    from losskit.classification import (
        ALDRKLLoss,
        comp_sum_loss,
        dice_loss,
        ens_loss,
        focal_loss,
        generalized_cross_entropy,
        ldam_loss,
        ldr_kl_loss,
        mean_absolute_error_loss,
        self_adjusting_dice_loss,
        spherical_z_loss,
    )

    counts = _counts(c, device)
    aldr = ALDRKLLoss(num_samples=n).to(device)
    index = torch.arange(n, device=device)
    return {
        "cross_entropy (losskit)": losskit.classification.cross_entropy,
        "focal": lambda x, y: focal_loss(x, y, gamma=2.0),
        "comp_sum tau=0.5": lambda x, y: comp_sum_loss(x, y, tau=0.5),
        "generalized_cross_entropy": generalized_cross_entropy,
        "mean_absolute_error": mean_absolute_error_loss,
        "spherical_z_loss": spherical_z_loss,
        "ldr_kl": lambda x, y: ldr_kl_loss(x, y, lam=10.0, margin=0.1),
        "aldr_kl": lambda x, y: aldr(x, y, index),
        "ldam": lambda x, y: ldam_loss(x, y, class_counts=counts),
        "dice": dice_loss,
        "self_adjusting_dice": self_adjusting_dice_loss,
        "ensloss (binary, N scores)": lambda x, y: ens_loss(x[:, 0], y % 2),
    }


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


def _memory(fn: Call, x: torch.Tensor, y: torch.Tensor) -> int:
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
    out.backward()
    return sum(seen.values()) + out.numel() * out.element_size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 1000, 32000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--flush-denormal", action="store_true")
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("--flush-denormal: not supported on this CPU, ignored")
    device = torch.device(args.device)
    stat = statistics.median if args.stat == "median" else min
    losskit.set_checks(False)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"N={args.n} repeats={args.repeats} stat={args.stat} "
        f"flush_denormal={args.flush_denormal}; ratios to F.cross_entropy"
    )
    print(f"{'objective':<28}" + "".join(f"  C={c:<6} time  mem" for c in args.classes))
    rows: dict[str, list[str]] = {}
    for c in args.classes:
        g = torch.Generator().manual_seed(c)
        x = torch.randn(args.n, c, generator=g).to(device)
        y = torch.randint(0, c, (args.n,), generator=g).to(device)
        base_m = _memory(F.cross_entropy, x, y)
        all_base: list[float] = []
        cells: dict[str, str] = {}
        for name, fn in objectives(c, args.n, device).items():
            if args.only and not any(k in name for k in args.only):
                continue
            times, base_times = measure(fn, F.cross_entropy, x, y, args.repeats)
            all_base += base_times
            ratio = stat(times) / stat(base_times)
            cells[name] = f"  {ratio:12.2f}x {_memory(fn, x, y) / base_m:4.1f}x"
        rows.setdefault("F.cross_entropy (abs)", []).append(
            f"  {stat(all_base) * 1e3:6.1f}ms {base_m / 2**20:5.1f}MB"
        )
        for name, cell in cells.items():
            rows.setdefault(name, []).append(cell)
    for name, row in rows.items():
        print(f"{name:<28}" + "".join(row))


if __name__ == "__main__":
    main()
