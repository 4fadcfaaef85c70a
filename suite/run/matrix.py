"""``bench run`` as a library: check every input up front, plan the cells, run them, print the table.

`plan_run` and `run_planned` take a `fwbench.run.options.RunOptions` (the command builds it from
its flags, `fwbench.commands.run`); errors name the flag a field stands for (exit 2 in the CLI)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, UsageError
from ..frontends import bind, runs_on_engine
from ..options import applicable_overrides, resolve_options
from .cell import Cell, new_run_id
from .local import execute, finished_cell_ids, latest_run_dir, runs_to_do
from .options import RunOptions
from .placement import available_cores, threads_per_cell

#: Repeats (fresh processes) per cell when `bench run --repeat` is not given: the fewest that give a
#: repeat-level interval with the main job inside 3 minutes on the 2-core reference machine (README).
DEFAULT_REPEATS = 3


@dataclass
class Plan:
    """The cells of one run, its folder, the cells a ``--resume`` finds done, the ``run.json`` manifest."""

    cells: list[Cell]
    run_dir: Path
    resume_done: set[str] = field(default_factory=set)
    manifest: dict[str, Any] = field(default_factory=dict)


def default_repeats() -> int:
    """``--repeat`` when not given: $FWBENCH_REPEAT if set, else `DEFAULT_REPEATS`."""
    text = os.environ.get("FWBENCH_REPEAT", "").strip()
    if not text:
        return DEFAULT_REPEATS
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"FWBENCH_REPEAT={text!r}: expected a positive integer (the default of --repeat); "
                         "unset it or set e.g. FWBENCH_REPEAT=3")
    return int(text)


def pick_backends(registry, names: Sequence[str] | None) -> list[str]:
    """``names``, each checked available, or (none given) every available backend."""
    if names:
        for name in names:
            backend = registry.get_backend(name)
            availability = backend.availability()
            if not availability.ok:
                raise BackendUnavailable(f"backend {name!r} is {availability}")
        return list(names)
    available = [n for n, b in sorted(registry.backends.items()) if b.availability().ok]
    if not available:
        raise BackendUnavailable("no backend is available; see `bench list backends`")
    return available


def ensure_dataset(registry, name: str, data_dir: Path | None) -> None:
    """Fail before any cell runs if a dataset is neither packaged, cached nor downloadable."""
    from ..datasets.base import default_data_dir

    dataset = registry.get_dataset(name)
    data_dir = data_dir or default_data_dir()
    if dataset.offline or dataset.is_cached(data_dir):
        return
    dataset.fetch(data_dir, progress=True)  # raises DatasetError with the offline alternatives


def plan_run(options: RunOptions) -> Plan:
    """The cells of ``options``' matrix, every input checked before any cell runs (`UsageError`...)."""
    from ..plugins import get_registry
    from ..spec import is_bench_spec, load_task, parse_overrides
    from .preflight import refuse_before_cells

    registry = get_registry()
    if options.executor not in registry.executors:
        from ..errors import UnknownNameError

        raise UnknownNameError("executor", options.executor, list(registry.executors))
    if options.executor == "local" and (options.workers or options.scheduler):
        raise UsageError("--workers/--scheduler only apply to --executor dask; add --executor dask or drop them")
    backends = pick_backends(registry, options.backends)
    for device in options.devices:
        if device not in ("cpu", "gpu", "auto"):
            raise UsageError(f"unknown device {device!r} in --device; expected cpu, gpu or auto")
    grid = parse_overrides(list(options.overrides))
    scenario = _scenario_overrides(options)
    threads = threads_per_cell(options.threads, options.workers or 1, available_cores())
    profile = None if options.profile == "full" else options.profile
    repeats = options.repeats or default_repeats()
    resume_dir = latest_run_dir(options.out) if options.resume else None
    if options.resume and resume_dir is None:
        raise UsageError(f"--resume: no earlier run in {options.out}; drop --resume to start a new run")
    run_id = resume_dir.name if resume_dir else new_run_id()

    cells, datasets, seen = [], set(), set()
    selected, registered = [registry.get_backend(b) for b in backends], list(registry.backends.values())
    for task_name in options.tasks:
        path = registry.get_task_file(task_name)
        native = load_task(path, profile=profile)  # validates the file itself first
        bench = is_bench_spec(native)  # a microbenchmark: no dataset, --dataset does not apply
        for overrides in grid:
            overrides = {**scenario, **overrides}
            if options.dataset and not bench:
                overrides["dataset.name"] = options.dataset
                if options.dataset == "synthetic" and "dataset.shape" not in overrides:
                    native_ds = registry.datasets.get(native.dataset.name)
                    if native_ds is not None:
                        overrides["dataset.shape"] = list(native_ds.input_shape)
            task = load_task(path, overrides, profile)
            if bench and getattr(task.task, "scenario", "training") == "inference":
                raise UsageError(f"--scenario inference: {task_name!r} is a microbenchmark ({task.task.family}), "
                                 "not a model to serve; give a training task (bench list tasks)")
            if not bench:
                datasets.add(task.dataset.name)
                refuse_before_cells(registry, task)  # shapes, classes, batch vs split, memory
                if task.task.scenario == "inference":
                    from ..inference.scenario import check_servable

                    check_servable(registry, task)
            label = path.stem if task_name == str(path) else task_name
            for backend in backends:  # refuse bad [backend] options (an unknown key or engine) up front
                plugin = registry.get_backend(backend)
                check_backend_options(plugin, task, selected, registered, overrides)
                if not runs_on_engine(plugin, overrides):
                    continue  # --set backend.engine=jax,torch: raw torch only in the torch column
                own = applicable_overrides(plugin, overrides)  # another backend's option: not this cell's
                key = (backend, label, repr(sorted(own.items(), key=str)))
                if key in seen:
                    continue  # -b numpy,torch --set compile=true,false: numpy runs once
                seen.add(key)
                for device in options.devices:
                    cells.append(Cell(run_id=run_id, backend=backend, task=label, task_path=str(path.resolve()),
                                      device=device, overrides=own, profile=profile, threads=threads,
                                      timeout_s=options.timeout_s, memory_limit_mb=options.memory_limit_mb,
                                      data_dir=str(options.data_dir) if options.data_dir else None,
                                      save_weights=_save_weights_dir(options), repeats=repeats))
    _check_engines(backends, cells, grid)
    for name in sorted(datasets):
        ensure_dataset(registry, name, options.data_dir)
    cells = _with_peaks(cells, registry, options.peak, threads, backends, options.devices)
    run_dir = options.out / run_id
    return Plan(cells, run_dir, finished_cell_ids(run_dir) if resume_dir else set(),
                {"run_id": run_id, "argv": list(options.argv), "threads": threads,
                 "repeats": repeats})


