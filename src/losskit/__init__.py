"""losskit: training objectives for imperfect labels and teachers, and the arena that
compares them. Every objective registers itself; ``losskit.catalog()`` lists them."""

from losskit import (
    arena,
    classification,
    diagnostics,
    distillation,
    distributed,
    embedding,
    labels,
    mining,
    multilabel,
    procedures,
    regression,
)
from losskit._core import Entry, catalog, checks_enabled, get, set_checks
from losskit.arena import metrics as _arena_metrics  # noqa: F401  (registers the metrics)

__version__ = "0.1.0"

__all__ = [
    "Entry",
    "__version__",
    "arena",
    "catalog",
    "checks_enabled",
    "classification",
    "diagnostics",
    "distillation",
    "distributed",
    "embedding",
    "get",
    "labels",
    "mining",
    "multilabel",
    "procedures",
    "regression",
    "set_checks",
]
