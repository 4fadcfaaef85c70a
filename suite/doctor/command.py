"""``bench doctor``: prove this machine is measured right, for every available backend on a device.

For the device (``--device cpu|gpu``) it checks, and prints as one pass/fail/skip table:

* ``gpu`` (GPU only): the GPUs and driver ``nvidia-smi`` sees;
* ``peak`` / ``bandwidth``: the device's measured matmul peak and memory bandwidth
  (`fwbench.micro.peak`, cached; ``--refresh-peak`` measures again);
* per backend, in its own process (`fwbench.doctor.probe`): the device and driver the framework
  sees, the thread and affinity settings in force, the sync audit, the peak-memory reading;
* ``conformance``: `bench check` on that device (`fwbench.conformance.checks`), per backend.

Every check reports pass, fail or skip with its reason; nothing crashes the command. Exit code 1
on any failure, 0 otherwise (``--json`` prints the rows for scripts).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .probe import FAIL, PASS, SKIP, check, one_line

#: The tasks `bench check` runs by default here: one dense and one convolutional network.
DEFAULT_TASKS = ("mlp_mnist", "cnn_mnist")
PROBE_TIMEOUT_S = 600.0


def _backends(registry, names: list[str] | None, device: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The backends to check, and rows for the others: a named one that is unavailable fails; on
    a GPU, by default, a backend that sees no GPU is skipped (named, it is checked and fails)."""
    rows = []
    if names:
        for name in names:
            registry.get_backend(name)  # an unknown name is bad input: one line, exit 2
        chosen = names
    else:
        chosen = sorted(registry.backends)
    available = []
    for name in chosen:
        backend = registry.get_backend(name)
        status = backend.availability()
        if not status.ok:  # named: a failure; by default: said, and skipped
            rows.append({"backend": name, **check("available", FAIL if names else SKIP, str(status))})
            continue
        if device == "gpu" and not names:  # by default: the backends that can use this GPU
            try:
                sees = backend.gpu_available()
            except Exception as exc:  # noqa: BLE001
                rows.append({"backend": name, **check("device", FAIL, f"asking for a GPU failed: {one_line(exc)}")})
                continue
            if not sees:
                rows.append({"backend": name, **check("device", SKIP, "sees no GPU (a CPU-only backend, or no GPU "
                                                      "build installed); name it with --backend to fail on it")})
                continue
        available.append(name)
    return available, rows


def _gpu_row() -> dict[str, Any]:
    from ..records.environment import gpu_info

    gpus = gpu_info()
    if not gpus:
        return {"backend": "machine", **check("gpu", FAIL, "nvidia-smi sees no GPU (no driver, or no GPU here)")}
    names = "; ".join(f"{g.get('name')} (driver {g.get('driver_version')}, {g.get('memory.total')})" for g in gpus)
    return {"backend": "machine", **check("gpu", PASS, names, gpus=gpus,
                                          cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))}


def _peak_rows(backends: list[str], threads: int, device: str,
               refresh: bool) -> tuple[list[dict[str, Any]], float | None]:
    from ..micro.peak import machine_peak

    try:
        peak = machine_peak(device, threads, backends, refresh=refresh)
    except Exception as exc:  # noqa: BLE001
        return [{"backend": "machine", **check("peak", FAIL, one_line(exc))}], None
    if peak is None:
        return [{"backend": "machine", **check("peak", FAIL, f"no backend could measure a matmul on the {device}")},
                {"backend": "machine", **check("bandwidth", SKIP, "no peak")}], None
    per_backend = peak.details.get("per_backend") or {}
    errors = {n: v.get("error") for n, v in per_backend.items() if v.get("error")}
    detail = (f"{peak.gflops:,.1f} GFLOP/s float32 matmul ({peak.best_backend}, {peak.source}) on "
              f"{peak.details.get('device_name') or device}" + (f"; failed: {errors}" if errors else ""))
    rows = [{"backend": "machine", **check("peak", PASS, detail, per_backend={
        n: v.get("gflops") for n, v in per_backend.items()})}]
    bandwidth = peak.bandwidth_gbps
    rows.append({"backend": "machine", **(
        check("bandwidth", PASS, f"{bandwidth:,.1f} GB/s ({(peak.details.get('bandwidth') or {}).get('backend', 'numpy')})")
        if bandwidth else check("bandwidth", FAIL, f"no memory bandwidth measured on the {device}"))})
    return rows, peak.gflops