def check_backend_options(plugin, task, selected: list, registered: list, overrides: dict) -> None:
    """Refuse a ``[backend]`` key that no backend declares, or a value ``plugin`` refuses (exit 2).

    A ``--set backend.KEY`` must be declared by a backend of the run (``selected``); a key of the
    task file, which serves every backend, by any registered one. Errors name the file or the flag."""
    from_set = {k[len("backend."):] for k in overrides if k.startswith("backend.")}
    from_file = {k: v for k, v in task.backend.items() if k not in from_set}
    resolve_options(plugin, from_file, task.source, others=[b for b in registered if b is not plugin])
    resolve_options(plugin, {k: task.backend[k] for k in from_set if k in task.backend}, "--set",
                    others=[b for b in selected if b is not plugin])
    bind(plugin, task.backend, task.source)


def _check_engines(backends: list[str], cells: list[Cell], grid: list[dict]) -> None:
    """A backend left with no cell by a ``backend.engine`` grid is a mistake: say so."""
    engines = sorted({str(o["backend.engine"]) for o in grid if "backend.engine" in o})
    for name in backends:
        if engines and not any(c.backend == name for c in cells):
            raise UsageError(f"--set backend.engine={','.join(engines)}: backend {name!r} runs on none of "
                             f"these engines; drop it from --backend or add its engine to the list")


