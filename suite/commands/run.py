"""``bench run``: the flags, and the `RunOptions` they stand for (`fwbench.run.matrix` runs it)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..run.options import RunOptions
from ..run.placement import threads_help
from .common import csv_list, positive_float, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench run`` (``bench tune`` takes its flags as a parent parser)."""
    from ..run.matrix import DEFAULT_REPEATS

    run = subparsers.add_parser("run", help="run backends x tasks x devices x overrides, one process per cell",
                                description="Run the matrix backends x tasks x devices x --set grid. Each cell runs "
                                            "in its own process and writes one JSON record as soon as it ends.")
    run.add_argument("--backend", "-b", type=csv_list, default=None,
                     help="comma-separated backends (default: every available one; see `bench list backends`)")
    run.add_argument("--task", "-t", type=csv_list, default=["mlp_mnist"],
                     help="comma-separated task names or paths to .toml specs (default: mlp_mnist)")
    run.add_argument("--device", type=csv_list, default=["cpu"], help="cpu, gpu or auto; comma-separated for several")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec value (dotted key, e.g. optimizer.lr=0.01); KEY=a,b,c makes a grid")
    run.add_argument("--dataset", help="use this dataset instead of the task's (e.g. mnist_5k, digits, synthetic)")
    run.add_argument("--profile", choices=["quick", "full"], default="full",
                     help="quick: fewer epochs and samples (from each task's [profiles.quick])")
    run.add_argument("--threads", type=positive_int, default=None,
                     help=threads_help())
    run.add_argument("--repeat", type=positive_int, default=None, metavar="N",
                     help="run every cell N times, each in a fresh process, interleaved across cells; the "
                          f"headline and its interval come from the repeats (default: {DEFAULT_REPEATS})")
    run.add_argument("--timeout", type=positive_float, default=3600.0, help="seconds per cell before it is killed")
    run.add_argument("--memory-limit", type=positive_int, default=None, metavar="MB",
                     help="address-space limit per cell process, in MiB")
    run.add_argument("--out", "-o", type=Path, default=Path("results"), help="results folder (default: results)")
    run.add_argument("--resume", action="store_true",
                     help="continue the latest run in --out: skip cells that already have an ok record")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="dataset cache (default: $FWBENCH_DATA_DIR or ~/.cache/fwbench/data)")
    run.add_argument("--executor", default="local",
                     help="how cells are run: local (default, one process per cell) or dask (or a plugin's)")
    run.add_argument("--workers", type=positive_int, default=None,
                     help="with --executor dask: start a local Dask cluster of N single-threaded workers")
    run.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="with --executor dask: use a running scheduler, e.g. tcp://HOST:8786")
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    run.add_argument("--peak", default="auto", metavar="auto|off|GFLOPS",
                     help="the machine's peak for %%-of-peak and 'too fast' checks: auto (cached, or "
                          "measured with this run's backends; see `bench info --peak`), off, or a number")
    run.add_argument("--report", nargs="?", const="", default=None, metavar="FILE",
                     help="write the HTML report when the run ends (default FILE: <run folder>/report.html)")
    run.add_argument("--save-weights", type=Path, default=None, metavar="DIR",
                     help="write each cell's final weights to DIR/<cell_id>.npz (a framework-neutral "
                          "checkpoint; start another run from it with --set model.init_from=PATH)")
    run.add_argument("--scenario", choices=["training", "inference"], default=None,
                     help="training (the default) or inference: eval-mode latency per batch size "
                          "([inference] in the spec: batch_sizes, calls; docs/statistics.md)")
    run.add_argument("--weights", type=Path, default=None, metavar="CKPT",
                     help="with --scenario inference: serve this checkpoint (an .npz from --save-weights) "
                          "instead of the canonical initial weights")
    run.set_defaults(handler=cmd_run)
    return run


def run_options(args: argparse.Namespace) -> RunOptions:
    """The `RunOptions` that ``bench run``'s (or ``bench tune``'s) parsed flags stand for."""
    return RunOptions(
        backends=args.backend, tasks=args.task, devices=args.device, overrides=args.overrides,
        dataset=args.dataset, profile=args.profile, threads=args.threads, repeats=args.repeat,
        timeout_s=args.timeout, memory_limit_mb=args.memory_limit, out=args.out, resume=args.resume,
        data_dir=args.data_dir, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
        progress=not args.no_progress, peak=args.peak, report=args.report is not None,
        report_file=Path(args.report) if args.report else None, save_weights=args.save_weights,
        scenario=args.scenario, weights=args.weights, argv=getattr(args, "argv", ()))


def cmd_run(args: argparse.Namespace) -> int:
    """Plan every cell (bad input: exit 2 before any runs), run them, print the table."""
    from ..run.matrix import plan_run, run_planned

    options = run_options(args)
    return run_planned(plan_run(options), options)
