"""The ``bench`` command. Bad input → one line on stderr naming the fix, exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import FwbenchError, UsageError
from .run.placement import threads_help
from .version import __version__

EXIT_OK, EXIT_CELL_FAILED, EXIT_USAGE = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with the fix) instead of usage + message."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):  # nan and inf too
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> ArgumentParser:
    from .plugins import get_plugin_manager
    from .run.matrix import DEFAULT_REPEATS

    parser = ArgumentParser(prog="bench", description="Benchmark deep-learning frameworks on the same tasks.",
                            epilog="Run `bench COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"fwbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    run = sub.add_parser("run", help="run backends x tasks x devices x overrides, one process per cell",
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

    lst = sub.add_parser("list", help="list backends, tasks, datasets or studies (--json for scripts)")
    lst.add_argument("what", nargs="?", choices=["backends", "tasks", "datasets", "studies"], default="backends")
    lst.add_argument("--json", action="store_true", help="print the rows as JSON (for scripts)")
    lst.add_argument("--options", action="store_true",
                     help="with `backends`: one row per declared [backend] option (name, type, default, choices)")
    lst.set_defaults(handler=cmd_list)

    info = sub.add_parser("info", help="this machine: CPU, threads, BLAS, frameworks")
    info.add_argument("--peak", action="store_true",
                      help="measure the float32 matmul peak (each backend's own matmul, in its own process) "
                           "and the memory bandwidth; cached for `bench run`")
    info.add_argument("--threads", type=positive_int, default=None,
                      help=threads_help("threads for --peak, as `bench run` gives a cell"))
    info.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                      help="with --peak: the device to measure (gpu: each backend's matmul and add on the GPU)")
    info.set_defaults(handler=cmd_info)

    data = sub.add_parser("data", help="manage datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=ArgumentParser, required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a dataset into the cache")
    fetch.add_argument("name", help="dataset name (see `bench list datasets`)")
    fetch.add_argument("--data-dir", type=Path, default=None, help="cache folder")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.set_defaults(handler=cmd_data_fetch)

    check = sub.add_parser("check", help="conformance: every backend against the NumPy float64 reference",
                           description="From identical weights and batches, compare logits and loss (float32), "
                                       "every gradient, 3 steps of every optimizer and a 20-step loss curve "
                                       "(float64) with the NumPy backend in float64; update rules against closed "
                                       "forms and the reference's gradients against finite differences (see "
                                       "docs/conformance.md). Each backend runs in its own process.")
    check.add_argument("--backend", "-b", type=csv_list, default=None, help="backends to check (default: all available)")
    check.add_argument("--task", "-t", type=csv_list, default=None,
                       help="tasks or spec files (default: every shipped training task)")
    check.add_argument("--random", type=int, default=None, metavar="N",
                       help="instead of tasks, check N random valid specs (hypothesis); a failure prints "
                            "the smallest failing spec as TOML")
    check.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    check.add_argument("--coverage", action="store_true",
                       help="with --random: print which vocabulary items and layer pairs were drawn")
    check.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                       help="where the checked backends run (the float64 reference always runs on the CPU)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="backend.KEY=VALUE",
                       help="a backend option for the checked backends, e.g. backend.mode=native or "
                            "backend.engine=jax (default: every installed engine of a frontend); "
                            "precision=bf16|fp16|tf32: check that policy against the reference's own")
    check.set_defaults(handler=cmd_check)

    from .doctor.command import add_parser as add_doctor

    add_doctor(sub)

    get_plugin_manager().hook.fwbench_register_commands(subparsers=sub)
    return parser


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

def _console():
    from .run.display import make_console

    return make_console()


def cmd_list(args) -> int:
    from .plugins import get_registry

    if args.options and args.what != "backends":
        raise UsageError(f"--options lists backend options; use `bench list backends --options`, not {args.what}")
    rows = option_rows(get_registry()) if args.options else list_rows(args.what, get_registry())
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    from rich.table import Table

    table = Table(header_style="bold")
    for column in rows[0] if rows else LIST_COLUMNS[args.what]:
        table.add_column(column)
    for row in rows:
        cells = [str(v) for v in row.values()]
        if args.what == "backends" and not args.options:
            colour = "green" if row["status"] == "available" else "red" if row["status"].startswith("broken") \
                else "yellow"
            cells[3] = f"[{colour}]{cells[3]}[/]"
        table.add_row(*cells)
    _console().print(table)
    return EXIT_OK


LIST_COLUMNS = {"backends": ("backend", "frontend", "engines", "status", "description"),
                "tasks": ("task", "dataset", "description", "file"),
                "studies": ("study", "kind", "cells", "title", "file"),
                "datasets": ("dataset", "shape", "where", "description")}


def option_rows(registry) -> list[dict[str, str]]:
    """``bench list backends --options``: one row per declared option of every backend."""
    from .options import declared

    rows = []
    for name, backend in sorted(registry.backends.items()):
        for option in declared(backend).values():
            row = option.as_dict()
            rows.append({"backend": name, "option": row["name"], "type": row["type"],
                         "default": json.dumps(row["default"]),
                         "choices": ", ".join(json.dumps(c) for c in row["choices"]) or f"any {row['type']}",
                         "help": row["help"]})
        if not declared(backend):
            rows.append({"backend": name, "option": "(none)", "type": "", "default": "", "choices": "",
                         "help": "takes no backend options"})
    return rows


def list_rows(what: str, registry) -> list[dict[str, str]]:
    """The rows of ``bench list WHAT`` (column name -> text), as printed or as ``--json``."""
    if what == "backends":
        from .frontends import engines_text, frontend_name
        from .plugins import BROKEN_PLUGINS

        rows = [{"backend": name, "frontend": frontend_name(backend), "engines": engines_text(backend),
                 "status": str(backend.availability()), "description": backend.description}
                for name, backend in sorted(registry.backends.items())]
        return rows + [{"backend": f"(plugin {name})", "frontend": "", "engines": "",
                        "status": f"broken: {reason}", "description": "reinstall or remove the package"}
                       for name, reason in sorted(BROKEN_PLUGINS.items())]
    if what == "tasks":
        from .spec import read_toml

        rows = []
        for name, path in sorted(registry.task_files.items()):
            raw = read_toml(path)
            family = (raw.get("task") or {}).get("family", "train")
            dataset = raw.get("dataset", {}).get("name", "?") if family == "train" else f"— ({family})"
            rows.append({"task": name, "dataset": str(dataset),
                         "description": str(raw.get("task", {}).get("description", "")), "file": str(path)})
        return rows
    if what == "studies":
        from .studies.spec import list_rows as study_rows

        return [dict(zip(LIST_COLUMNS["studies"], row, strict=True)) for row in study_rows(registry)]
    from .datasets.base import default_data_dir

    data_dir = default_data_dir()
    return [{"dataset": name, "shape": "x".join(map(str, ds.input_shape)),
             "where": "ships in a package (offline)" if ds.offline else (
                 "cached" if ds.is_cached(data_dir) else f"download: bench data fetch {name}"),
             "description": ds.description}
            for name, ds in sorted(registry.datasets.items())]


def cmd_info(args) -> int:
    import json

    from .plugins import get_registry
    from .records.environment import collect

    env = collect(os.cpu_count())
    env["backends"] = {name: str(b.availability()) for name, b in sorted(get_registry().backends.items())}
    if getattr(args, "peak", False):
        return _print_peak(args, env)
    _console().print_json(json.dumps(env, default=str))
    return EXIT_OK


def _print_peak(args, env) -> int:
    import json

    from rich.table import Table

    from .micro.peak import cache_path, machine_peak
    from .run.placement import available_cores, threads_per_cell

    threads = threads_per_cell(args.threads, 1, available_cores())  # as `bench run` gives a cell
    console = _console()
    device = getattr(args, "device", "cpu")
    peak = machine_peak(device, threads, refresh=True, progress=lambda m: console.print(m, style="dim"))
    peak = peak.details if peak else None
    if peak is None:
        console.print("no backend could measure a matmul peak (see the errors above)")
        return EXIT_CELL_FAILED
    where = peak.get("device_name") or env["cpu"]["model"]
    table = Table(title=f"{device.upper()} peak, {threads} thread(s), float32 ({where})", header_style="bold",
                  title_justify="left")
    for column in ("backend", "version", "GFLOP/s (best)", "GFLOP/s (median)", "matrix", "note"):
        table.add_column(column, justify="left" if column in ("backend", "version", "note") else "right")
    for name, v in peak["per_backend"].items():
        best = v.get("gflops")
        table.add_row(name, str(v.get("version") or ""), f"{best:,.1f}" if best else "—",
                      f"{v['gflops_median']:,.1f}" if v.get("gflops_median") else "—",
                      f"{v['n']}²" if v.get("n") else "", v.get("error") or ("peak" if name == peak["best_backend"] else ""))
    console.print(table)
    bw = peak.get("bandwidth") or {}
    console.print(f"peak: {peak['gflops']:,.1f} GFLOP/s ({peak['best_backend']}); memory bandwidth: "
                  f"{bw.get('gbps', float('nan')):,.1f} GB/s (copy {bw.get('copy_gbps', float('nan')):,.1f}, "
                  f"add {bw.get('add_gbps', float('nan')):,.1f}; {bw.get('backend') or 'NumPy'}"
                  + (f", {bw.get('threads')} thread(s))" if device == "cpu" else ", on the GPU)"))
    console.print(f"cached in {cache_path()} for `bench run`")
    print(json.dumps({k: peak.get(k) for k in ("gflops", "best_backend", "bandwidth_gbps", "threads", "device")}))
    return EXIT_OK


def cmd_data_fetch(args) -> int:
    from .datasets.base import default_data_dir
    from .plugins import get_registry

    dataset = get_registry().get_dataset(args.name)
    data_dir = args.data_dir or default_data_dir()
    if dataset.offline:
        _console().print(f"{dataset.name} ships inside an installed package; nothing to download.")
        return EXIT_OK
    import inspect

    takes_force = "force" in inspect.signature(dataset.fetch).parameters
    where = dataset.fetch(data_dir, progress=True, **({"force": args.force} if takes_force else {}))
    _console().print(f"{dataset.name}: ready in {where}")
    return EXIT_OK


def cmd_check(args) -> int:
    from .conformance.checks import REFERENCE
    from .conformance.runner import run_checks, summary_table
    from .plugins import get_registry
    from .run.matrix import pick_backends

    registry = get_registry()
    backends = pick_backends(registry, args.backend)
    pick_backends(registry, [REFERENCE])  # the reference must be available too
    if args.random is not None:
        if args.task:
            raise UsageError("--random draws its own specs; drop --task or --random")
        if args.random < 1:
            raise UsageError(f"--random {args.random}: give a number of specs >= 1, e.g. --random 50")
        from .conformance.runner import check_variants

        variants = check_variants(registry, backends, getattr(args, "overrides", []))
        return _check_random(variants, args.random, args.seed, getattr(args, "coverage", False))
    for task in args.task or []:
        _validate_check_task(registry, task)
    skipped = [] if args.backend else [
        (name, str(backend.availability())) for name, backend in sorted(registry.backends.items())
        if not backend.availability().ok]
    from .conformance.runner import check_precision, check_variants

    overrides = getattr(args, "overrides", [])
    checks = run_checks(check_variants(registry, backends, overrides), args.task,
                        device=getattr(args, "device", "cpu"), precision=check_precision(overrides))
    _console().print(summary_table(checks, skipped))
    failed = [c for c in checks if not c.passed and not c.skipped]
    not_applicable = [c for c in checks if c.skipped]
    _console().print(f"{len(checks) - len(failed) - len(not_applicable)} passed, {len(failed)} failed, "
                     f"{len(not_applicable)} skipped (not applicable)"
                     + (f", {len(skipped)} backend(s) skipped (unavailable)" if skipped else ""))
    return EXIT_CELL_FAILED if failed else EXIT_OK


def _validate_check_task(registry, task: str) -> None:
    """Refuse a spec that cannot be checked (bad keys, shapes) before any check process starts."""
    from .conformance.checks import task_input
    from .model import analyze
    from .spec import load_task

    spec = load_task(registry.get_task_file(task))
    if spec.task.family == "train":
        shape, classes = task_input(spec, registry)
        analyze(spec.model, shape, classes, spec.source)


def _check_random(backends: list[tuple[str, dict]], examples: int, seed: int, coverage: bool = False) -> int:
    try:
        from .conformance.fuzz import fuzz
    except ImportError as exc:
        raise UsageError(f"bench check --random needs hypothesis ({exc}); install it: "
                         "pip install hypothesis") from None
    console = _console()

    def progress(i, raw):
        if i == 1 or i % 10 == 0:
            console.print(f"[dim]random spec {i}...[/]")

    here, elsewhere = _one_engine_per_frontend(backends)
    codes = [_check_random_elsewhere(name, options, examples, seed) for name, options in elsewhere]
    result = fuzz(here, examples, seed, progress)
    if coverage:
        console.print(result.coverage.report(), markup=False, highlight=False)
    from rich.markup import escape

    where = escape(f"on {', '.join(result.backends)} (seed {seed}, {result.seconds:.0f} s)")
    if result.failure is None:
        console.print(f"{result.examples} random specs, 0 disagreements {where}")
        return max([EXIT_OK, *codes])
    console.print(f"[red]disagreement[/] after {result.examples} specs {where}: {result.failure}")
    console.print("Smallest failing spec (paste into a test or a task file):")
    console.print(result.toml, markup=False, highlight=False)
    return EXIT_CELL_FAILED


def _one_engine_per_frontend(variants: list[tuple[str, dict]]):
    """Split ``(backend, options)`` variants into those one process can hold (every backend with
    the first engine of each frontend) and the rest (a frontend on a further engine)."""
    here, elsewhere, seen = [], [], set()
    for name, options in variants:
        if "engine" in options and name in seen:
            elsewhere.append((name, options))
        else:
            here.append((name, options))
            seen.add(name)
    return here, elsewhere


def _check_random_elsewhere(name: str, options: dict, examples: int, seed: int) -> int:
    """``bench check --random`` of one frontend on one engine in its own process (same seed, so
    the same specs); its output goes to this terminal. Returns its exit code."""
    import subprocess

    cmd = [sys.executable, "-c", "import sys; from fwbench.cli import main; sys.exit(main())", "check",
           "--random", str(examples), "--seed", str(seed), "-b", name,
           *[arg for k, v in options.items() for arg in ("--set", f"backend.{k}={v}")]]
    return subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL).returncode


def cmd_run(args) -> int:
    from .run.matrix import plan_run, run_planned

    plan = plan_run(args)
    return run_planned(plan, args)


# ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # name the sub-command whose help lists the right flags
            where = f"bench {args.command}" if getattr(args, "command", None) else "bench"
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `{where} --help`)")
        if not getattr(args, "handler", None):
            parser.print_help()
            return EXIT_OK if not argv else EXIT_USAGE
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FwbenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_CELL_FAILED
    except KeyboardInterrupt:
        print("bench: interrupted; finished records are kept (continue with --resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench list --json | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
