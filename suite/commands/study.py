"""``bench study NAME``: the flags; `fwbench.studies.command` plans and runs the study."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..run.placement import threads_help
from .common import csv_list, positive_float, positive_int


def add_parser(subparsers) -> None:
    """Register ``bench study`` (called from the built-in `fwbench_register_commands`)."""
    study = subparsers.add_parser(
        "study", help="run a named study (a set of cells) and write its report",
        description="Run a study from `bench list studies`: its cells for each backend, each in its own "
                    "process (records in --out/<run_id>/), then write an HTML report with the study's section.")
    study.add_argument("name", help="a study name (see `bench list studies`) or a path to a study .toml")
    study.add_argument("--backend", "-b", type=csv_list, default=None,
                       help="comma-separated backends (default: every available one)")
    study.add_argument("--profile", choices=["quick", "full"], default="full",
                       help="quick: the study's [profiles.quick] (fewer epochs and samples)")
    study.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec value in every cell (applied last), e.g. --set training.epochs=2")
    study.add_argument("--out", "-o", type=Path, default=Path("results"), help="results folder (default: results)")
    study.add_argument("--threads", type=positive_int, default=None,
                       help=threads_help())
    study.add_argument("--device", default="cpu", help="cpu (default), gpu or auto")
    study.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds per cell before it is killed")
    study.add_argument("--data-dir", type=Path, default=None, help="dataset cache (default: $FWBENCH_DATA_DIR)")
    study.add_argument("--report", type=Path, default=None, metavar="FILE",
                       help="where to write the HTML report (default: <run folder>/report.html)")
    study.add_argument("--no-progress", action="store_true", help="no live progress display")
    study.set_defaults(handler=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    """Run the study's cells for each backend and write its report (`fwbench.studies.command`)."""
    from ..studies.command import cmd_study as study

    return study(args)