def _scenario_overrides(options: RunOptions) -> dict[str, Any]:
    """``--scenario`` and ``--weights`` as overrides (so they show in the cell id and the record)."""
    out: dict[str, Any] = {}
    scenario, weights = options.scenario, options.weights
    if scenario:
        out["scenario"] = scenario
    if weights is not None:
        if scenario != "inference":
            raise UsageError(f"--weights {weights}: serves a checkpoint, so it needs --scenario inference; "
                             "to train from it instead use --set model.init_from=PATH")
        if not Path(weights).is_file():
            raise UsageError(f"--weights {weights}: no such file; give an .npz written by `bench run --save-weights DIR`")
        out["inference.weights"] = str(Path(weights).resolve())
    return out


def _save_weights_dir(options: RunOptions) -> str | None:
    """``--save-weights DIR`` as an absolute folder (cells run in their own processes)."""
    folder = options.save_weights
    return str(Path(folder).resolve()) if folder else None


def _with_peaks(cells: list[Cell], registry, mode, threads: int, backends: list[str],
                devices: Sequence[str]) -> list[Cell]:
    """Each cell with the peak of every device it may run on (an ``auto`` cell: both), so that
    the worker judges it against its own device's peak (`fwbench.micro.peak.peak_for_cell`)."""
    wanted = sorted({d for device in devices for d in (("cpu", "gpu") if device == "auto" else (device,))})
    by_device: dict[str, Any] = {}
    for device in wanted:
        peak = _machine_peak(registry, mode, threads, backends, device, required=device in devices)
        if peak:
            by_device[device] = peak.summary()
    by_precision = _precision_peaks(cells, registry, mode, threads, backends, [d for d in wanted if d in by_device])
    if not by_device:
        return cells
    return [replace(c, peak_flops=(by_device.get(c.device) or {}).get("gflops", 0) * 1e9 or None,
                    peak_info={"by_device": by_device, "by_precision": by_precision}) for c in cells]


def _precision_peaks(cells: list[Cell], registry, mode, threads: int, backends: list[str],
                     devices: list[str]) -> dict[str, dict[str, Any]]:
    """``{device: {precision: peak summary}}`` for the cells' ``--set training.precision`` other
    than fp32 (`fwbench.micro.peak.peak_precision`); one not measured is said, never replaced by fp32's."""
    from ..micro.peak import machine_peak, peak_backends, peak_precision

    out: dict[str, dict[str, Any]] = {}
    asked = {str(c.overrides.get("training.precision") or "fp32") for c in cells}
    for device in devices:
        for precision in sorted({peak_precision(p, device) for p in asked} - {"fp32"}):
            peak = None if mode != "auto" else machine_peak(device, threads, backends, among=peak_backends(registry),
                                                            precision=precision)
            if peak is not None:
                out.setdefault(device, {})[precision] = peak.summary()
            _say_once(  # "not measured" (a backend without such ops planned first) is said apart
                (device, precision, peak is not None), f"machine peak ({device}, {precision}): " + (
                    f"{peak.gflops:,.1f} GFLOP/s ({peak.best_backend}); {peak.source}" if peak else
                    f"not measured for {precision} ("
                    + ("no backend of this run multiplies in it" if mode == "auto" else "--peak gives fp32's")
                    + f"); {precision} cells carry no percent_of_peak"))
    return out


#: the peak lines said since the last run started (`run_planned` clears it)
_said: set[tuple] = set()


def _say_once(peak: tuple, message: str) -> None:
    """Print the line about one ``(device, precision[, found])`` peak on stderr once per run
    (`bench tune` plans the cells once per configuration: the first plan measures, the others read
    the cache)."""
    from .display import make_console

    if peak not in _said:
        _said.add(peak)
        make_console(stderr=True).print(message, style="dim")


