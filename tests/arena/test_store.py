"""The arena store and trial keys: round trips, no duplicates, filters, crash safety."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from losskit.arena import trial as trial_module
from losskit.arena.store import ArenaStore
from losskit.arena.trial import Trial


def _trial(**kw) -> Trial:
    base = dict(dataset="digits", scenario="clean", objective="cross_entropy", epochs=1)
    return Trial(**{**base, **kw})


def _result(acc: float = 0.5, diverged: bool = False) -> dict:
    return {
        "metrics": {"accuracy": acc, "ece": 0.1},
        "noise_rate": 0.0,
        "diverged": diverged,
        "curves": {"train_loss": [1.0, 0.5], "test_accuracy": [0.4, acc]},
        "wall_time": 1.25,
        "versions": {"torch": "x"},
    }


def test_key_is_stable_canonical_and_sensitive():
    a = _trial(params={"gamma": 2, "alpha": 0.5}, lr=0.001)
    b = _trial(params={"alpha": 0.5, "gamma": 2.0}, lr=1e-3)
    assert a.key() == b.key()
    assert len(a.key()) == 64
    assert a.key() != _trial(params={"gamma": 2, "alpha": 0.5}, lr=0.001, seed=1).key()
    assert a.key() != _trial(params={"gamma": 3, "alpha": 0.5}, lr=0.001).key()
    assert Trial.from_dict(a.to_dict()) == a


def test_key_includes_schema_version(monkeypatch):
    t = _trial()
    before = t.key()
    monkeypatch.setattr(trial_module, "SCHEMA_VERSION", trial_module.SCHEMA_VERSION + 1)
    assert t.key() != before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "resnet"),
        ("optimizer", "lbfgs"),
        ("epochs", 0),
        ("seed", -1),
        ("batch_size", 1.5),
        ("lr", 0.0),
        ("weight_decay", -1.0),
        ("params", {"x": object()}),
        ("dataset", ""),
    ],
)
def test_bad_trial_fields_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        _trial(**{field: value})


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown"):
        Trial.from_dict({**_trial().to_dict(), "colour": "red"})


def test_put_round_trip_and_no_duplicates(tmp_path):
    path = tmp_path / "sub" / "arena.sqlite"
    with ArenaStore(path) as store:
        t = _trial()
        assert store.put(t, _result(0.7)) is True
        assert store.put(t, _result(0.1)) is False  # first result stays
        assert store.count() == 1
        assert store.completed_keys() == {t.key()}
        assert t.key() in store
    with ArenaStore(path) as store:  # persisted
        (row,) = store.results()
        assert row["key"] == t.key()
        assert row["config"] == t.to_dict()
        assert row["status"] == "done"
        assert row["result"]["metrics"]["accuracy"] == 0.7
        assert "curves" not in row["result"] and "versions" not in row["result"]
        assert row["curves"]["test_accuracy"][-1] == 0.7
        assert row["wall_time"] == 1.25
        assert row["versions"] == {"torch": "x"}
        (rec,) = store.records()
        assert rec["dataset"] == "digits" and rec["metrics"]["accuracy"] == 0.7


def test_wal_mode_and_primary_key(tmp_path):
    path = tmp_path / "a.sqlite"
    ArenaStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    info = conn.execute("PRAGMA table_info(trials)").fetchall()
    assert {r[1] for r in info} == {
        "key", "config", "status", "result", "curves", "wall_time", "versions", "created"
    }  # fmt: skip
    assert [r[1] for r in info if r[5]] == ["key"]
    conn.close()


def test_filters_and_status(tmp_path):
    with ArenaStore(tmp_path / "a.sqlite") as store:
        store.put(_trial(objective="focal", seed=0), _result(0.6))
        store.put(_trial(objective="focal", seed=1), _result(0.6, diverged=True))
        store.put(_trial(objective="cross_entropy", seed=0), _result(0.8))
        store.put(_trial(dataset="trec6", seed=0), _result(0.9))
        assert len(store.results(objective="focal")) == 2
        assert len(store.results(objective=["focal", "cross_entropy"], dataset="digits")) == 3
        assert len(store.results(seed=0)) == 3
        assert [r["config"]["seed"] for r in store.results(status="diverged")] == [1]
        assert len(store.results(status=["done", "diverged"])) == 4
        with pytest.raises(ValueError, match="filter"):
            store.results(params={})
        with pytest.raises(ValueError, match="status"):
            store.put(_trial(seed=9), _result(), status="running")
        with pytest.raises(ValueError, match="result"):
            store.put(_trial(seed=9), [1, 2])  # type: ignore[arg-type]
        assert store.count() == 4


def test_unserialisable_result_leaves_no_row(tmp_path):
    with ArenaStore(tmp_path / "a.sqlite") as store:
        with pytest.raises(TypeError):
            store.put(_trial(), {"metrics": {"accuracy": object()}})
        assert store.count() == 0


def test_process_killed_between_writes_keeps_whole_rows(tmp_path):
    """A writer killed abruptly (no close, no cleanup) leaves exactly the committed rows,
    each complete and readable."""
    path = tmp_path / "a.sqlite"
    script = textwrap.dedent(
        f"""
        import os, signal
        from losskit.arena.store import ArenaStore
        from losskit.arena.trial import Trial
        store = ArenaStore({str(path)!r})
        for seed in range(3):
            t = Trial("digits", "clean", "cross_entropy", seed=seed)
            store.put(t, {{"metrics": {{"accuracy": 0.5}}, "curves": {{}}, "wall_time": 1.0}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode != 0  # it was killed
    with ArenaStore(path) as store:
        rows = store.results()
        assert store.count() == 3
        assert sorted(r["config"]["seed"] for r in rows) == [0, 1, 2]
        assert all(json.dumps(r["result"]) and r["result"]["metrics"] for r in rows)
