"""Forward+backward time and memory of every classification loss, as ratios to
``torch.nn.functional.cross_entropy`` measured in the same process.

    python benchmarks/classification.py [--n 4096] [--classes 10 1000 32000] [--repeats 5]

Time is the median over ``--repeats`` runs after a warm-up. Memory is the peak allocated bytes
on CUDA; on the CPU, where torch has no allocator statistics, it is the bytes of the tensors
autograd saves for the backward pass plus the output (what a loss adds to a training step).
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


def measure(fn: Call, x: torch.Tensor, y: torch.Tensor, repeats: int) -> tuple[float, int]:
    """Median forward+backward seconds and memory bytes (see module docstring)."""
    def step() -> None:
        xg = x.detach().requires_grad_(True)
        fn(xg, y).backward()

    step()
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), _memory(fn, x, y)


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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    losskit.set_checks(False)
    print(f"device={device} torch={torch.__version__} N={args.n}; ratios to F.cross_entropy")
    print(f"{'objective':<28}" + "".join(f"  C={c:<6} time  mem" for c in args.classes))
    rows: dict[str, list[str]] = {}
    for c in args.classes:
        g = torch.Generator().manual_seed(c)
        x = torch.randn(args.n, c, generator=g).to(device)
        y = torch.randint(0, c, (args.n,), generator=g).to(device)
        base_t, base_m = measure(F.cross_entropy, x, y, args.repeats)
        rows.setdefault("F.cross_entropy (abs)", []).append(
            f"  {base_t * 1e3:6.1f}ms {base_m / 2**20:5.1f}MB"
        )
        for name, fn in objectives(c, args.n, device).items():
            t, m = measure(fn, x, y, args.repeats)
            rows.setdefault(name, []).append(f"  {t / base_t:12.2f}x {m / base_m:4.1f}x")
    for name, cells in rows.items():
        print(f"{name:<28}" + "".join(cells))


if __name__ == "__main__":
    main()
