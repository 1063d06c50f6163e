"""Recommendations of ``losskit doctor``, resting on the committed arena results.

The evidence table is parsed from the arena's markdown reports (``docs/results/standard.md``,
``noisy.md``, whose rows include the training recipes of :mod:`losskit.arena.recipes`, and
``quick.md``): one section per ``## dataset / scenario (noise X%)`` with a ranked table
``| rank | objective | seeds | accuracy | balanced_accuracy | ... |`` of ``mean ± std`` over
seeds. A scenario's situation is its noise rate (measured, from the heading), its noise
structure (``symmetric``, ``pair`` for ``pairflip``, ``real`` for ``cifar10n``, ``none``) and
its imbalance ratio (``rho`` of ``longtail:rho``, else 1). Scenarios whose imbalance is not
controlled (``natural``, and the clean but skewed ``sms_spam``) are left out of the matching.

The estimated situation goes to the scenario at the smallest distance

    d = |noise - noise_s| / 0.1 + |log10 rho - log10 rho_s| / 0.5 + structure mismatch

(mismatch 1, or 0.5 against ``real`` noise, and 0 when either side has under
:data:`CLEAN_NOISE` noise); ties go to a scenario on the same arena dataset, then to the
earlier file, then to the earlier section. Its
objectives are ranked by their mean (balanced accuracy under a long tail, else accuracy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[3] / "docs" / "results"
RESULT_FILES = ("standard.md", "noisy.md", "quick.md")
CLEAN_NOISE = 0.05
"""Below this noise rate a situation counts as clean (no noise structure)."""
IMBALANCED = 10.0
"""From this imbalance ratio on, a long-tail recipe is recommended."""
UNCONTROLLED = ("natural",)
SKEWED_CLEAN = ("sms_spam",)

_HEADING = re.compile(r"^## (\S+) / (\S+) \(noise ([0-9.]+)%\)\s*$")
_CELL = re.compile(r"^(-?[0-9.]+) ± ([0-9.]+)$")


@dataclass(frozen=True)
class Result:
    """One objective's row: ``metric -> (mean, std)`` in %, over ``seeds`` seeds."""

    objective: str
    seeds: int
    metrics: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Scenario:
    """One section of a results file and the situation it stands for."""

    source: str
    dataset: str
    scenario: str
    noise: float
    structure: str
    imbalance: float
    results: tuple[Result, ...]

    @property
    def metric(self) -> str:
        return "balanced_accuracy" if self.imbalance > 1 else "accuracy"

    @property
    def name(self) -> str:
        return f"{self.dataset} / {self.scenario}"


def situation_of(scenario: str, noise: float) -> tuple[str, float]:
    """``(structure, imbalance ratio)`` of an arena scenario string such as
    ``subset:0.2+symmetric:0.4`` (the measured ``noise`` decides ``none``)."""
    structure, rho = "none", 1.0
    for part in scenario.split("+"):
        kind, _, value = part.partition(":")
        if kind == "symmetric":
            structure = "symmetric"
        elif kind == "pairflip":
            structure = "pair"
        elif kind == "cifar10n":
            structure = "real"
        elif kind == "longtail":
            rho = float(value)
    return ("none" if noise < CLEAN_NOISE else structure), rho


def _cells(line: str) -> list[str]:
    return [c.strip().strip("`") for c in line.strip().strip("|").split("|")]


def parse_results(text: str, source: str) -> list[Scenario]:
    """The scenario sections of one arena markdown report (others are skipped)."""
    out: list[Scenario] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if not m or i + 3 >= len(lines) or not lines[i + 2].startswith("| rank |"):
            continue
        header = _cells(lines[i + 2])
        rows: list[Result] = []
        for row in lines[i + 4 :]:
            if not row.startswith("|"):
                break
            cells = dict(zip(header, _cells(row), strict=True))
            metrics = {}
            for key, cell in cells.items():
                value = _CELL.match(cell)
                if value:
                    metrics[key] = (float(value.group(1)), float(value.group(2)))
            rows.append(Result(cells["objective"], int(cells["seeds"]), metrics))
        dataset, scenario, noise = m.group(1), m.group(2), float(m.group(3)) / 100.0
        structure, rho = situation_of(scenario, noise)
        out.append(Scenario(source, dataset, scenario, noise, structure, rho, tuple(rows)))
    return out


def load_evidence(results_dir: str | Path | None = None) -> list[Scenario]:
    """Scenarios of :data:`RESULT_FILES` in ``results_dir`` (default: the repository's
    ``docs/results``), in file order, controlled ones only. A ``dataset / scenario`` may occur
    in several files (different suites); matching prefers the earlier file."""
    root = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out: list[Scenario] = []
    for name in RESULT_FILES:
        path = root / name
        if not path.is_file():
            continue
        for s in parse_results(path.read_text(), f"docs/results/{name}"):
            if s.scenario not in UNCONTROLLED and s.dataset not in SKEWED_CLEAN:
                out.append(s)
    return out


def distance(noise: float, structure: str, imbalance: float, s: Scenario) -> float:
    """Distance of an estimated situation to scenario ``s`` (module docstring)."""
    d = abs(noise - s.noise) / 0.1
    d += abs(math.log10(max(imbalance, 1.0)) - math.log10(s.imbalance)) / 0.5
    if structure != "none" and s.structure != "none" and structure != s.structure:
        d += 0.5 if s.structure == "real" else 1.0
    return d


def _verdict(row: Result, base: Result | None, metric: str) -> str:
    if base is None or row.objective == base.objective:
        return "reference" if base is not None else "no cross_entropy row"
    (m, s), (mb, sb) = row.metrics[metric], base.metrics[metric]
    gap = m - mb
    if abs(gap) <= max(s, sb):
        return f"tie with cross_entropy ({gap:+.1f}, within the larger std {max(s, sb):.1f})"
    return f"{'beats' if gap > 0 else 'worse than'} cross_entropy by {abs(gap):.1f} points"


