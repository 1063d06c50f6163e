"""Named sweeps of the arena and the objective-spec syntax.

An objective spec is a registered name with optional hyperparameters:
``"comp_sum:tau=1.5"``, ``"ldam:drw=true"``. A suite names datasets, scenarios, objectives,
seeds, epochs and the model per dataset; ``expand`` turns it into trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QUICK_OBJECTIVES = (
    "cross_entropy",
    "focal",
    "generalized_cross_entropy",
    "comp_sum:tau=1.5",
    "ldr_kl",
    "ldam",
    "spherical_z_loss",
    "self_adjusting_dice",
)


@dataclass(frozen=True)
class Suite:
    """A sweep: every dataset x scenario x objective x seed (datasets whose data is missing are
    skipped with a message, except the first, which must be there)."""

    name: str
    datasets: tuple[str, ...]
    scenarios: tuple[str, ...]
    objectives: tuple[str, ...]
    seeds: int = 3
    epochs: int = 30
    models: dict[str, str] = field(default_factory=dict)
    dataset_scenarios: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def model_for(self, dataset: str) -> str:
        return self.models.get(dataset, "mlp")

    def scenarios_for(self, dataset: str) -> tuple[str, ...]:
        return self.dataset_scenarios.get(dataset, self.scenarios)


SUITES: dict[str, Suite] = {
    "quick": Suite(
        name="quick",
        datasets=("digits", "trec6"),
        scenarios=("clean", "symmetric:0.4", "pairflip:0.4", "longtail:50"),
        objectives=QUICK_OBJECTIVES,
        seeds=3,
        epochs=30,
        models={"digits": "mlp", "trec6": "linear"},
    ),
    "standard": Suite(
        name="standard",
        datasets=("cifar10", "trec50", "sms_spam", "digits"),
        scenarios=("clean",),
        objectives=QUICK_OBJECTIVES + ("mean_absolute_error", "aldr_kl", "dice"),
        seeds=3,
        epochs=15,
        models={"cifar10": "cnn", "trec50": "linear", "sms_spam": "linear", "digits": "mlp"},
        dataset_scenarios={
            "cifar10": (
                "clean",
                "cifar10n:aggre",
                "cifar10n:random1",
                "cifar10n:worst",
                "symmetric:0.4",
                "longtail:100",
            ),
            "trec50": ("natural",),
            "sms_spam": ("clean",),
            "digits": ("clean", "symmetric:0.2", "symmetric:0.4", "symmetric:0.6", "longtail:100"),
        },
    ),
}


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_objective(spec: str) -> tuple[str, dict[str, Any]]:
    """``"comp_sum:tau=1.5,foo=x"`` -> ``("comp_sum", {"tau": 1.5, "foo": "x"})``."""
    name, _, rest = spec.partition(":")
    if not name:
        raise ValueError(f"objective spec must start with a registered name, got {spec!r}")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ValueError(f"objective spec {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = _value(val.strip())
    return name, params


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {name!r}")
    return SUITES[name]
