"""``bench doctor``: the flags; `fwbench.doctor.command` runs the checks."""
from __future__ import annotations

import argparse

from ..doctor.command import DEFAULT_TASKS
from ..run.placement import threads_help
from .common import csv_list


def add_parser(subparsers) -> None:
    """Register ``bench doctor``."""
    parser = subparsers.add_parser(
        "doctor", help="prove this machine is measured right (device, sync, peak, memory, "
                       "threads, conformance); exit 1 on any failure",
        description="Checks every available backend on one device: the device and driver "
                    "it sees, conformance, a sync audit, the device peak and bandwidth, "
                    "peak-memory readings and the thread settings in force.")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="the device to check (default: cpu)")
    parser.add_argument("--backend", "-b", type=csv_list, default=None,
                        help="comma-separated backends (default: every available one)")
    parser.add_argument("--task", "-t", type=csv_list, default=list(DEFAULT_TASKS),
                        help=f"tasks for the conformance check (default: {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--threads", type=int, default=None,
                        help=threads_help("threads per backend, as `bench run` gives a cell"))
    parser.add_argument("--refresh-peak", action="store_true", help="measure the device peak again, not from the cache")
    parser.add_argument("--no-conformance", action="store_true", help="skip the conformance check (the slowest)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check of `fwbench.doctor.command`; exit 1 on any failure."""
    from ..doctor.command import cmd_doctor as doctor

    return doctor(args)
