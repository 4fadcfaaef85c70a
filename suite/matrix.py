"""``bench run``: check every input up front, plan the cells, run them, print the table."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, UsageError
from .runner import Cell, execute, finished_cell_ids, latest_run_dir, new_run_id


@dataclass
class Plan:
    cells: list[Cell]
    run_dir: Path
    resume_done: set[str] = field(default_factory=set)
    manifest: dict[str, Any] = field(default_factory=dict)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pick_backends(registry, names: list[str] | None) -> list[str]:
    if names:
        for name in names:
            backend = registry.get_backend(name)
            availability = backend.availability()
            if not availability.ok:
                raise BackendUnavailable(f"backend {name!r} is {availability}")
        return names
    available = [n for n, b in sorted(registry.backends.items()) if b.availability().ok]
    if not available:
        raise BackendUnavailable("no backend is available; see `bench list backends`")
    return available


def check_model_fits(registry, task) -> None:
    """Refuse (`SpecError`: file, key, fix) a model that cannot take its dataset's input shape: a
    kernel or pool larger than its input, a residual body that changes the shape with
    ``projection = "none"``, a head that does not match the classes. Unknown datasets are left to
    `_ensure_dataset`."""
    from .model import analyze

    dataset = registry.datasets.get(task.dataset.name)
    if dataset is None:
        return
    shape = tuple(task.dataset.shape) or tuple(dataset.input_shape)
    classes = len(task.dataset.classes) or dataset.num_classes or None
    analyze(task.model, shape, classes, task.source)


def _ensure_dataset(registry, name: str, data_dir: Path | None) -> None:
    """Fail before any cell runs if a dataset is neither packaged, cached nor downloadable."""
    from .datasets.base import default_data_dir

    dataset = registry.get_dataset(name)
    data_dir = data_dir or default_data_dir()
    if dataset.offline or dataset.is_cached(data_dir):
        return
    dataset.fetch(data_dir, progress=True)  # raises DatasetError with the offline alternatives


def plan_run(args) -> Plan:
    from .plugins import get_registry
    from .spec import is_bench_spec, load_task, parse_overrides

    registry = get_registry()
    if args.executor not in registry.executors:
        from .errors import UnknownNameError

        raise UnknownNameError("executor", args.executor, list(registry.executors))
    if args.executor == "local" and (getattr(args, "workers", None) or getattr(args, "scheduler", None)):
        raise UsageError("--workers/--scheduler only apply to --executor dask; add --executor dask or drop them")
    backends = _pick_backends(registry, args.backend)
    for device in args.device:
        if device not in ("cpu", "gpu", "auto"):
            raise UsageError(f"unknown device {device!r} in --device; expected cpu, gpu or auto")
    grid = parse_overrides(args.overrides)
    threads = args.threads or default_threads()
    if threads > default_threads():
        raise UsageError(f"--threads {threads} is more than the {default_threads()} cores this process may use; "
                         f"use --threads {default_threads()} or fewer")
    profile = None if args.profile == "full" else args.profile
    resume_dir = latest_run_dir(args.out) if args.resume else None
    if args.resume and resume_dir is None:
        raise UsageError(f"--resume: no earlier run in {args.out}; drop --resume to start a new run")
    run_id = resume_dir.name if resume_dir else new_run_id()

    cells, datasets = [], set()
    for task_name in args.task:
        path = registry.get_task_file(task_name)
        native = load_task(path, profile=profile)  # validates the file itself first
        bench = is_bench_spec(native)  # a microbenchmark: no dataset, --dataset does not apply
        for overrides in grid:
            overrides = dict(overrides)
            if args.dataset and not bench:
                overrides["dataset.name"] = args.dataset
                if args.dataset == "synthetic" and "dataset.shape" not in overrides:
                    native_ds = registry.datasets.get(native.dataset.name)
                    if native_ds is not None:
                        overrides["dataset.shape"] = list(native_ds.input_shape)
            task = load_task(path, overrides, profile)
            if not bench:
                datasets.add(task.dataset.name)
                check_model_fits(registry, task)
            label = path.stem if task_name == str(path) else task_name
            for backend in backends:
                for device in args.device:
                    cells.append(Cell(run_id=run_id, backend=backend, task=label, task_path=str(path.resolve()),
                                      device=device, overrides=overrides, profile=profile, threads=threads,
                                      timeout_s=args.timeout, memory_limit_mb=args.memory_limit,
                                      data_dir=str(args.data_dir) if args.data_dir else None,
                                      save_weights=_save_weights_dir(args)))
    for name in sorted(datasets):
        _ensure_dataset(registry, name, args.data_dir)
    peak = _machine_peak(registry, getattr(args, "peak", "off"), threads, backends)
    if peak:
        info = {k: peak.get(k) for k in ("gflops", "best_backend", "bandwidth_gbps", "source",
                                          "measured_at", "key", "threads")}
        info["per_backend_gflops"] = {name: v.get("gflops") for name, v in (peak.get("per_backend") or {}).items()}
        cells = [replace(c, peak_flops=peak["gflops"] * 1e9, peak_info=info) for c in cells]
    run_dir = args.out / run_id
    return Plan(cells, run_dir, finished_cell_ids(run_dir) if resume_dir else set(),
                {"run_id": run_id, "argv": list(map(str, getattr(args, "argv", []))), "threads": threads})


def _save_weights_dir(args) -> str | None:
    """``--save-weights DIR`` as an absolute folder (cells run in their own processes)."""
    folder = getattr(args, "save_weights", None)
    return str(Path(folder).resolve()) if folder else None


def _machine_peak(registry, mode, threads: int, run_backends: list[str]) -> dict[str, Any] | None:
    """``--peak``: "off" (none), a number (GFLOP/s, given), or "auto" (cached or measured once,
    with every available backend that has microbenchmark ops; see `fwbench.peak`)."""
    if mode in (None, "off"):
        return None
    if mode != "auto":
        try:
            gflops = float(mode)
        except ValueError:
            raise UsageError(f"--peak {mode!r}: expected auto, off or a number of GFLOP/s (e.g. --peak 150)") from None
        if gflops <= 0:
            raise UsageError(f"--peak {mode!r}: the peak must be > 0 GFLOP/s")
        return {"gflops": gflops, "source": "command line", "per_backend": {}}
    from .display import make_console
    from .peak import resolve_peak

    console = make_console(stderr=True)
    available = [n for n, b in sorted(registry.backends.items()) if b.availability().ok]
    peak = resolve_peak(run_backends, available, threads, progress=lambda m: console.print(m, style="dim"))
    if peak is None:
        console.print("machine peak: could not be measured (no backend has a matmul op); "
                      "records carry no percent_of_peak", style="yellow")
        return None
    console.print(f"machine peak: {peak['gflops']:,.1f} GFLOP/s float32 matmul ({peak.get('best_backend')}), "
                  f"{peak.get('bandwidth_gbps') or float('nan'):,.1f} GB/s; {peak['source']}"
                  + (f"; not measured yet: {', '.join(peak['not_measured'])}" if peak.get("not_measured") else "")
                  + " (measure all again: bench info --peak)", style="dim")
    return peak


def run_planned(plan: Plan, args) -> int:
    import sys

    from .display import RunDisplay, make_console, results_notes, results_table
    from .plugins import get_registry

    registry = get_registry()
    executor = registry.executors[args.executor](**vars(args))
    console = make_console(stderr=True)
    todo = len(plan.cells) - len(plan.resume_done & {c.cell_id for c in plan.cells})
    console.print(f"fwbench run [bold]{plan.run_dir.name}[/]: {len(plan.cells)} cell(s), {todo} to run, "
                  f"{plan.cells[0].threads if plan.cells else 0} thread(s) each → {plan.run_dir}")
    show = not args.no_progress and sys.stderr.isatty()
    with RunDisplay(todo, console, enabled=show) as display:
        outcome = execute(plan.cells, plan.run_dir, executor, resume_done=plan.resume_done,
                          display=display, manifest=plan.manifest)
    from .results import load_records

    records = [r for r in load_records(plan.run_dir) if r.get("cell_id") in {c.cell_id for c in plan.cells}]
    out = make_console()
    out.print(results_table(records, title=f"Results of run {plan.run_dir.name}"))
    from .bench_display import cases_tables

    for table in cases_tables(records):
        out.print(table)
    for line in results_notes(records):
        out.print(line)
    out.print(f"records: {plan.run_dir}")
    if getattr(args, "report", None) is not None:
        from .report import write_report

        report_path = Path(args.report) if args.report else plan.run_dir / "report.html"
        write_report(records, report_path)
        out.print(f"report: {report_path}")
    failed = [r for r in outcome.records if r.get("status") in ("failed", "timeout")]
    return 1 if failed else 0
