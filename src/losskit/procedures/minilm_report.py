"""The report of the MiniLM progressive-distillation demonstration
(:mod:`losskit.procedures.minilm_student`): a Markdown table and verdicts computed from it."""

from __future__ import annotations

import json
import math
from typing import Any


def demo_markdown(r: dict[str, Any]) -> str:
    """The Markdown report of one :func:`~losskit.procedures.minilm_student.run_minilm_demo`
    run (its results dict), with the verdict lines computed from the table."""
    cmd = "losskit distill-demo" + (" --quick" if r["quick"] else "")
    cmd += f" --seed {r['config']['seed']} --threads {r['threads']}"
    lines = [
        "# Progressive distillation (paper 1, ERNIE-Tiny): MiniLM-L6 -> 2-layer student, TREC-6",
        "",
        f"Reproduce: `{cmd} --out-dir docs/results` (or `python -m "
        "losskit.procedures.minilm_student` with the same options). One seed, CPU, "
        f"{r['threads']} torch thread(s). This run: {r['seconds'] / 60:.1f} min wall, "
        f"{r['cpu_seconds'] / 60:.1f} min CPU, load average {r['load_average']:.1f} at the end "
        "(a shared machine); the fine-tuned teacher was "
        + ("read from" if r["teacher_from_cache"] else "trained and written to")
        + " ~/.cache/losskit/distill.",
        "",
        f"Data: task = TREC-6 train ({r['n_task']} questions), test = TREC-6 test (500); "
        f"general = {r['n_general']} unlabelled sentences (TREC train, SMS Spam, GoEmotions "
        f"train), max 32 tokens. Config: `{json.dumps(r['config'])}`.",
        "",
        "Setup: teacher = all-MiniLM-L6-v2 (6 layers, width 384) + mean pooling + linear head, "
        "fine-tuned end to end with CE (GD uses the same encoder before fine-tuning). Student = "
        "2-layer BERT of the same width, initialised from the pretrained teacher's embeddings and "
        "layers 0 and 5, fresh head, no attention dropout; every variant starts from the same "
        "weights. Word embeddings are frozen in teacher and students (CPU budget). L_lat: "
        "layer map (0,0), (1,3), (2,6), identity-initialised projections, hidden-state MSE + "
        "attention KL; L_soft at t = 1; AdamW (weight decay 0.01), a fresh optimizer per stage. "
        "CE only trains with L_hard for as many epochs as TSD. Speed: both models in one "
        "process, PyTorch SDPA attention, TREC-6 test in batches of 64, best of 3 passes.",
        "",
        "| model | TREC-6 test acc | params | params w/o embeddings | CPU sentences/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    base = r["rows"][0]["sentences_per_s"]
    for row in r["rows"]:
        lines.append(
            f"| {row['model']} | {100 * row['accuracy']:.1f}% | {row['params'] / 1e6:.2f}M | "
            f"{row['params_no_embeddings'] / 1e6:.2f}M | {row['sentences_per_s']:.0f} | "
            f"{row['sentences_per_s'] / base:.2f}x |"
        )
    lines += ["", "Stage logs (mean of each loss term in the last epoch, seconds):", ""]
    for label, stages in r["stage_logs"].items():
        parts = []
        for s in stages:
            last = s["epoch_losses"][-1] if s["epoch_losses"] else {}
            terms = ", ".join(f"{k}={v:.4f}" for k, v in last.items())
            parts.append(f"{s['name']} ({s['teacher']}, {s['data']}: {terms}; {s['seconds']:.0f}s)")
        lines.append(f"- {label}: " + " -> ".join(parts))
    return "\n".join(lines + ["", *_verdict(r["rows"])]) + "\n"


def _verdict(rows: list[dict[str, Any]]) -> list[str]:
    """Plain statements from the accuracies: order, gap closed, and the noise level."""
    acc = {row["model"].split(": ", 1)[-1]: 100 * row["accuracy"] for row in rows}
    teacher, ce = acc.pop("MiniLM-L6 fine-tuned"), acc["CE only"]
    se = 100 * max(math.sqrt(a / 100 * (1 - a / 100) / 500) for a in acc.values())
    out = ["## Verdict (computed from the table)", ""]
    for name, a in acc.items():
        if name == "CE only":
            continue
        gap = teacher - ce
        closed = (
            f", closing {100 * (a - ce) / gap:.0f}% of the gap to the teacher"
            if a > ce < teacher
            else ""
        )
        sign = "above" if a > ce else "below" if a < ce else "equal to"
        out.append(f"- {name}: {a:.1f}%, {abs(a - ce):.1f} points {sign} CE only{closed}.")
    chain, tsd = acc["4-stage (GD+GED+TAD+TSD)"], acc["TSD only"]
    out.append(
        f"- 4-stage chain vs TSD only: {chain - tsd:+.1f} points (the paper's ablation expects "
        "the chain to be at least as good)."
    )
    out.append(
        f"- One seed, 500 test questions: a binomial standard error of about {se:.1f} points, "
        f"so differences under {2 * se:.1f} points are not evidence either way."
    )
    return out
