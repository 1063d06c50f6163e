"""losskit: training objectives for imperfect labels and teachers, and the arena that
compares them. Every objective registers itself; ``losskit.catalog()`` lists them."""

from losskit import classification, diagnostics, labels
from losskit._core import Entry, catalog, checks_enabled, get, set_checks

__version__ = "0.1.0"

__all__ = [
    "Entry",
    "__version__",
    "catalog",
    "checks_enabled",
    "classification",
    "diagnostics",
    "get",
    "labels",
    "set_checks",
]
