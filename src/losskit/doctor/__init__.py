"""``losskit doctor DATA``: how bad are these labels, and what to train them with.

Reads labels with predicted probabilities or features (:mod:`losskit.doctor.inputs`),
diagnoses class balance and label noise by confident learning (:mod:`losskit.doctor.diagnose`),
matches the situation to the closest arena scenario (:mod:`losskit.doctor.recommend`) and
reports on stdout, in ``doctor.json`` and in ``doctor.html`` (:mod:`losskit.doctor.report`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from losskit.doctor.diagnose import Diagnosis, diagnose
from losskit.doctor.inputs import DoctorData, from_arrays, load_data
from losskit.doctor.report import text_report, write_reports

__all__ = ["Diagnosis", "DoctorData", "add_parser", "diagnose", "from_arrays", "load_data", "run"]


def run(args: argparse.Namespace) -> int:
    """The command: 0 on success, 2 (with a message on stderr) on bad input."""
    try:
        data = load_data(args.data, data_dir=args.data_dir, n_folds=args.folds, seed=args.seed)
        result = diagnose(data, top_k=args.top_k, results_dir=args.results)
        json_path, html_path = write_reports(result, args.out)
    except (ValueError, OSError) as err:
        print(f"losskit doctor: error: {err}", file=sys.stderr)
        return 2
    print(text_report(result))
    print(f"\nwrote {json_path} and {html_path}")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``doctor`` sub-command to the ``losskit`` parser's sub-parsers."""
    p = sub.add_parser("doctor", help="diagnose label noise and imbalance, recommend objectives")
    p.add_argument("data", help=".npz / .csv (labels + pred_probs or features) or arena dataset")
    p.add_argument("--out", default="out/doctor", help="folder for doctor.json and doctor.html")
    p.add_argument("--top-k", type=int, default=20, help="how many likely label errors to list")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="arena data folder (default: $LOSSKIT_DATA)")
    p.add_argument("--results", default=None, help="arena results folder (default: docs/results)")
    p.set_defaults(func=run)
