"""Forward+backward time and memory of the multi-positive losses, as ratios to
``torch.nn.functional.cross_entropy`` with soft targets measured in the same process.

    python benchmarks/multilabel.py [--n 1024] [--labels 10000 100000] [--repeats 5]
        [--threads T] [--stat median|min] [--only NAME ...] [--seed 0]

The baseline is softmax cross-entropy over the same scores with the soft target
``y / |P_i|`` (the multi-positive softmax); every row has 1 to 10 positives drawn uniformly,
as in the synthetic extreme track. Each objective is timed interleaved with the baseline (one
baseline step, one objective step, ``--repeats`` times after a warm-up of each), and its
time ratio is the ratio of the two medians (``--stat min``: of the two fastest steps, the
steadier estimate on a loaded CPU). The ``F.cross_entropy (abs)`` row is the same statistic
over all its steps at that label count. Memory is the peak allocated bytes on CUDA; on the
CPU it is the bytes of the tensors autograd saves for the backward pass (custom functions'
ctx attributes included) plus the output.
``--threads`` sets ``torch.set_num_threads``; ``--only`` keeps the objectives whose name
contains one of the given strings.
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


def objectives() -> dict[str, Call]:
    """One call per multi-positive loss, with its paper defaults."""
    from losskit.multilabel.decoupled_softmax import decoupled_softmax_loss
    from losskit.multilabel.soft_top_k import soft_top_k_loss
    from losskit.multilabel.softmax import multi_positive_softmax_loss

    g = torch.Generator().manual_seed(0)
    return {
        "multilabel_softmax (losskit)": multi_positive_softmax_loss,
        "decoupled_softmax": decoupled_softmax_loss,
        "decoupled_softmax sampled": lambda x, y: decoupled_softmax_loss(
            x, y, sample_positives=True, generator=g
        ),
        "soft_top_k k=5 alpha=2": soft_top_k_loss,
        "soft_top_k sampled": lambda x, y: soft_top_k_loss(
            x, y, sample_positives=True, generator=g
        ),
    }


def multilabel_target(n: int, num_labels: int, g: torch.Generator) -> torch.Tensor:
    """0/1 float targets with 1 to 10 positives per row."""
    y = torch.zeros(n, num_labels)
    counts = torch.randint(1, 11, (n,), generator=g)
    cols = torch.randint(0, num_labels, (n, 10), generator=g)
    keep = torch.arange(10).unsqueeze(0) < counts.unsqueeze(1)
    rows = torch.arange(n).unsqueeze(1).expand(n, 10)
    y[rows[keep], cols[keep]] = 1.0
    return y


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--labels", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--only", nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    stat = statistics.median if args.stat == "median" else min
    losskit.set_checks(False)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"N={args.n} repeats={args.repeats} stat={args.stat}; "
        "ratios to F.cross_entropy(scores, y / |P|)\n"
    )
    header = "| objective |" + "".join(f" L={c} time | mem |" for c in args.labels)
    rows: dict[str, list[str]] = {}
    for c in args.labels:
        g = torch.Generator().manual_seed(args.seed + c)
        x = torch.randn(args.n, c, generator=g).to(device)
        y = multilabel_target(args.n, c, g).to(device)
        soft = y / y.sum(dim=1, keepdim=True)

        def base(s: torch.Tensor, _: torch.Tensor, soft: torch.Tensor = soft) -> torch.Tensor:
            return F.cross_entropy(s, soft)

        base_m = _memory(base, x, y)
        all_base: list[float] = []
        cells: dict[str, str] = {}
        for name, fn in objectives().items():
            if args.only and not any(k in name for k in args.only):
                continue
            times, base_times = measure(fn, base, x, y, args.repeats)
            all_base += base_times
            ratio = stat(times) / stat(base_times)
            cells[name] = f" {ratio:.2f}x | {_memory(fn, x, y) / base_m:.1f}x |"
        rows.setdefault("F.cross_entropy (abs)", []).append(
            f" {stat(all_base) * 1e3:.1f} ms | {base_m / 2**20:.0f} MB |"
        )
        for name, cell in cells.items():
            rows.setdefault(name, []).append(cell)
    print(header)
    print("|---|" + "---|---|" * len(args.labels))
    for name, row in rows.items():
        print(f"| {name} |" + "".join(row))


if __name__ == "__main__":
    main()
