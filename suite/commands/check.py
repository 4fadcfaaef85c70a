"""``bench check``: conformance of every backend against the NumPy float64 reference
(`fwbench.conformance`), on tasks or, with ``--random N``, on random valid specs."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import UsageError
from .common import EXIT_CELL_FAILED, EXIT_OK, console, csv_list


def add_parser(subparsers) -> None:
    """Register ``bench check``."""
    check = subparsers.add_parser(
        "check", help="conformance: every backend against the NumPy float64 reference",
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


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks, print the table; exit 1 on a failed check."""
    from ..conformance.checks import REFERENCE
    from ..conformance.runner import run_checks, summary_table
    from ..plugins import get_registry
    from ..run.matrix import pick_backends

    registry = get_registry()
    backends = pick_backends(registry, args.backend)
    pick_backends(registry, [REFERENCE])  # the reference must be available too
    if args.random is not None:
        if args.task:
            raise UsageError("--random draws its own specs; drop --task or --random")
        if args.random < 1:
            raise UsageError(f"--random {args.random}: give a number of specs >= 1, e.g. --random 50")
        from ..conformance.runner import check_variants

        variants = check_variants(registry, backends, getattr(args, "overrides", []))
        # every random spec is a new model, so Keras' tf.function traces again by design: its
        # "excessive retracing" warnings would say nothing about the checks
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        return _check_random(variants, args.random, args.seed, getattr(args, "coverage", False))
    for task in args.task or []:
        _validate_check_task(registry, task)
    skipped = [] if args.backend else [
        (name, str(backend.availability())) for name, backend in sorted(registry.backends.items())
        if not backend.availability().ok]
    from ..conformance.runner import check_precision, check_variants

    overrides = getattr(args, "overrides", [])
    checks = run_checks(check_variants(registry, backends, overrides), args.task,
                        device=getattr(args, "device", "cpu"), precision=check_precision(overrides))
    console().print(summary_table(checks, skipped))
    failed = [c for c in checks if not c.passed and not c.skipped]
    not_applicable = [c for c in checks if c.skipped]
    console().print(f"{len(checks) - len(failed) - len(not_applicable)} passed, {len(failed)} failed, "
                    f"{len(not_applicable)} skipped (not applicable)"
                    + (f", {len(skipped)} backend(s) skipped (unavailable)" if skipped else ""))
    return EXIT_CELL_FAILED if failed else EXIT_OK


def _validate_check_task(registry, task: str) -> None:
    """Refuse a spec that cannot be checked (bad keys, shapes) before any check process starts."""
    from ..conformance.checks import task_input
    from ..model import analyze
    from ..spec import load_task

    spec = load_task(registry.get_task_file(task))
    if spec.task.family == "train":
        shape, classes = task_input(spec, registry)
        analyze(spec.model, shape, classes, spec.source)


def _check_random(backends: list[tuple[str, dict]], examples: int, seed: int, coverage: bool = False) -> int:
    """``--random N``: each backend (a frontend: each engine) fuzzed in its own process, all at
    once, the first one here; the same seed draws the same specs in every process. Each of them
    checks its specs in a child it replaces once the child has grown (`fuzz` with ``isolate``), so
    a run of any length stays within its memory. Once one of them fails, the others stop (a run of
    hundreds of specs need not go on for hours)."""
    try:
        from ..conformance.fuzz import fuzz
    except ImportError as exc:
        raise UsageError(f"bench check --random needs hypothesis ({exc}); install it: "
                         "pip install hypothesis") from None
    out = console()
    here, elsewhere = backends[:1], backends[1:]
    others = [_start_random_elsewhere(name, options, examples, seed) for name, options in elsewhere]

    def progress(i, raw):
        if any(proc.poll() not in (None, EXIT_OK) for proc, _ in others):
            return False  # another process has failed: say so now
        if i == 1 or i % 10 == 0:
            out.print(f"[dim]random spec {i}...[/]")
        return True

    result = fuzz(here, examples, seed, progress, elsewhere, isolate=True)
    if result.failure is not None or result.stopped:  # the run has failed: stop the rest
        for proc, _ in others:
            proc.terminate()
    codes = [_finish_random_elsewhere(proc, log) for proc, log in others]
    if coverage:
        out.print(result.coverage.report(), markup=False, highlight=False)
    from rich.markup import escape

    processes = (f", {result.processes} check process{'es' if result.processes > 1 else ''}, the largest "
                 f"{result.largest_rss / 2**20:,.0f} MiB resident" if result.processes else "")
    where = escape(f"on {', '.join(result.backends)} (seed {seed}, {result.seconds:.0f} s{processes})")
    if result.stopped:
        out.print(f"stopped after {result.examples} specs {where}: another process disagreed (above)")
        return EXIT_CELL_FAILED
    if result.failure is None:
        out.print(f"{result.examples} random specs, 0 disagreements {where}")
        if others:
            failed = sum(code != EXIT_OK for code in codes)
            out.print(f"{len(backends)} processes (one per backend, above): "
                      + (f"{failed} failed" if failed else "0 disagreements"))
        return max([EXIT_OK, *codes])
    out.print(f"[red]disagreement[/] after {result.examples} specs {where}: {escape(str(result.failure))}")
    if result.flaky:
        out.print("[yellow]It did not happen again when the same spec was checked again[/] (a process that "
                  "crashed or was killed, or a check that is not deterministic); the spec, not shrunk:")
    else:
        out.print("Smallest failing spec (paste into a test or a task file):")
    out.print(result.toml, markup=False, highlight=False)
    return EXIT_CELL_FAILED


def _start_random_elsewhere(name: str, options: dict, examples: int, seed: int):
    """Start ``bench check --random`` of one backend (a frontend on one engine) in its own process
    (same seed, so the same specs), beside this one's; its output goes to a temporary file until it ends.
    Returns ``(process, log file)``."""
    import subprocess
    import tempfile

    cmd = [sys.executable, "-c", "import sys; from fwbench.cli import main; sys.exit(main())", "check",
           "--random", str(examples), "--seed", str(seed), "-b", name,
           *[arg for k, v in options.items() for arg in ("--set", f"backend.{k}={v}")]]
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by _finish_random_elsewhere
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True), log


def _finish_random_elsewhere(proc, log) -> int:
    """Wait for a process of `_start_random_elsewhere`, print its output here; its exit code."""
    code = proc.wait()
    log.seek(0)
    sys.stdout.write(log.read())
    sys.stdout.flush()
    log.close()
    return code
