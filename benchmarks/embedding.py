"""Forward+backward time and peak memory of InfoNCE and SupCon, losskit's full and chunked
paths, as ratios to pytorch-metric-learning (PML) computing the same quantity in the same run.

    python benchmarks/embedding.py [--batches 256 512 ... 8192] [--dim 128] [--repeats 20]
        [--budget 8] [--threads T] [--stat median|min] [--ntxent-max 512]
        [--device cpu|cuda] [--losses infonce supcon] [--skip-memory]
        [--out docs/results/embedding_speed.md]

Needs ``pip install pytorch-metric-learning`` (a benchmark-only dependency).

The computations, float32, ``D = --dim``, random Gaussian embeddings, cosine similarities:

- InfoNCE: ``N`` queries against ``N`` keys, ``keys[i]`` the positive of ``query[i]``,
  ``T = 0.07``. losskit ``info_nce_loss`` (full ``[N, N]`` path) and ``chunked_info_nce_loss``;
  PML ``NTXentLoss(0.07)(q, arange(N), ref_emb=k, ref_labels=arange(N))`` and, the same value
  computed another way, PML ``SupConLoss(0.07)`` on the same call (one positive per anchor).
  NTXentLoss builds a ``[positive pairs, negative pairs] = [N, N (N - 1)]`` matrix, cubic in
  ``N`` (over 2 GiB and about 10 s per step at ``N = 512`` on a 2-core CPU; about 8 times that
  at 1024), so it runs only up to ``--ntxent-max``.
- SupCon (L_out): ``N`` embeddings, labels ``randperm(N) % 100`` (every class has 2 or more
  members), the batch as its own candidates, ``T = 0.1``. losskit ``supcon_loss`` and
  ``chunked_supcon_loss``; PML ``SupConLoss(0.1)``. PML's ``NTXentLoss`` is not the same
  quantity with several positives per anchor (it drops the other positives from each
  denominator), so it is not compared here.

Before timing, every method's value and gradient are compared with losskit's full path and the
largest absolute differences printed; that step is also every method's warm-up. Time: the
methods of one loss and batch are timed in interleaved rounds on the same inputs, one
forward+backward of each PML baseline then of each losskit path per round (the paired scheme
of ``benchmarks/paired.py``, which times one method against one baseline, stretched over all
the methods so that a slow baseline runs once per round rather than once per pair), so that
load from other processes hits all of them alike. A time ratio is the ratio of the
medians over the rounds (``--stat min``: of the fastest steps, steadier on a loaded CPU).
The number of rounds is what ``--budget`` seconds allow at the speed of the warm-up step,
at least 2 and at most ``--repeats``: many rounds for the small batches, 2 for the large ones
and wherever NTXentLoss is slow.

Peak memory on the CPU, where torch keeps no allocator statistics: each (method, N) runs once
in a fresh subprocess with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``, so that every buffer of
64 KiB or more is its own mapping, returned to the system when freed, and the resident set
follows the live tensors. After a warm-up step at ``N = 64`` (thread pools, BLAS buffers), the
subprocess resets the kernel's high-water mark (``/proc/self/clear_refs``), runs one
forward+backward and reports ``VmHWM - VmRSS`` before the step: the peak bytes the step adds
above its inputs (the input gradient included). On CUDA: ``torch.cuda.max_memory_allocated``
above the allocated bytes before the step, in process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import paired
from losskit.embedding.chunked import chunked_info_nce_loss, chunked_supcon_loss
from losskit.embedding.info_nce import info_nce_loss
from losskit.embedding.supcon import supcon_loss

LOSSES = {"infonce": ("InfoNCE", 0.07), "supcon": ("SupCon", 0.1)}
FULL, CHUNKED = "losskit full", "losskit chunked"
NTXENT, PML_SUPCON = "PML NTXentLoss", "PML SupConLoss"
CLASSES = 100


def inputs(loss: str, n: int, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``: queries stacked on keys (InfoNCE, ``[2N, D]``) or the batch (SupCon, ``[N, D]``);
    ``y``: positive indices or labels."""
    g = torch.Generator().manual_seed(n)
    if loss == "infonce":
        return torch.randn(2 * n, d, generator=g).to(device), torch.arange(n).to(device)
    x = torch.randn(n, d, generator=g)
    return x.to(device), (torch.randperm(n, generator=g) % CLASSES).to(device)


