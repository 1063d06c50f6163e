"""``losskit arena``: run a sweep into ``OUT/arena.sqlite`` and write the report.

losskit arena [--suite quick|standard|multilabel|distill|extreme|extreme_quick|retrieval]
              [--datasets ..]
              [--scenarios ..] [--objectives ..] [--seeds N] [--epochs N] [--workers N]
              [--backend local|ray] [--out DIR]
losskit arena --suite diagnostics|diagnostics_quick [--demos NAME ..] [--seeds N] [--out DIR]
losskit arena --list
losskit arena report --out DIR
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from losskit.arena.suites import SUITES, Suite, get_suite, parse_objective


def format_objective(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_objective`: the label a leaderboard shows."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("arena", help="compare objectives on real data under label scenarios")
    p.add_argument("action", nargs="?", choices=("run", "report"), default="run")
    p.add_argument(
        "--suite",
        default="quick",
        help=f"one of {sorted(SUITES)}, or a demonstration suite: diagnostics[_quick]",
    )
    p.add_argument("--demos", nargs="+", help="only these demonstrations of a demo suite")
    p.add_argument("--datasets", nargs="+", help="override the suite's datasets")
    p.add_argument("--scenarios", nargs="+", help="override the suite's scenarios")
    p.add_argument("--objectives", nargs="+", help="specs such as comp_sum:tau=1.5")
    p.add_argument(
        "--model",
        choices=("linear", "mlp", "cnn", "mlp_small", "cnn_small"),
        help="override the model",
    )
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: local)")
    p.add_argument("--data-dir", default=None, help="default: $LOSSKIT_DATA")
    p.add_argument("--out", default="out/arena", help="store and report folder")
    p.add_argument("--list", action="store_true", help="list suites, datasets, scenarios, ...")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)


def _list() -> int:
    import losskit
    from losskit.arena.datasets import dataset_available, list_datasets
    from losskit.arena.demos import DEMO_SUITES
    from losskit.labels import list_multilabel_scenarios, list_scenarios

    for name, demos in DEMO_SUITES.items():
        print(f"suite {name} (and {name}_quick): demonstrations {', '.join(demos)}")
    for s in SUITES.values():
        print(f"suite {s.name}: {s.seeds} seeds")
        for t in s.tracks:
            print(
                f"  {t.dataset} ({t.model}, {t.epochs} epochs"
                f"{', teacher ' + t.teacher if t.teacher else ''}): scenarios "
                f"{', '.join(t.scenarios)}; objectives {', '.join(t.objectives)}"
            )
    for name in list_datasets():
        print(f"dataset {name}{'' if dataset_available(name) else '  (data missing)'}")
    print("scenarios: " + ", ".join(list_scenarios()))
    losses = [e.name for e in losskit.catalog(kind="loss", family="classification")]
    print("objectives: " + ", ".join(losses))
    from losskit.arena.recipes import RECIPES

    print("training recipes (multiclass): " + ", ".join(
        f"{name} [{', '.join(f'{k}={v}' for k, v in r.defaults.items())}]"
        for name, r in RECIPES.items()
    ))  # fmt: skip
    print("multi-label scenarios: " + ", ".join(list_multilabel_scenarios()))
    losses = [e.name for e in losskit.catalog(kind="loss", family="multilabel")]
    print("multi-label objectives: " + ", ".join(losses))
    from losskit.arena.distill_objectives import ADAPTERS

    print("distillation objectives: " + ", ".join(ADAPTERS))
    print("extreme batching: random:all, random:inbatch, ngame:inbatch[:cluster=C,refresh=R]")
    print(
        "retrieval: datasets retrieval:<olivetti|cifar10|trec6|trec50|goemotions>"
        "[:dim=D,train=N,query=M], scenarios all | disjoint:K; objectives: embedding losses "
        "and classification losses (through a linear head), [base_loss=NAME,reg_weight=W]"
    )
    print(
        "regression: dataset regression:housing, scenario longtail:R; objectives l1, mse, "
        "regression losses (conr:base_loss=l1|mse,reg_weight=W,...)"
    )
    return 0


def _suite(args: argparse.Namespace) -> Suite:
    return get_suite(args.suite).override(
        datasets=args.datasets,
        scenarios=args.scenarios,
        objectives=args.objectives,
        model=args.model,
        epochs=args.epochs,
        seeds=args.seeds,
    )


def build_trials(suite: Suite, data_dir: str | None) -> list:
    """Every (track, scenario, objective, seed) of the suite whose data is present."""
    import losskit
    from losskit.arena.datasets import dataset_available, dataset_task, missing_files
    from losskit.arena.extreme import (
        canonical_batching,
        canonical_extreme_dataset,
        is_extreme_dataset,
    )
    from losskit.arena.recipes import check_recipe, is_recipe
    from losskit.arena.retrieval_specs import is_special_track, special_track
    from losskit.arena.trial import Trial
    from losskit.labels import canonical_multilabel_scenario, canonical_scenario

    trials = []
    for i, track in enumerate(suite.tracks):
        dataset, canonical, family, checker = track.dataset, canonical_scenario, None, None
        absent: list = []
        if is_extreme_dataset(dataset):
            dataset, canonical = canonical_extreme_dataset(dataset), canonical_batching
        elif is_special_track(dataset):  # retrieval / imbalanced regression
            dataset, canonical, checker, absent = special_track(dataset, data_dir)
        elif not dataset_available(dataset, data_dir):
            absent = missing_files(dataset, data_dir)
        elif dataset_task(dataset) == "multilabel":
            canonical, family = canonical_multilabel_scenario, "multilabel"
        if absent:
            missing = ", ".join(str(p) for p in absent)
            if i == 0:
                raise ValueError(f"dataset {dataset!r} needs missing files: {missing}")
            print(f"skipping {dataset}: missing {missing}", file=sys.stderr)
            continue
        for scenario in track.scenarios:
            for spec in track.objectives:
                name, params = parse_objective(spec)
                if checker is not None:  # the track's own objective rules
                    checker(name, params)
                elif is_recipe(name) and family is None and not track.teacher:
                    check_recipe(name, params, track.model)
                else:
                    if track.teacher:  # imports the objective's module, checks the teacher
                        from losskit.arena.distill_trial import check_distill_objective

                        check_distill_objective(name, track.teacher)
                    entry = losskit.get(name)  # unknown names fail before any training
                    if family is not None and entry.family != family:
                        raise ValueError(
                            f"objective {name!r} is a {entry.family!r} {entry.kind}; dataset "
                            f"{dataset!r} needs a {family!r} objective"
                        )
                for seed in range(suite.seeds):
                    trials.append(
                        Trial(
                            dataset=dataset,
                            scenario=canonical(scenario),
                            objective=name,
                            params=params,
                            model=track.model,
                            seed=seed,
                            epochs=track.epochs,
                            batch_size=track.batch_size,
                            lr=track.lr,
                            teacher=track.teacher,
                        )
                    )
    return trials


def _report(out: Path) -> int:
    from losskit.arena.report import build_report
    from losskit.arena.store import ArenaStore

    path = out / "arena.sqlite"
    if not path.exists() and (out / "demos").is_dir():
        from losskit.arena.demos import write_demo_report

        print(write_demo_report(out))
        return 0
    if not path.exists():
        raise ValueError(f"--out {out} holds no arena.sqlite; run a sweep there first")
    with ArenaStore(path) as store:
        records = store.records()
        meta = store.meta()
        rows = store.results()
    versions = rows[-1]["versions"] if rows else {}
    for r in records:
        r["objective"] = format_objective(r["objective"], r.get("params") or {})
    text = build_report(records, out, command=meta.get("command", "?"), versions=versions)
    print(text)
    print(f"\nreport: {out / 'report.html'}  results: {out / 'results.md'}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    out = Path(args.out)
    if args.action == "report":
        return _report(out)
    from losskit.arena.demos import DEMO_SUITES, run_demo_suite

    if args.suite.removesuffix("_quick") in DEMO_SUITES:
        failed = run_demo_suite(
            args.suite,
            out,
            seeds=args.seeds,
            only=args.demos,
            data_dir=args.data_dir,
            command="losskit " + shlex.join(args.argv),
        )
        print(f"results: {out / 'results.md'}", file=sys.stderr)
        return 1 if failed else 0
    from losskit.arena.runner import run_trials
    from losskit.arena.store import ArenaStore

    suite = _suite(args)
    trials = build_trials(suite, args.data_dir)
    start = time.perf_counter()
    with ArenaStore(out / "arena.sqlite") as store:
        store.set_meta("command", "losskit " + shlex.join(args.argv))
        summary = run_trials(
            trials,
            store,
            workers=args.workers,
            backend=args.backend,
            ray_address=args.ray_address,
            progress=not args.no_progress,
            data_dir=args.data_dir,
        )
    print(
        f"{summary.total} trials: {summary.ran} ran, {summary.skipped} already stored, "
        f"{len(summary.failed)} failed, {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    for key, error in summary.failed[:5]:
        print(f"failed {key[:12]}: {error.splitlines()[-1] if error else ''}", file=sys.stderr)
    _report(out)
    return 1 if summary.failed else 0