def rank_objectives(s: Scenario) -> list[dict]:
    """The objectives of scenario ``s`` by decreasing mean of its metric (ties: name)."""
    metric = s.metric
    rows = sorted(
        (r for r in s.results if metric in r.metrics),
        key=lambda r: (-r.metrics[metric][0], r.objective),
    )
    base = next((r for r in rows if r.objective == "cross_entropy"), None)
    return [
        {
            "rank": i + 1,
            "objective": r.objective,
            "metric": metric,
            "mean": r.metrics[metric][0],
            "std": r.metrics[metric][1],
            "seeds": r.seeds,
            "evidence": f"{s.name} in {s.source}: {r.metrics[metric][0]:.1f} ± "
            f"{r.metrics[metric][1]:.1f} % {metric} over {r.seeds} seeds; "
            + _verdict(r, base, metric),
        }
        for i, r in enumerate(rows)
    ]


RECIPES = (
    ("clean with find_label_issues then retrain", "cleaned", "losskit.labels.find_label_issues"),
    ("co-teaching", "co_teaching", "losskit.procedures.co_teaching"),
    ("nested dropout, then co-teaching", "co_teaching_nested",
     "losskit.procedures.nested_dropout_net + co_teaching(selection='eval')"),
    ("nested dropout", "nested_dropout", "losskit.procedures.nested_dropout_net"),
    ("RCAL (noise and long tail together)", "rcal", "losskit.procedures.rcal"),
    ("pseudo-labels on extra unlabeled data", "semi_supervised",
     "losskit.procedures.semi_supervised_training"),
    ("self-supervised pre-training", "ssp", "losskit.procedures.ssp_training"),
    ("RSS with (out-of-domain) unlabeled data", "rss", "losskit.procedures.rss_training"),
)  # fmt: skip
"""``(title, arena row name, API)`` of the training recipes the doctor may recommend."""


def recipe_fits(key: str, noise: float, imbalance: float) -> tuple[bool, str]:
    """Whether recipe ``key`` suits the situation, and why."""
    noisy = f"estimated noise {noise:.1%}"
    if key == "cleaned":
        return noise >= CLEAN_NOISE, f"{noisy} >= {CLEAN_NOISE:.0%}"
    if key in ("co_teaching", "co_teaching_nested", "nested_dropout"):
        return noise >= 0.2, f"{noisy} >= 20%"
    if key == "rcal":
        why = f"noise {noise:.1%} with imbalance ratio {imbalance:.1f} >= {IMBALANCED:.0f}"
        return noise >= CLEAN_NOISE and imbalance >= IMBALANCED, why
    return imbalance >= IMBALANCED, f"imbalance ratio {imbalance:.1f} >= {IMBALANCED:.0f}"


def _row(key: str, scenario: Scenario) -> dict | None:
    return next((r for r in rank_objectives(scenario) if r["objective"].split(":")[0] == key), None)


def recipe_evidence(
    key: str, best: Scenario | None, evidence: list[Scenario], where: Callable[[Scenario], float]
) -> tuple[str, float | None]:
    """``(evidence text, gap to cross-entropy in points)`` of a recipe: its row in the matched
    scenario ``best``, else in the scenario nearest the situation (``where``: distance) that
    has one, else ``("no arena evidence yet", None)``."""
    rows = [] if best is None else [(best, _row(key, best))]
    rows += sorted(((s, _row(key, s)) for s in evidence if s is not best),
                   key=lambda item: where(item[0]))  # fmt: skip
    for scenario, row in rows:
        if row is None:
            continue
        base = _row("cross_entropy", scenario)
        gap = None if base is None else row["mean"] - base["mean"]
        prefix = "" if scenario is best else "nearest scenario with this recipe: "
        return prefix + row["evidence"], gap
    return "no arena evidence yet", None


def recommend(
    noise: float,
    structure: str,
    imbalance: float,
    evidence: list[Scenario],
    *,
    dataset: str | None = None,
) -> dict:
    """Closest scenario, its ranked objectives, and the recipes that fit the situation.

    Among scenarios at the same distance, one on ``dataset`` (the data's arena name) wins."""

    def key(item: tuple[int, Scenario]) -> tuple[float, bool, int]:
        d = round(distance(noise, structure, imbalance, item[1]), 9)
        return d, item[1].dataset != dataset, item[0]

    ranked = sorted(enumerate(evidence), key=key)
    best = ranked[0][1] if ranked else None
    recipes = []
    for title, name, api in RECIPES:
        fits, why = recipe_fits(name, noise, imbalance)
        if fits:
            text, gap = recipe_evidence(
                name, best, evidence, lambda s: distance(noise, structure, imbalance, s)
            )
            recipes.append({"recipe": title, "api": api, "why": why, "evidence": text,
                            "gap_to_cross_entropy": gap})  # fmt: skip
    # Ranked by the arena gain over cross-entropy; recipes without evidence last.
    recipes.sort(
        key=lambda r: (r["gap_to_cross_entropy"] is None, -(r["gap_to_cross_entropy"] or 0.0))
    )
    return {
        "situation": {"noise_rate": noise, "structure": structure, "imbalance_ratio": imbalance},
        "closest_scenario": None
        if best is None
        else {
            "name": best.name,
            "source": best.source,
            "noise_rate": best.noise,
            "structure": best.structure,
            "imbalance_ratio": best.imbalance,
            "distance": distance(noise, structure, imbalance, best),
        },
        "objectives": [] if best is None else rank_objectives(best),
        "recipes": recipes,
    }
