"""The arena's result store: one SQLite file, one row per completed trial.

Table ``trials(key PRIMARY KEY, config, status, result, curves, wall_time, versions, created)``;
``config``, ``result``, ``curves`` and ``versions`` are JSON text, ``key`` is
:meth:`losskit.arena.trial.Trial.key`. The database runs in WAL mode and every write is one
transaction, so a process killed at any moment leaves each trial either complete or absent.
Only the process that owns the store writes (pool and Ray workers return results to it); rows
are inserted with ``INSERT OR IGNORE``, so a trial is stored at most once and the first result
stays. ``status`` is ``"done"``, or ``"diverged"`` when training stopped on a non-finite loss
(both count as completed: re-running a deterministic trial would diverge again).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from losskit.arena.trial import Trial

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    curves TEXT,
    wall_time REAL,
    versions TEXT,
    created TEXT NOT NULL
)
"""
META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
STATUSES = ("done", "diverged")
_SCALAR_FIELDS = (
    "dataset", "scenario", "objective", "model", "seed", "epochs", "batch_size", "lr",
    "weight_decay", "optimizer",
)  # fmt: skip


class ArenaStore:
    """Completed trials in the SQLite file ``path`` (created with its folder when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._conn:
            self._conn.execute(SCHEMA)
            self._conn.execute(META)

    def set_meta(self, name: str, value: str) -> None:
        """Record a run-level fact (the command line of the last sweep, say)."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def meta(self) -> dict[str, str]:
        """Every run-level fact recorded with :meth:`set_meta`."""
        return dict(self._conn.execute("SELECT name, value FROM meta").fetchall())

    def close(self) -> None:
        """Close the connection (every write is already committed)."""
        self._conn.close()

    def __enter__(self) -> ArenaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self) -> int:
        """Number of stored trials."""
        return int(self._conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def completed_keys(self) -> set[str]:
        """Keys of every stored (completed) trial."""
        return {row[0] for row in self._conn.execute("SELECT key FROM trials")}

    def __contains__(self, key: object) -> bool:
        row = self._conn.execute("SELECT 1 FROM trials WHERE key = ?", (key,)).fetchone()
        return row is not None

    def put(self, trial: Trial, result: dict[str, Any], *, status: str | None = None) -> bool:
        """Store ``result`` of ``trial`` in one transaction; ``False`` if the key was already
        there (the stored row is kept). ``result["curves"]``, ``["wall_time"]`` and
        ``["versions"]`` go to their own columns, the rest to ``result``. ``status`` defaults
        to ``"diverged"`` when ``result["diverged"]`` is true, else ``"done"``."""
        if not isinstance(trial, Trial):
            raise ValueError(f"trial must be a Trial, got {type(trial).__name__}")
        if not isinstance(result, dict):
            raise ValueError(f"result must be a dict, got {type(result).__name__}")
        if status is None:
            status = "diverged" if result.get("diverged") else "done"
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        rest = {k: v for k, v in result.items() if k not in ("curves", "wall_time", "versions")}
        row = (
            trial.key(),
            json.dumps(trial.to_dict(), sort_keys=True),
            status,
            json.dumps(rest, sort_keys=True),
            json.dumps(result.get("curves", {})),
            float(result.get("wall_time", 0.0)),
            json.dumps(result.get("versions", {}), sort_keys=True),
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        with self._conn:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO trials "
                "(key, config, status, result, curves, wall_time, versions, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return cur.rowcount == 1

    def results(self, *, status: str | Iterable[str] | None = None, **config: Any) -> list[dict]:
        """Stored rows, oldest first, as dicts ``{key, config, status, result, curves,
        wall_time, versions, created}`` with the JSON columns decoded.

        Filters: ``status`` and any scalar trial field (``dataset="digits"``,
        ``objective=["focal", "cross_entropy"]``); a list matches any of its values."""
        where, args = [], []
        filters = dict(config)
        if status is not None:
            filters["status"] = status
        for name, value in filters.items():
            if name == "status":
                column = "status"
            elif name in _SCALAR_FIELDS:
                column = f"json_extract(config, '$.{name}')"
            else:
                raise ValueError(
                    f"filter must be 'status' or one of {_SCALAR_FIELDS}, got {name!r}"
                )
            values = [value] if isinstance(value, (str, int, float)) else list(value)
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
        sql = "SELECT key, config, status, result, curves, wall_time, versions, created FROM trials"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [
            {
                "key": key,
                "config": json.loads(cfg),
                "status": st,
                "result": json.loads(res) if res else {},
                "curves": json.loads(curves) if curves else {},
                "wall_time": wall,
                "versions": json.loads(vers) if vers else {},
                "created": created,
            }
            for key, cfg, st, res, curves, wall, vers, created in rows
        ]

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        """Flat rows for leaderboards and plots: the trial fields, then the result fields
        (``metrics``, ``noise_rate``, ``reliability``, ...), plus ``key``, ``status``,
        ``curves`` and ``wall_time``."""
        return [
            {
                **row["config"],
                **row["result"],
                "key": row["key"],
                "status": row["status"],
                "curves": row["curves"],
                "wall_time": row["wall_time"],
            }
            for row in self.results(**filters)
        ]
