"""``bench ab BASE NEW``: the flags; `fwbench.gate.ab` prepares both sides, runs them and judges."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..gate.ab import DEFAULT_AB_REPEATS
from ..run.placement import threads_help
from .common import csv_list, positive_float, positive_int
from .compare import add_compare_options


def add_parser(subparsers) -> None:
    """Register ``bench ab``."""
    ab = subparsers.add_parser(
        "ab", help="run one matrix on two revisions alternately on this machine and compare (the CI gate)",
        description="Prepare BASE and NEW (git revisions of the repository here, or two venv folders), run the "
                    "same matrix --repeat times per side in ABBA order (each cell a fresh process), keep both "
                    "sides' records and end with the `bench compare` table (paired by block) and its exit code: "
                    "1 on a slower metric or a cell that failed in NEW, 2 on bad input.")
    ab.add_argument("base", metavar="BASE", help="git revision (HEAD~1, main, a hash) or a venv folder")
    ab.add_argument("new", metavar="NEW", help="git revision or a venv folder")
    ab.add_argument("--backend", "-b", type=csv_list, default=None, help="comma-separated backends (default: all)")
    ab.add_argument("--task", "-t", type=csv_list, default=["mlp_mnist"], help="comma-separated tasks (default: mlp_mnist)")
    ab.add_argument("--dataset", default=None, help="dataset instead of each task's")
    ab.add_argument("--profile", choices=["quick", "full"], default=None, help="quick or full (default: full)")
    ab.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a spec value, as in `bench run`")
    ab.add_argument("--threads", type=positive_int, default=None, help=threads_help("threads per cell, both sides alike"))
    ab.add_argument("--device", type=csv_list, default=None, help="cpu, gpu or auto")
    ab.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds per cell before it is killed")
    ab.add_argument("--block-timeout", type=positive_float, default=None,
                    help="seconds for one side's whole run of the matrix (default: none)")
    ab.add_argument("--repeat", type=positive_int, default=DEFAULT_AB_REPEATS, metavar="N",
                    help=f"blocks per side, at least 2 (each cell runs N times per side; default: "
                         f"{DEFAULT_AB_REPEATS})")
    ab.add_argument("--out", "-o", type=Path, default=Path("results"),
                    help="where OUT/ab-<time>/{base,new} go (default: results)")
    add_compare_options(ab)
    ab.set_defaults(handler=cmd_ab)


def cmd_ab(args: argparse.Namespace) -> int:
    """Prepare, run alternately and judge (`fwbench.gate.ab`); the exit code of ``bench compare``."""
    from ..gate.ab import cmd_ab as ab

    return ab(args)