def run_probe(backend: str, device: str, threads: int, peak_gflops: float | None,
              timeout: float = PROBE_TIMEOUT_S) -> list[dict[str, Any]]:
    """`fwbench.doctor.probe` in a fresh process with the run's thread variables."""
    from ..run.local import THREAD_ENV
    from ..run.process import die_with_parent

    env = {**os.environ, **{name: str(threads) for name in THREAD_ENV}}
    cmd = [sys.executable, "-m", "fwbench.doctor.probe", backend, device, str(threads),
           "none" if peak_gflops is None else repr(peak_gflops)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
                              check=False, preexec_fn=die_with_parent())
    except subprocess.TimeoutExpired:
        return [check("device", FAIL, f"the probe timed out after {timeout:g} s")]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return [check("device", FAIL, f"the probe process failed (exit {proc.returncode}): {tail[0]}")]


def _conformance_rows(backends: list[str], tasks: list[str], device: str) -> list[dict[str, Any]]:
    from ..conformance.checks import REFERENCE
    from ..conformance.runner import check_variants, run_checks
    from ..plugins import get_registry

    try:  # a frontend on every installed engine, as `bench check` does
        checks = run_checks(check_variants(get_registry(), backends, []), tasks, device=device)
    except Exception as exc:  # noqa: BLE001
        return [{"backend": b, **check("conformance", FAIL, one_line(exc))} for b in backends]
    rows = []
    for backend in backends:  # a frontend's rows are labelled "keras[jax]", "flax[jax]"...
        mine = [c for c in checks if c.backend.split("[")[0] == backend and not c.skipped]
        failed = [c for c in mine if not c.passed]
        if not mine:
            rows.append({"backend": backend, **check("conformance", FAIL, "no check ran")})
        elif failed:
            worst = failed[0]
            rows.append({"backend": backend, **check("conformance", FAIL, f"{len(failed)} of {len(mine)} failed; "
                                                     f"first: {worst.task} {worst.quantity} {worst.note}".strip())})
        else:
            rows.append({"backend": backend, **check("conformance", PASS, f"{len(mine)} checks against the {REFERENCE} "
                                                     f"float64 reference ({', '.join(tasks)})")})
    return rows


def doctor_rows(args) -> list[dict[str, Any]]:
    from ..plugins import get_registry
    from ..run.placement import available_cores, threads_per_cell

    registry = get_registry()
    backends, rows = _backends(registry, args.backend, args.device)
    threads = threads_per_cell(args.threads, 1, available_cores())  # as `bench run` gives a cell
    if args.device == "gpu":
        rows.append(_gpu_row())
    peak_rows, peak_gflops = _peak_rows(backends, threads, args.device, args.refresh_peak)
    rows += peak_rows
    for task in args.task:
        registry.get_task_file(task)  # an unknown task is bad input: refused before anything runs
    working = []
    for backend in backends:
        probed = run_probe(backend, args.device, threads, peak_gflops)
        rows += [{"backend": backend, **row} for row in probed]
        if any(r["check"] == "device" and r["status"] == PASS for r in probed):
            working.append(backend)
    rows += [{"backend": b, **check("conformance", SKIP, f"not on the {args.device}: see its device check")}
             for b in backends if b not in working]
    if args.no_conformance:
        rows += [{"backend": b, **check("conformance", SKIP, "--no-conformance")} for b in working]
    elif working:
        rows += _conformance_rows(working, args.task, args.device)
    if not backends:
        where = "sees a GPU" if args.device == "gpu" else "is available"
        rows.append({"backend": "-", **check("backends", FAIL, f"no backend {where}; see `bench list backends`")})
    return rows


def cmd_doctor(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..run.display import make_console

    rows = doctor_rows(args)
    failed = [r for r in rows if r["status"] == FAIL]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 1 if failed else 0
    table = Table(title=f"bench doctor --device {args.device}", header_style="bold", title_justify="left")
    for column in ("backend", "check", "result", "detail"):
        table.add_column(column)
    colour = {PASS: "green", FAIL: "red", SKIP: "yellow"}
    for row in rows:
        table.add_row(row["backend"], row["check"], f"[{colour[row['status']]}]{row['status']}[/]", escape(row["detail"]))
    console = make_console()
    console.print(table)
    counts = {s: sum(r["status"] == s for r in rows) for s in (PASS, FAIL, SKIP)}
    console.print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    return 1 if failed else 0
