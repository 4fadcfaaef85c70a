"""``bench check`` around the checks of `fwbench.conformance.checks`: which (backend, options) variants
are checked, each backend in its own process (each task standing alone), and the summary table."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np

from ..errors import UsageError
from ..frontends import bind, conformance_variants_of
from ..options import resolve_options
from ..spec import parse_value
from .checks import Check, training_tasks


def run_checks(backends: list[str | tuple[str, dict]], tasks: list[str] | None, timeout: float = 1800,
               device: str = "cpu", precision: str = "fp32") -> list[Check]:
    """Each backend (a name, or ``(name, [backend] options)``) in its own process, each task
    standing alone: the process prints one line per finished task; one that dies (or times out)
    fails the task it was on, keeps the finished ones and is started again for the rest."""
    from ..plugins import get_registry

    tasks = list(tasks or training_tasks(get_registry()))
    results = []
    for entry in backends:
        backend, options = (entry, {}) if isinstance(entry, str) else entry
        label = backend + (f"[{','.join(f'{k}={v}' for k, v in options.items())}]" if options else "")
        todo = list(tasks)
        while todo:
            done, reason = _check_process(backend, todo, timeout, device, options, precision)
            for rows in done.values():
                results += [Check(**row) for row in rows]
            todo = [t for t in todo if t not in done]
            if todo:  # the process ended inside todo[0]
                results.append(Check(label, todo[0], "task", np.nan, np.nan, False, reason))
                todo = todo[1:]
    return results


def _check_process(backend: str, tasks: list[str], timeout: float, device: str = "cpu",
                   options: dict | None = None, precision: str = "fp32") -> tuple[dict[str, list[dict]], str]:
    """Run ``python -m fwbench.conformance.checks BACKEND TASK... --device DEVICE [--options JSON]``; the
    rows of each finished task and, if it did not finish them all, why."""
    module = "fwbench.conformance.checks" if precision == "fp32" else "fwbench.conformance.precision"
    cmd = [sys.executable, "-m", module, backend, *tasks, "--device", device]
    if options:
        cmd += ["--options", json.dumps(options)]
    if precision != "fp32":
        cmd += ["--precision", precision]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        stdout, stderr, why = proc.stdout, proc.stderr, f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as exc:
        decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        stdout, stderr, why = decode(exc.stdout), decode(exc.stderr), f"timed out after {timeout:g} s"
    done = {}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and "task" in item:
            done[item["task"]] = item["checks"]
    tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    return done, f"check process died in this task ({why}): {tail[0]}"


#: ``bench check --set precision=bf16`` (or ``training.precision=…``): the policy to check.
PRECISION_KEYS = ("precision", "training.precision")


def check_precision(items: list[str]) -> str:
    """The precision policy asked for by ``--set precision=…`` (default fp32); exit 2 for a bad one."""
    from ..precision import PRECISIONS

    chosen = "fp32"
    for item in items:
        key, _, value = item.partition("=")
        if key.strip() in PRECISION_KEYS:
            chosen = value.strip()
            if chosen not in PRECISIONS:
                raise UsageError(f"bad --set {item!r}: bench check takes one precision, one of: "
                                 f"{', '.join(PRECISIONS)}")
    return chosen


def backend_options(items: list[str]) -> dict[str, Any]:
    """``["backend.mode=native"]`` -> ``{"mode": "native"}``; only ``backend.*`` keys (and the
    precision, read by `check_precision`)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if key.strip() in PRECISION_KEYS:
            continue
        if not sep or not key.startswith("backend.") or len(key) <= len("backend."):
            raise UsageError(f"bad --set {item!r}: bench check takes backend options only (and the "
                             "precision), e.g. --set backend.mode=native, --set backend.engine=jax or "
                             "--set precision=bf16")
        options[key[len("backend."):]] = parse_value(value.strip())
    return options


def check_variants(registry, backends: list[str], items: list[str]) -> list[tuple[str, dict]]:
    """Each backend with each option table to check: the given options, on every installed engine
    of a frontend unless ``backend.engine`` is given. Options are validated here (exit 2)."""
    options = backend_options(items)
    out = []
    for name in backends:
        backend = registry.get_backend(name)
        variants = [{}] if "engine" in options else conformance_variants_of(backend)
        for variant in variants:
            table = {**variant, **options}
            if table:
                resolve_options(backend, options, "--set",
                                others=[registry.get_backend(b) for b in backends if b != name])
                bind(backend, table, "--set")  # raises SpecError for an unknown value
            out.append((name, table))
    return out


def summary_table(checks: list[Check], skipped: list[tuple[str, str]] = ()):
    """One row per (backend, task, quantity group): the largest errors and pass/fail; one row per
    skipped (unavailable) backend with the reason."""
    from rich.markup import escape
    from rich.table import Table

    groups: dict[tuple[str, str, str], list[Check]] = {}
    for check in checks:
        prefix = check.quantity.split(":")[0]
        group = prefix if prefix in ("grad", "fd") else check.quantity
        groups.setdefault((check.backend, check.task, group), []).append(check)
    policies = {c.quantity.split(":")[0] for c in checks if c.quantity[:4] in ("bf16", "fp16", "tf32")}
    against = f"the NumPy reference under {', '.join(sorted(policies))}" if policies else "the NumPy float64 reference"
    table = Table(title=f"Conformance against {against}", header_style="bold")
    for col in ("backend", "task", "quantity", "max abs err", "max rel err", "result"):
        table.add_column(col, justify="right" if "err" in col else "left")
    for (backend, task, group), items in groups.items():
        if all(c.skipped for c in items):
            table.add_row(backend, task, group, "—", "—", f"[yellow]skipped[/] {items[0].note}")
            continue
        items = [c for c in items if not c.skipped]
        ok = all(c.passed for c in items)
        worst = max(items, key=lambda c: (c.passed, -(c.max_abs if np.isfinite(c.max_abs) else np.inf)))
        label = f"{group} ({len(items)})" if len(items) > 1 else group
        note = "" if ok else f" {worst.quantity} {worst.note}".rstrip()
        explained = next((c.note for c in items if c.passed and c.note), "")  # native mode
        result = f"[red]FAIL[/]{escape(note)}" if not ok else (
            f"[yellow]{escape(explained)}[/]" if explained else "[green]pass[/]")
        table.add_row(escape(backend), task, label, f"{max(c.max_abs for c in items):.2e}",
                      f"{max(c.max_rel for c in items):.2e}", result)
    for backend, reason in skipped:
        table.add_row(escape(backend), "*", "-", "", "", f"[yellow]skipped[/] {escape(reason)}")
    return table


