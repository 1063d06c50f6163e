"""The ``losskit`` command: ``losskit catalog``, ``losskit arena``, ``losskit doctor`` and
``losskit distill-demo``."""

from __future__ import annotations

import argparse
import sys

from losskit._core.papers import PAPER_TITLES
from losskit._core.registry import catalog, catalog_markdown


def _print_catalog(args: argparse.Namespace) -> int:
    if args.markdown:
        print(catalog_markdown())
        return 0
    entries = catalog(args.paper, kind=args.kind, family=args.family)
    width = max((len(e.name) for e in entries), default=4)
    for e in entries:
        papers = ",".join(map(str, e.papers)) or "-"
        print(f"{e.name:<{width}}  {e.kind:<10} {e.family:<15} {papers:<8} {e.summary}")
    if args.paper is not None:
        print(f"\npaper {args.paper}: {PAPER_TITLES.get(args.paper, 'unknown')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="losskit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cat = sub.add_parser("catalog", help="list the registered objectives")
    cat.add_argument("--markdown", action="store_true", help="print the README table")
    cat.add_argument("--paper", type=int, default=None, help="only entries of this paper")
    cat.add_argument("--kind", default=None)
    cat.add_argument("--family", default=None)
    cat.set_defaults(func=_print_catalog)
    from losskit.arena.cli import add_parser
    from losskit.doctor import add_parser as add_doctor_parser

    add_parser(sub)
    add_doctor_parser(sub)
    demo = sub.add_parser(
        "distill-demo",
        help="progressive distillation of all-MiniLM-L6-v2 into a 2-layer student (TREC-6)",
        add_help=False,
    )
    demo.set_defaults(func=_distill_demo)
    return parser


def _distill_demo(args: argparse.Namespace) -> int:
    from losskit.procedures.minilm_student import main as demo_main

    return demo_main(args.argv[1:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.command != "distill-demo":
        build_parser().parse_args(argv)  # reports the unknown arguments
    args.argv = argv
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
