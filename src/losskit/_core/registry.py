"""The registry: every public objective, miner, diagnostic, procedure, scenario and metric.

Each entry carries its paper numbers (``ABSTRACTS.md`` numbering, empty for baselines), the
paper's defaults and a one-line summary; the arena, the CLI and the README read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from losskit._core.papers import PAPER_TITLES

KINDS = ("loss", "miner", "diagnostic", "procedure", "scenario", "metric")


@dataclass(frozen=True)
class Entry:
    """One registered objective (or miner, diagnostic, ...)."""

    name: str
    kind: str
    family: str
    papers: tuple[int, ...]
    summary: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    function: Callable[..., Any] | None = None
    module: type | None = None

    @property
    def titles(self) -> tuple[str, ...]:
        return tuple(PAPER_TITLES[p] for p in self.papers)

    def build(self, **overrides: Any) -> Any:
        """The module class built with the paper defaults, updated by ``overrides``."""
        if self.module is None:
            raise ValueError(f"{self.name!r} has no module class; call entry.function instead")
        return self.module(**{**self.defaults, **overrides})


_ENTRIES: dict[str, Entry] = {}


def register(
    name: str,
    *,
    kind: str,
    family: str,
    papers: tuple[int, ...] = (),
    summary: str,
    defaults: Mapping[str, Any] | None = None,
    function: Callable[..., Any] | None = None,
    module: type | None = None,
) -> Entry:
    """Add an entry; names are unique, kinds and paper numbers are checked."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    unknown = [p for p in papers if p not in PAPER_TITLES]
    if unknown:
        raise ValueError(f"papers must be numbers from ABSTRACTS.md (1-58), got {unknown}")
    if function is None and module is None:
        raise ValueError(f"{name!r} must register a function or a module class")
    if name in _ENTRIES:
        raise ValueError(f"{name!r} is already registered")
    entry = Entry(
        name=name,
        kind=kind,
        family=family,
        papers=tuple(papers),
        summary=summary,
        defaults=MappingProxyType(dict(defaults or {})),
        function=function,
        module=module,
    )
    _ENTRIES[name] = entry
    return entry


def catalog(
    paper: int | None = None, *, kind: str | None = None, family: str | None = None
) -> list[Entry]:
    """Registered entries, sorted by family then name; filter by paper, kind or family."""
    out = [
        e
        for e in _ENTRIES.values()
        if (paper is None or paper in e.papers)
        and (kind is None or e.kind == kind)
        and (family is None or e.family == family)
    ]
    return sorted(out, key=lambda e: (e.family, e.name))


def get(name: str) -> Entry:
    """One entry by name; an unknown name raises ``ValueError`` listing close matches."""
    try:
        return _ENTRIES[name]
    except KeyError:
        import difflib

        near = difflib.get_close_matches(name, list(_ENTRIES), n=3)
        hint = f"; did you mean {near}?" if near else ""
        raise ValueError(f"no registered objective named {name!r}{hint}") from None


def catalog_markdown() -> str:
    """The catalog as a Markdown table (what the README shows)."""
    rows = ["| name | kind | family | papers | summary |", "|---|---|---|---|---|"]
    for e in catalog():
        papers = "; ".join(f"{p}. {PAPER_TITLES[p]}" for p in e.papers) or "baseline"
        rows.append(f"| `{e.name}` | {e.kind} | {e.family} | {papers} | {e.summary} |")
    return "\n".join(rows)