def _machine_peak(registry, mode, threads: int, run_backends: list[str], device: str = "cpu",
                  required: bool = True):
    """``--peak``: "off" (None), a number (GFLOP/s, given), or "auto" (cached or measured once,
    with every available backend that has microbenchmark ops): a `fwbench.micro.peak.Peak`."""
    from ..micro.peak import machine_peak, peak_backends

    if mode in (None, "off"):
        return None
    if mode != "auto":
        try:
            gflops = float(mode)
        except ValueError:
            raise UsageError(f"--peak {mode!r}: expected auto, off or a number of GFLOP/s (e.g. --peak 150)") from None
        if gflops <= 0:
            raise UsageError(f"--peak {mode!r}: the peak must be > 0 GFLOP/s")
        return machine_peak(device, threads, given=gflops, given_as="command line")
    from .display import make_console
    from .placement import visible_gpus

    console = make_console(stderr=True)
    if device == "gpu" and not visible_gpus():  # nothing to measure on (an auto cell will use the CPU)
        if required:
            console.print("machine peak (gpu): no GPU visible here (nvidia-smi); GPU records carry no percent_of_peak",
                          style="yellow")
        return None
    # Only backends with a matmul op can measure a peak; the others are never tried (their cells
    # carry the machine's peak with the backend that measured it, `best_backend`).
    among = peak_backends(registry)
    without_ops = [n for n in run_backends if n not in among]
    if without_ops:
        console.print(f"machine peak: {', '.join(without_ops)} ha{'s' if len(without_ops) == 1 else 've'} no "
                      "microbenchmark ops; not measured with it", style="dim")
    peak = machine_peak(device, threads, run_backends, among=among, progress=lambda m: console.print(m, style="dim"))
    if peak is None:
        console.print(f"machine peak ({device}): could not be measured (no backend has a matmul op on it); "
                      f"{device} records carry no percent_of_peak", style="yellow")
        return None
    not_measured = peak.details.get("not_measured")
    _say_once((device, "fp32"), f"machine peak ({device}): {peak.gflops:,.1f} GFLOP/s float32 matmul ({peak.best_backend}), "
              f"{peak.bandwidth_gbps or float('nan'):,.1f} GB/s; {peak.source}"
              + (f"; not measured yet: {', '.join(not_measured)}" if not_measured else "")
              + " (measure all again: bench info --peak)")
    return peak


def run_planned(plan: Plan, options: RunOptions) -> int:
    """Run ``plan`` with ``options``' executor, print the tables; 1 if a cell failed or timed out, else 0."""
    import sys

    _said.clear()  # the next run's plans say their peaks again
    from ..plugins import get_registry
    from .display import RunDisplay, make_console, results_notes, results_table

    registry = get_registry()
    executor = registry.executors[options.executor](options.executor_options)  # fwbench.run.executor
    if hasattr(executor, "prepare"):  # a PreparingExecutor: refuses what it cannot run before any cell starts
        executor.prepare(plan.cells)
    console = make_console(stderr=True)
    todo = runs_to_do(plan.cells, plan.run_dir, plan.resume_done)
    repeats = plan.cells[0].repeats if plan.cells else 1
    console.print(f"fwbench run [bold]{plan.run_dir.name}[/]: {len(plan.cells)} cell(s) × {repeats} repeat(s), "
                  f"{todo} process(es) to run, {plan.cells[0].threads if plan.cells else 0} thread(s) each "
                  f"→ {plan.run_dir}")
    show = options.progress and sys.stderr.isatty()
    with RunDisplay(todo, console, enabled=show) as display:
        outcome = execute(plan.cells, plan.run_dir, executor, resume_done=plan.resume_done,
                          display=display, manifest=plan.manifest)
    from ..records.results import load_records

    records = [r for r in load_records(plan.run_dir) if r.get("cell_id") in {c.cell_id for c in plan.cells}]
    out = make_console()
    from ..inference.records import inference_table, is_inference

    if any(not is_inference(r) for r in records):
        out.print(results_table([r for r in records if not is_inference(r)],
                                title=f"Results of run {plan.run_dir.name}"))
    if (served := inference_table(records, title=f"Inference in run {plan.run_dir.name}")) is not None:
        out.print(served)
    from ..micro.tables import cases_tables

    for table in cases_tables(records):
        out.print(table)
    for line in results_notes(records):
        out.print(line)
    out.print(f"records: {plan.run_dir}")
    if options.report:
        from ..report import write_report

        report_path = options.report_file or plan.run_dir / "report.html"
        write_report(records, report_path)
        out.print(f"report: {report_path}")
    failed = [r for r in outcome.records if r.get("status") in ("failed", "timeout")]
    return 1 if failed else 0