def methods(loss: str, n: int, ntxent_max: int) -> dict[str, paired.Call]:
    """Each method as ``fn(x, y)``; the PML ones under their class names."""
    from pytorch_metric_learning import losses

    t = LOSSES[loss][1]
    if loss == "supcon":
        pml = losses.SupConLoss(temperature=t)
        return {
            PML_SUPCON: lambda x, y: pml(x, y),
            FULL: lambda x, y: supcon_loss(x, y, temperature=t),
            CHUNKED: lambda x, y: chunked_supcon_loss(x, y, temperature=t),
        }
    # PML drops the diagonal when ref_labels *is* labels: pass a copy
    out: dict[str, paired.Call] = {}
    if n <= ntxent_max:
        ntxent = losses.NTXentLoss(temperature=t)
        out[NTXENT] = lambda x, y: ntxent(x[:n], y, ref_emb=x[n:], ref_labels=y.clone())
    sup = losses.SupConLoss(temperature=t)
    out[PML_SUPCON] = lambda x, y: sup(x[:n], y, ref_emb=x[n:], ref_labels=y.clone())
    out[FULL] = lambda x, y: info_nce_loss(x[:n], x[n:], temperature=t)
    out[CHUNKED] = lambda x, y: chunked_info_nce_loss(x[:n], x[n:], temperature=t)
    return out


def value_and_grad(fn: paired.Call, x: torch.Tensor, y: torch.Tensor):
    xg = x.detach().requires_grad_(True)
    out = fn(xg, y)
    out.backward()
    return out.detach(), xg.grad


def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        text = f.read()
    return {
        k: int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")
    }


def peak_here(loss: str, method: str, n: int, d: int, device: torch.device) -> int:
    """Bytes one forward+backward adds at its peak (module docstring), in this process."""
    x, y = inputs(loss, 64, d, device)
    value_and_grad(methods(loss, 64, 64)[method], x, y)
    x, y = inputs(loss, n, d, device)
    fn = methods(loss, n, n)[method]
    xg = x.detach().requires_grad_(True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(xg, y).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status()["VmRSS"]
    fn(xg, y).backward()
    return _status()["VmHWM"] - before


def peak(loss: str, method: str, n: int, args: argparse.Namespace) -> int:
    """:func:`peak_here` in a fresh subprocess (CPU) or in this process (CUDA)."""
    if args.device.startswith("cuda"):
        return peak_here(loss, method, n, args.dim, torch.device(args.device))
    cmd = [sys.executable, __file__, "--peak", loss, method, str(n), "--dim", str(args.dim)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak"])


def rounds(seconds_per_round: float, args: argparse.Namespace) -> int:
    """As many rounds as ``--budget`` seconds allow, between 2 and ``--repeats``."""
    return max(2, min(args.repeats, int(args.budget / max(seconds_per_round, 1e-9))))


def step(fn: paired.Call, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one forward+backward of ``fn`` on a fresh leaf copy of ``x``."""
    xg = x.detach().requires_grad_(True)
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(xg, y).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved(
    fns: dict[str, paired.Call], x: torch.Tensor, y: torch.Tensor, n_rounds: int
) -> dict[str, list[float]]:
    """``n_rounds`` rounds of one step of every method in turn, baselines first (the paired
    scheme of ``benchmarks/paired.py`` over more than two methods)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n_rounds):
        for name, fn in fns.items():
            times[name].append(step(fn, x, y))
    return times


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.+)", f.read())
        cpu = f"{names[0]} ({len(names)} logical cores)" if names else cpu
    except OSError:
        pass
    return f"{cpu}, {platform.system()} {platform.release()}"


def run_loss(loss: str, args: argparse.Namespace, stat: Callable, device: torch.device, log):
    """Rows of the ratio table and the peak bytes per (method, N)."""
    rows, peaks = [], {}
    for n in args.batches:
        x, y = inputs(loss, n, args.dim, device)
        fns = methods(loss, n, args.ntxent_max)
        ref_v, ref_g = value_and_grad(fns[FULL], x, y)
        diffs, t0 = {}, time.perf_counter()
        for name, fn in fns.items():
            v, g = value_and_grad(fn, x, y)
            diffs[name] = ((v - ref_v).abs().item(), (g - ref_g).abs().max().item())
            log(
                f"  {LOSSES[loss][0]} N={n} {name}: value {v.item():.6f}, max |d value| "
                f"{diffs[name][0]:.2e}, max |d grad| {diffs[name][1]:.2e} (vs {FULL})"
            )
        r = rounds(time.perf_counter() - t0, args)
        for name in fns:
            peaks[name, n] = None if args.skip_memory else peak(loss, name, n, args)
        times = interleaved(fns, x, y, r)  # the value check above was the warm-up step
        for base in (b for b in (NTXENT, PML_SUPCON) if b in fns):
            ratios = {m: stat(times[m]) / stat(times[base]) for m in (FULL, CHUNKED)}
            rows.append((n, base, stat(times[base]), r, ratios, diffs))
            log(
                f"  {LOSSES[loss][0]} N={n} vs {base}: {stat(times[base]) * 1e3:.1f} ms, "
                + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items())
            )
    return rows, peaks


