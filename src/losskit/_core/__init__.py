"""Shared machinery: reduction, validation, precision, registry."""

from losskit._core.checks import checks_enabled, set_checks
from losskit._core.registry import Entry, catalog, get, register

__all__ = ["Entry", "catalog", "checks_enabled", "get", "register", "set_checks"]
