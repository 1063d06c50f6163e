"""Markdown tables and verdicts of the paper-55 demonstration
(:mod:`losskit.procedures.grokking_demo`), from its per-seed summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

from losskit.arena.demos import Verdict

KEYS = ("train", "train_clean", "train_corrupted", "train_corrupted_true", "test")
INVERSION = ("partial inversion", "full inversion")


def ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` of ``scale * values`` (NaN ignored)."""
    v = scale * np.asarray(values, dtype=np.float64)
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v):.{digits}f}"


def compare(a: list[float], b: list[float]) -> str:
    """'yes' where mean(a) exceeds mean(b) by more than the larger std, 'no' where it falls
    short by that much, 'tie' otherwise (the arena's rule)."""
    gap, spread = np.nanmean(a) - np.nanmean(b), max(np.nanstd(a), np.nanstd(b))
    return "yes" if gap > spread else "no" if gap < -spread else "tie"


def _pct(values: list[float]) -> str:
    return f"{100 * np.nanmean(values):.0f}"


def markdown(s: Any, seeds: int, out: dict[str, Any], seconds: float) -> str:
    """The demo's markdown section: setting, phase diagram, accuracy splits, pruning."""
    cells, regs, prune = out["cells"], out["regs"], out["pruning"]
    name = out["name"]
    n_train = int(s.train_fraction * s.p * s.p)
    lines = [
        f"Setting: modular addition mod p = {s.p}: all {s.p * s.p} pairs, {n_train} for "
        f"training (data fraction {s.train_fraction:g}), {s.p * s.p - n_train} for test; a "
        "fraction xi of the training labels redrawn uniformly from Z_p (so xi(1 - 1/p) are "
        f"wrong). Model: the paper's 2-layer MLP, width {s.width}, quadratic activation, no "
        "bias, one-hot inputs, init N(0, (16N)^(-2/3)); MSE on one-hot targets, full-batch "
        f"AdamW, lr 0.01, betas (0.9, 0.98), {s.steps} steps. Seeds: {seeds} (seed = split, "
        "corruption and init); mean ± std over seeds. Phases by the paper's rule (Appendix C: "
        "90 % test and train thresholds, 100(1.05 - xi) % between partial and full "
        f"inversion), majority over seeds. Total time {seconds:.0f} s on the CPU.",
        "",
        f"![phase diagram]({name}_phases.png)",
        "",
        "Phase diagram (cell: majority phase (seeds), mean train / test accuracy %):",
        "",
        "| xi \\ wd | " + " | ".join(f"{wd:g}" for wd in s.weight_decays) + " |",
        "|---|" + "---|" * len(s.weight_decays),
    ]
    for xi in s.corruptions:
        row = []
        for wd in s.weight_decays:
            c = cells[(xi, wd)]
            row.append(
                f"{c['phase']} ({c['phase_count']}/{seeds}), {_pct(c['train'])} / {_pct(c['test'])}"
            )
        lines.append(f"| {xi:g} | " + " | ".join(row) + " |")
    xi = s.focus_xi
    lines += [
        "",
        f"Accuracy splits at xi = {xi:g} (%). 'Corrupted' are the training examples whose "
        "label is wrong, scored against that wrong label (memorised) and against the true "
        "label. The dropout row uses the grid's recipe; BatchNorm (after the activation, as "
        "the paper's Eq. 5) is trained with minibatches like the paper's BatchNorm runs, next "
        "to the same recipe without it. These rows have no weight decay.",
        "",
        "| weight decay | train | uncorrupted train | corrupted (memorised) | corrupted -> "
        "true label | test | mean IPR | phase |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [(f"{wd:g}", cells[(xi, wd)]) for wd in s.weight_decays]
    rows.append((f"0, dropout {s.dropout:g}", regs["dropout"]))
    mb = f"batch {s.bn_batch}, lr {s.bn_lr:g}, {s.bn_steps} steps"
    rows.append((f"0, minibatch ({mb})", regs["minibatch"]))
    rows.append((f"0, minibatch + BatchNorm ({mb})", regs["batch norm"]))
    for label, c in rows:
        accs = " | ".join(ms(c[k]) for k in KEYS)
        lines.append(
            f"| {label} | {accs} | {ms(c['ipr'], 1, 3)} | {c['phase']} ({c['phase_count']}/"
            f"{seeds}) |"
        )
    rho = ", ".join(f"{x:.2f}" for x in regs["batch norm"]["spearman"])
    lines += [
        "",
        f"BatchNorm: Spearman correlation of |BN weight| with the neuron's IPR per seed: {rho}.",
        "",
        f"![IPR histograms]({name}_ipr.png)",
        "",
        f"![regularisers]({name}_regularizers.png) ![training dynamics]({name}_dynamics.png)",
        "",
        f"Pruning the networks trained at xi = {s.prune_xi:g}, wd = {s.prune_wd:g} (phase "
        f"{cells[(s.prune_xi, s.prune_wd)]['phase']}; neurons zeroed in "
        "IPR order on a copy, no retraining; accuracies %, mean over seeds):",
        "",
        f"![pruning]({name}_pruning.png)",
        "",
        "| fraction pruned | lowest IPR first: corrupted / uncorrupted / test | highest IPR "
        "first: corrupted / uncorrupted / test |",
        "|---|---|---|",
    ]
    parts = ("train_corrupted", "train_clean", "test")
    for j, f in enumerate(prune["fractions"]):
        if j % 2 and j != prune["stop"]:
            continue
        cols = [
            " / ".join(_pct([c[j] for c in prune[d][k]]) for k in parts) for d in ("low", "high")
        ]
        mark = " (stop)" if j == prune["stop"] else ""
        lines.append(f"| {f:.2f}{mark} | {cols[0]} | {cols[1]} |")
    lines += [
        "",
        "Verdict rules: a comparison is 'yes' where the first mean beats the second by more "
        "than the larger std over seeds, 'no' where it loses by that much, 'tie' otherwise. "
        "The pruning stop is the largest fraction at which the accuracy on the given training "
        "labels stays >= 1 - xi(1 - 1/p), the share of true labels (the paper: training "
        "accuracy falls to about 100(1 - xi) %); it uses the given labels only.",
    ]
    return "\n".join(lines)


def _phase_verdicts(s: Any, cells: dict) -> list[Verdict]:
    mean = {k: {m: float(np.nanmean(v[m])) for m in KEYS} for k, v in cells.items()}
    both = [k for k in cells if mean[k]["test"] >= 0.9 and mean[k]["train_corrupted"] >= 0.9]
    coex = both or [k for k, v in cells.items() if v["phase"] == "coexistence"]
    coex_text = ", ".join(
        f"xi={xi:g}, wd={wd:g} (corrupted {100 * mean[(xi, wd)]['train_corrupted']:.0f} %, "
        f"test {100 * mean[(xi, wd)]['test']:.0f} %)"
        for xi, wd in coex
    )
    found = {
        xi: [wd for wd in s.weight_decays if cells[(xi, wd)]["phase"] in INVERSION]
        for xi in s.corruptions
    }
    hits = [xi for xi, wds in found.items() if wds]
    detail = []
    for xi in hits:
        for wd in found[xi]:
            m = mean[(xi, wd)]
            detail.append(
                f"xi={xi:g}, wd={wd:g}: {cells[(xi, wd)]['phase']}, train {100 * m['train']:.1f} "
                f"% (1 - xi(1 - 1/p) = {100 * (1 - xi * (1 - 1 / s.p)):.1f} %), test "
                f"{100 * m['test']:.1f} %"
            )
    xi = s.focus_xi
    alive = [wd for wd in s.weight_decays if cells[(xi, wd)]["phase"] != "forgetting"]
    top = max(alive, default=0.0)
    ipr_top, ipr_0 = cells[(xi, top)]["ipr"], cells[(xi, 0.0)]["ipr"]
    return [
        Verdict(
            "A network can memorise the corrupted labels and generalise at the same time",
            "yes" if both else "partly" if coex else "no",
            "rule: 'yes' if some cell has mean test and corrupted-label accuracy >= 90 %, "
            "'partly' if only the paper's coexistence phase (train and test >= 90 %) occurs. "
            + ("Cells: " + coex_text if coex else "No such cell."),
        ),
        Verdict(
            "Weight decay makes the network ignore the corrupted labels (inversion: test >= "
            "90 %, train accuracy down towards 100(1 - xi) %)",
            "yes" if len(hits) == len(s.corruptions) else "partly" if hits else "no",
            f"inversion at {len(hits)} of {len(s.corruptions)} corruption levels. "
            + ("; ".join(detail) or "No inversion cell."),
        ),
        Verdict(
            f"Weight decay shifts the per-neuron IPR towards periodic (high) values (xi={xi:g})",
            compare(ipr_top, ipr_0) if top > 0 else "tie",
            f"mean IPR at wd={top:g} (largest weight decay not in the forgetting phase) "
            f"{ms(ipr_top, 1, 3)} vs wd=0 {ms(ipr_0, 1, 3)}.",
        ),
    ]


def _pruning_verdicts(prune: dict) -> list[Verdict]:
    i, low, high = prune["stop"], prune["low"], prune["high"]

    def at(curves: dict, key: str, j: int) -> list[float]:
        return [c[j] for c in curves[key]]

    corr_0, corr_i = at(low, "train_corrupted", 0), at(low, "train_corrupted", i)
    test_0, test_i = at(low, "test", 0), at(low, "test", i)
    frac = f"{100 * prune['fractions'][i]:.0f} %"
    drop_corr = np.nanmean(corr_0) - np.nanmean(corr_i)
    drop_test = np.nanmean(test_0) - np.nanmean(test_i)
    forgets = compare(corr_0, corr_i) == "yes"
    if forgets and compare(test_0, test_i) != "yes":
        verdict = "yes"
    else:
        verdict = "partly" if forgets and drop_test < drop_corr else "no"
    return [
        Verdict(
            "Pruning the lowest-IPR neurons lowers the accuracy on corrupted labels while test "
            "accuracy stays high",
            verdict,
            f"pruning {frac} of the neurons: corrupted-label accuracy {ms(corr_0)} -> "
            f"{ms(corr_i)} %, test {ms(test_0)} -> {ms(test_i)} %. Rule: 'yes' if the "
            "corrupted-label accuracy falls and test does not (beyond the std), 'partly' if "
            f"test falls by less ({100 * drop_test:.1f} vs {100 * drop_corr:.1f} points).",
        ),
        Verdict(
            "High-IPR neurons generalise and low-IPR neurons memorise: pruning as many "
            "highest-IPR neurons destroys test accuracy and keeps more memorised labels",
            "yes"
            if compare(test_i, at(high, "test", i)) == "yes"
            and compare(at(high, "train_corrupted", i), corr_i) == "yes"
            else "no",
            f"after pruning {frac}: test {ms(at(high, 'test', i))} % (highest first) vs "
            f"{ms(test_i)} % (lowest first); corrupted-label accuracy "
            f"{ms(at(high, 'train_corrupted', i))} vs {ms(corr_i)} %.",
        ),
    ]


def verdicts(s: Any, out: dict[str, Any]) -> list[Verdict]:
    """The paper's claims checked on the demo's numbers."""
    cells, regs, two = out["cells"], out["regs"], out["two_stage"]
    xi = s.focus_xi
    found = _phase_verdicts(s, cells) + _pruning_verdicts(out["pruning"])
    for name, base in (("dropout", cells[(xi, 0.0)]), ("batch norm", regs["minibatch"])):
        r = regs[name]
        better = compare(r["test"], base["test"])
        found.append(
            Verdict(
                f"{name.capitalize()} without weight decay moves the network from memorisation "
                f"towards inversion (xi={xi:g})",
                "yes" if r["phase"] in INVERSION else "partly" if better == "yes" else "no",
                f"phase {r['phase']} ({r['phase_count']}/{len(r['test'])} seeds), without "
                f"{base['phase']}; test {ms(r['test'])} vs {ms(base['test'])} % without; "
                "corrupted-label accuracy "
                f"{ms(r['train_corrupted'])} vs {ms(base['train_corrupted'])} %.",
            )
        )
    rho = regs["batch norm"]["spearman"]
    found.append(
        Verdict(
            "BatchNorm de-amplifies memorising neurons: |BN weight| grows with the neuron's IPR",
            "yes" if min(rho) > 0 else "partly" if np.mean(rho) > 0 else "no",
            "Spearman correlation of |gamma_k| with IPR_k per seed: "
            + ", ".join(f"{x:.2f}" for x in rho),
        )
    )
    found.append(
        Verdict(
            "With weight decay, training has two stages: train accuracy first reaches ~100 %, "
            "then drops as the corrupted labels are unlearned",
            "yes" if two and all(two.values()) else "partly" if any(two.values()) else "no",
            f"runs at xi={xi:g} ending in an inversion phase whose train accuracy peaked at "
            f">= 90 % and ended >= 10 points lower: {sum(two.values())} of {len(two)}"
            + ("" if two else " (no run ended in an inversion phase)")
            + ".",
        )
    )
    return found
