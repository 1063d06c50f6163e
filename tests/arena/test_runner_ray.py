"""The Ray backend of run_trials on a local Ray (started and shut down by the runner)."""

from __future__ import annotations

import time

import pytest

from losskit.arena.runner import run_trials
from losskit.arena.store import ArenaStore
from losskit.arena.trial import Trial, run_trial
from tests.arena.test_runner import FAKES, _trials


def test_ray_backend_tiny_sweep(tmp_path):
    pytest.importorskip("ray")
    trials = _trials(3, epochs=1)
    bad = Trial("digits", "boom", "cross_entropy", epochs=1)
    start = time.perf_counter()
    with ArenaStore(tmp_path / "ray.sqlite") as store:
        summary = run_trials(
            [*trials, bad], store, workers=2, backend="ray", progress=False, **FAKES
        )
        assert summary.ran == 3
        assert [k for k, _ in summary.failed] == [bad.key()]
        assert "scenario exploded" in summary.failed[0][1]
        assert store.completed_keys() == {t.key() for t in trials}
        ref = run_trial(trials[0], **FAKES)
        (row,) = store.results(seed=0)
        assert row["result"]["metrics"] == ref["metrics"]
    print(f"ray sweep of 3 trials: {time.perf_counter() - start:.1f} s")