def fmt_mib(b: int | None) -> str:
    return "—" if b is None else f"{b / 2**20:.1f}"


def ratio(a: int | None, b: int | None) -> str:
    return "—" if a is None or b is None or b <= 0 else f"{a / b:.3f}x"


def report(args, results, started, load_before, load_after, elapsed) -> str:
    from pytorch_metric_learning import __version__ as pml_version

    lines = [
        "# Embedding losses: speed and memory against pytorch-metric-learning",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`",
        "",
        f"Machine: {machine()}; device {args.device}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; pytorch-metric-learning {pml_version}; "
        f"python {platform.python_version()}. Run {started}, {elapsed:.0f} s wall.",
        "",
        f"The machine is shared with other jobs (load average {load_before} before, "
        f"{load_after} after, on {os.cpu_count()} cores): the timings are noisy. The methods "
        "are timed in interleaved rounds on the same inputs (the paired scheme of "
        "`benchmarks/paired.py`) so load hits all of them alike; statistic: "
        f"{args.stat} over the rounds. Memory: peak resident bytes a forward+backward adds "
        "above its inputs, one fresh subprocess per cell with every buffer of 64 KiB or more "
        "mapped on its own (details in the docstring of `benchmarks/embedding.py`); it is "
        "not affected by the load.",
        "",
        "Ratios are losskit / PML: below 1 means losskit is faster or smaller. "
        "`max |Δ|`: largest absolute difference of the value (the mean loss) and of the "
        "input gradient from losskit's full path. The chunked path runs with its default "
        "`chunk_size=None` (blocks of at most 2**21 similarities). For InfoNCE, PML's "
        "`NTXentLoss` builds an `[N, N (N - 1)]` matrix (cubic in N) and runs only up to "
        f"N = {args.ntxent_max} (`--ntxent-max`; '—' marks the cells not run); PML's "
        "`SupConLoss` on the same query/key call, one positive per anchor, computes the same "
        "value with quadratic memory and is the baseline at every N.",
    ]
    for loss, (rows, peaks) in results.items():
        title, t = LOSSES[loss]
        desc = (
            "N queries against N keys, one positive key each"
            if loss == "infonce"
            else f"N embeddings, labels randperm(N) % {CLASSES}, the batch as candidates"
        )
        lines += [
            "",
            f"## {title} ({desc}; D={args.dim}, T={t}, float32)",
            "",
            "| N | PML baseline | rounds | PML time (ms) | PML peak (MiB) | full: time | "
            "full: peak | chunked: time | chunked: peak | PML vs full max \\|Δ\\| value / grad "
            "| chunked vs full max \\|Δ\\| value / grad |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n, base, base_s, r, ratios, diffs in rows:
            pb = peaks[base, n]
            lines.append(
                f"| {n} | {base} | {r} | {base_s * 1e3:.1f} | {fmt_mib(pb)} | "
                f"{ratios[FULL]:.3f}x | {ratio(peaks[FULL, n], pb)} | "
                f"{ratios[CHUNKED]:.3f}x | {ratio(peaks[CHUNKED, n], pb)} | "
                f"{diffs[base][0]:.1e} / {diffs[base][1]:.1e} | "
                f"{diffs[CHUNKED][0]:.1e} / {diffs[CHUNKED][1]:.1e} |"
            )
        names = sorted({m for m, _ in peaks}, key=[FULL, CHUNKED, NTXENT, PML_SUPCON].index)
        lines += [
            "",
            f"Peak memory of one {title} forward+backward (MiB above the inputs):",
            "",
            "| method |" + "".join(f" N={n} |" for n in args.batches),
            "|---|" + "---|" * len(args.batches),
        ]
        for m in names:
            lines.append(
                f"| {m} |" + "".join(f" {fmt_mib(peaks.get((m, n)))} |" for n in args.batches)
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192]
    )
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="most rounds")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds of rounds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ntxent-max", type=int, default=512)
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument("--peak", nargs=3, metavar=("LOSS", "METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device, stat = paired.setup(args)
    if args.peak:
        loss, method, n = args.peak
        print(json.dumps({"peak": peak_here(loss, method, int(n), args.dim, device)}))
        return
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    t0 = time.perf_counter()
    results = {}
    for loss in args.losses:
        print(f"{LOSSES[loss][0]}:", flush=True)
        results[loss] = run_loss(loss, args, stat, device, lambda s: print(s, flush=True))
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(args, results, started, load_before, load_after, time.perf_counter() - t0)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
