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
ctx attributes included) plus the output. The harness is shared with the other benchmarks
in ``benchmarks/paired.py``.
``--threads`` sets ``torch.set_num_threads``; ``--only`` keeps the objectives whose name
contains one of the given strings.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import paired


def objectives() -> dict[str, paired.Call]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paired.add_arguments(parser, n=1024)
    parser.add_argument("--labels", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device, stat = paired.setup(args)
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

        base_s, base_m, ratios = paired.compare(objectives(), base, x, y, args, stat)
        rows.setdefault("F.cross_entropy (abs)", []).append(
            f" {base_s * 1e3:.1f} ms | {base_m / 2**20:.0f} MB |"
        )
        for name, (t, m) in ratios.items():
            rows.setdefault(name, []).append(f" {t:.2f}x | {m:.1f}x |")
    print(header)
    print("|---|" + "---|---|" * len(args.labels))
    for name, row in rows.items():
        print(f"| {name} |" + "".join(row))


if __name__ == "__main__":
    main()
