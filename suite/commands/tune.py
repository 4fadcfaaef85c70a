"""``bench tune``: ``bench run``'s flags plus ``--tolerance``; `fwbench.run.tune.tune` does the work."""
from __future__ import annotations

import argparse

from ..run import tune as tuning
from .run import run_options


def add_parser(subparsers) -> None:
    """Register ``bench tune`` (after ``bench run``, whose flags it takes)."""
    run = subparsers.choices["run"]
    tune = subparsers.add_parser(
        "tune", parents=[run], conflict_handler="resolve", add_help=False,
        help="each cell as written and at its best (precision x execution mode x placement)",
        description=tuning.__doc__.split("\n\n")[1])
    tune.add_argument("--tolerance", type=float, default=tuning.DEFAULT_TOLERANCE, metavar="POINTS",
                      help=f"accuracy a configuration may lose against fp32 (default {tuning.DEFAULT_TOLERANCE})")
    tune.set_defaults(handler=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    """Search each backend's configurations as one run and print as written vs at its best."""
    return tuning.tune(run_options(args), args.tolerance)
