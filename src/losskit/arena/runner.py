"""Run a list of trials into an :class:`~losskit.arena.store.ArenaStore`.

:func:`run_trials` drops duplicate trials and those already in the store, then runs the rest
one after another (``workers=1``), in a spawned process pool (``workers > 1``) or as Ray tasks
(``backend="ray"``). Workers only compute: every result comes back to this process, which writes
it in one transaction as soon as it arrives, so an interrupted sweep keeps what it finished and
the next run skips it. A trial that raises is reported in :attr:`RunSummary.failed` and leaves
no row. Pool and Ray workers run torch on one thread each.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from losskit.arena.store import ArenaStore
from losskit.arena.trial import Trial, load_cached, run_trial

BACKENDS = ("local", "ray")


@dataclass
class RunSummary:
    """What one :func:`run_trials` call did."""

    total: int = 0  # distinct trials asked for
    skipped: int = 0  # already in the store
    ran: int = 0  # completed and stored now
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, error)
    wall_time: float = 0.0


def _init_worker() -> None:
    """Pool / Ray worker set-up: one torch thread, no outside contact."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    torch.set_num_threads(1)


def _worker(trial: Trial, options: dict[str, Any]) -> dict[str, Any]:
    """Run one trial in a worker process."""
    _init_worker()
    return run_trial(trial, **options)


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class _Progress:
    """A tqdm bar ``done/total`` with ETA and the ``running`` and ``failed`` counts (on
    stderr), or nothing."""

    def __init__(self, total: int, enabled: bool, skipped: int) -> None:
        self.bar = None
        if enabled and skipped:
            print(f"skipping {skipped} completed trial(s) already in the store", file=sys.stderr)
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True)

    def update(self, done: int, running: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(running=running, failed=failed, refresh=False)
            self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_trials(
    trials: Iterable[Trial],
    store: ArenaStore,
    *,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    **options: Any,
) -> RunSummary:
    """Run every trial of ``trials`` not yet in ``store`` and store each result on arrival.

    ``workers``: parallel trials (1 = sequential in this process). ``backend``: ``"local"``
    (process pool with the spawn start method) or ``"ray"`` (Ray tasks on the cluster at
    ``ray_address``, or on a local Ray with ``num_cpus=workers`` started and shut down here).
    ``options`` go to :func:`~losskit.arena.trial.run_trial` (``data_dir``, ``dataset_loader``,
    ``scenario_fn``, ``groups_fn``, ``long_tail``); with workers they must pickle.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    start = time.perf_counter()
    unique: dict[str, Trial] = {}
    for trial in trials:
        if not isinstance(trial, Trial):
            raise ValueError(f"trials must hold Trial objects, got {type(trial).__name__}")
        unique.setdefault(trial.key(), trial)
    done = store.completed_keys()
    todo = [t for k, t in unique.items() if k not in done]
    summary = RunSummary(total=len(unique), skipped=len(unique) - len(todo))
    if backend == "local" or ray_address is None:
        _warm_up(todo, options, progress)
    bar = _Progress(len(todo), progress, summary.skipped)
    try:
        if backend == "ray":
            events = _run_ray(todo, workers, ray_address, options)
        elif workers == 1:
            events = _run_sequential(todo, options)
        else:
            events = _run_pool(todo, workers, options)
        for trial, result, error, running in events:
            if error is None:
                store.put(trial, result)
                summary.ran += 1
            else:
                summary.failed.append((trial.key(), error))
            bar.update(1, running, len(summary.failed))
    finally:
        bar.close()
        summary.wall_time = time.perf_counter() - start
    return summary


def _warm_up(todo: list[Trial], options: dict[str, Any], progress: bool) -> None:
    """Load each dataset once here first, so that its disk cache (decoded images, embeddings)
    is built once, with a progress bar, rather than by every worker at the same time. A load
    that fails is left for the trials to report."""
    for name in dict.fromkeys(t.dataset for t in todo):
        with contextlib.suppress(Exception):  # a failed load is reported per trial
            load_cached(
                name, options.get("data_dir"), options.get("dataset_loader"), progress=progress
            )


_Event = tuple[Trial, "dict[str, Any] | None", "str | None", int]


def _run_sequential(todo: list[Trial], options: dict[str, Any]) -> Iterator[_Event]:
    for i, trial in enumerate(todo):
        try:
            result = run_trial(trial, **options)
        except Exception as exc:  # a failing trial must not stop the sweep
            yield trial, None, _error(exc), min(1, len(todo) - i - 1)
        else:
            yield trial, result, None, min(1, len(todo) - i - 1)


def _bounded(
    todo: list[Trial], limit: int, submit: Callable[[Trial], Any], wait: Callable[[list], tuple]
) -> Iterator[tuple[Trial, Any, int]]:
    """Keep at most ``limit`` tasks in flight; yield ``(trial, finished handle, in flight)``."""
    queue = list(reversed(todo))
    flight: dict[Any, Trial] = {}
    while queue or flight:
        while queue and len(flight) < limit:
            trial = queue.pop()
            flight[submit(trial)] = trial
        finished, _ = wait(list(flight))
        for handle in finished:
            trial = flight.pop(handle)
            yield trial, handle, min(limit, len(flight) + len(queue))


def _run_pool(todo: list[Trial], workers: int, options: dict[str, Any]) -> Iterator[_Event]:
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    try:

        def wait(handles: list) -> tuple:
            return cf.wait(handles, return_when=cf.FIRST_COMPLETED)

        submit = lambda t: pool.submit(_worker, t, options)  # noqa: E731
        for trial, fut, running in _bounded(todo, workers, submit, wait):
            try:
                yield trial, fut.result(), None, running
            except Exception as exc:
                yield trial, None, _error(exc), running
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(
    todo: list[Trial], workers: int, address: str | None, options: dict[str, Any]
) -> Iterator[_Event]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError as err:
        raise ValueError("backend='ray' needs Ray: pip install 'losskit[ray]'") from err
    started = False
    if not ray.is_initialized():
        if address is None:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_worker)
        opts = ray.put(options)

        def wait(refs: list) -> tuple:
            return ray.wait(refs, num_returns=1)

        # Without an address the in-flight limit is ``workers``; on a cluster keep 2x busy.
        limit = workers if address is None else 2 * workers
        for trial, ref, running in _bounded(todo, limit, lambda t: task.remote(t, opts), wait):
            try:
                yield trial, ray.get(ref), None, running
            except Exception as exc:
                yield trial, None, _error(exc), running
    finally:
        if started:
            ray.shutdown()
