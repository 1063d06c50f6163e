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
of the tensors autograd saves for the backward pass (custom functions' ctx attributes
included) plus the output (what a loss adds to a training step). The harness is shared with
the other benchmarks in ``benchmarks/paired.py``. ``--threads`` sets ``torch.set_num_threads``
(default: torch's choice); ``--flush-denormal`` sets ``torch.set_flush_denormal(True)``: on x86
CPUs arithmetic on subnormal floats is many times slower, and losses that scale the logits
(LDAM's ``s = 30``) meet them on these random inputs where ``F.cross_entropy`` on the unscaled
logits does not.
``--only`` keeps the objectives whose name contains one of the given strings.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import losskit
import paired


def _counts(c: int, device: torch.device) -> torch.Tensor:
    return torch.clamp((1000 * 0.98 ** torch.arange(c, dtype=torch.float32)).long(), min=1).to(
        device
    )


def objectives(c: int, n: int, device: torch.device) -> dict[str, paired.Call]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired.add_arguments(parser, n=4096)
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 1000, 32000])
    parser.add_argument("--flush-denormal", action="store_true")
    args = parser.parse_args()
    device, stat = paired.setup(args)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("--flush-denormal: not supported on this CPU, ignored")
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
        fns = objectives(c, args.n, device)
        base_s, base_m, ratios = paired.compare(fns, F.cross_entropy, x, y, args, stat)
        rows.setdefault("F.cross_entropy (abs)", []).append(
            f"  {base_s * 1e3:6.1f}ms {base_m / 2**20:5.1f}MB"
        )
        for name, (t, m) in ratios.items():
            rows.setdefault(name, []).append(f"  {t:12.2f}x {m:4.1f}x")
    for name, row in rows.items():
        print(f"{name:<28}" + "".join(row))


if __name__ == "__main__":
    main()
