"""The driver: a matrix of cells, each run in its own process, each record written as it ends.

A crash, hang, kill or exception inside a cell becomes a failed record and the run goes on.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..records.record import new_record
from ..records.results import now_iso, read_record, write_record
from .cell import Cell
from .placement import claim_for_cell, with_placement
from .process import die_with_parent

if TYPE_CHECKING:
    from .executor import ExecutorOptions

#: Environment variables that pin a native library's thread pool; set for every cell alike.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def failed_record(cell: Cell, status: str, error: str, **extra) -> dict[str, Any]:
    """The record for a cell whose process never produced one (killed, hung, crashed)."""
    return new_record(run_id=cell.run_id, cell_id=cell.cell_id, backend=cell.backend, task=cell.task,
                      device=cell.device, overrides=cell.overrides, profile=cell.profile, status=status,
                      error=error, finished_at=now_iso(), **extra)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _limit_memory(megabytes: int | None):
    if not megabytes:
        return None

    def apply():  # runs in the child between fork and exec
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def run_cell_subprocess(cell: Cell, run_dir: Path, on_output: Callable[[str], None] | None = None) -> dict:
    """Run one cell in a fresh interpreter; always returns a record (never raises for the cell)."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{cell.log_name}.log"
    env = dict(os.environ)
    env.update({name: str(cell.threads) for name in THREAD_ENV})
    env["PYTHONUNBUFFERED"] = "1"
    started_at = now_iso()
    with tempfile.TemporaryDirectory(prefix="fwbench-cell-") as tmp, claim_for_cell(cell, env) as claim:
        cell_file, result_file = Path(tmp) / "cell.json", Path(tmp) / "result.json"
        cell_file.write_text(json.dumps({**cell.to_dict(), "cpus": claim.cpus}))
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "fwbench.run.worker", str(cell_file), str(result_file)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True,
                                    # async-signal-safe calls only (prctl, sched_setaffinity, setrlimit)
                                    preexec_fn=die_with_parent(_limit_memory(cell.memory_limit_mb),  # noqa: PLW1509
                                                               cpus=claim.cpus))
            timed_out = False
            while proc.poll() is None:
                if time.perf_counter() - started > cell.timeout_s:
                    timed_out = True
                    _kill_group(proc)
                    break
                if on_output:
                    on_output(_last_line(_tail(log_path, 400)))
                time.sleep(0.2)
            proc.wait()
        wall = time.perf_counter() - started
        return with_placement(_collect(cell, proc, timed_out, wall, log_path, result_file), claim, started_at)


def _collect(cell: Cell, proc, timed_out: bool, wall: float, log_path: Path, result_file: Path) -> dict:
    """The record of a finished cell process: its own, or a failed one saying why there is none."""
    tail = _tail(log_path)
    if timed_out:
        return failed_record(cell, "timeout", f"timed out after {cell.timeout_s:g} s and was killed "
                             f"(raise --timeout); last output: {_last_line(tail) or '(none)'}",
                             wall_s=wall, log=str(log_path))
    if result_file.exists():
        try:
            record = json.loads(result_file.read_text())
            record["log"] = str(log_path)
            return record
        except (OSError, json.JSONDecodeError) as exc:
            reason = f"the cell's result file was unreadable ({exc})"
    elif proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (out of memory?)" if sig == "SIGKILL" else ""
        reason = f"the cell's process was killed by {sig}{hint}"
    else:
        reason = f"the cell's process exited with code {proc.returncode} without a result"
    last = _last_line(tail)
    if "MemoryError" in tail:
        reason += "; MemoryError (over the memory limit?)"
    return failed_record(cell, "failed", f"{reason}; last output: {last or '(none)'}",
                         wall_s=wall, log=str(log_path), output_tail=tail[-2000:])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class LocalExecutor:
    """One cell at a time, each in its own process, so cells never share cores while timing."""

    name = "local"

    def __init__(self, options: ExecutorOptions | None = None):
        """``options``: unused (one cell at a time, on this machine); taken as every factory is."""

    def run(self, cells: list[Cell], run_dir: Path, on_record: Callable[[Cell, dict], None],
            on_start: Callable[[Cell], None], on_output: Callable[[str], None]) -> None:
        for cell in cells:
            on_start(cell)
            on_record(cell, run_cell_subprocess(cell, run_dir, on_output))


# ----------------------------------------------------------------------------------------------
# Runs: manifest, resume, writing
# ----------------------------------------------------------------------------------------------

def latest_run_dir(out_dir: Path) -> Path | None:
    runs = sorted((p.parent for p in out_dir.glob("*/run.json")), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def finished_cell_ids(run_dir: Path) -> set[str]:
    done = set()
    for path in run_dir.glob("*.json"):
        if path.name == "run.json":
            continue
        record = read_record(path)
        if record and record.get("status") in ("ok", "skipped"):
            done.add(record["cell_id"])
    return done


@dataclass
class RunOutcome:
    run_dir: Path
    records: list[dict] = field(default_factory=list)
    skipped_as_done: int = 0
    write_errors: list[str] = field(default_factory=list)


def execute(cells: list[Cell], run_dir: Path, executor, *, resume_done: Iterable[str] = (),
            display=None, manifest: dict | None = None) -> RunOutcome:
    """Run ``cells`` with ``executor``; write each record the moment it arrives; call hooks.

    A cell with ``repeats > 1`` runs that many times, each in a fresh process, interleaved across
    cells (every cell's repeat 1, then every cell's repeat 2, ...). Each repeat's record is kept in
    ``<run_dir>/repeats/`` as it ends (``--resume`` reuses them); when a cell's last repeat ends, the
    cell's one record (`fwbench.measure.repeats.merge_repeats`) is written. A repeat that fails ends its cell:
    the cell's record is the failure, with the repeats done before it.
    """
    from ..measure.repeats import mark_single, merge_repeats
    from ..plugins import get_plugin_manager
    from .repeats import RepeatStore

    pm = get_plugin_manager()
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / "run.json"
    if not manifest_path.exists():
        manifest_path.write_text(json.dumps({**(manifest or {}), "created_at": now_iso(),
                                             "cells": [c.to_dict() for c in cells]}, indent=1))
    done = set(resume_done)
    todo = [c for c in cells if c.cell_id not in done]
    outcome = RunOutcome(run_dir, skipped_as_done=len(cells) - len(todo))
    store = RepeatStore(run_dir)

    def write_final(cell: Cell, record: dict) -> None:
        try:
            path = write_record(record, run_dir)
        except OSError as exc:  # disk full, permissions...: report it, keep going, lose nothing else
            message = (f"could not write the record of {cell.cell_id} into {run_dir}: {exc.strerror or exc}; "
                       "earlier records are intact")
            outcome.write_errors.append(message)
            record = {**record, "status": "failed", "error": message}
            print(f"bench: error: {message}", file=sys.stderr)
        else:
            record["_path"] = str(path)
            pm.hook.fwbench_result_recorded(record=record, path=str(path))
        outcome.records.append(record)

    ended: set[str] = set()

    def on_record(cell: Cell, record: dict) -> None:
        if cell.repeats <= 1:
            write_final(cell, mark_single(record))
        else:
            record["repeat"] = cell.repeat
            store.add(cell, record)
            ok = [r for r in store.records(cell.cell_id) if r.get("status") == "ok"]
            if record.get("status") != "ok":
                ended.add(cell.cell_id)
                final = {**record, "metrics": record.get("metrics") or {}}
                if record.get("status") != "skipped":
                    final["error"] = f"repeat {cell.repeat}/{cell.repeats}: {record.get('error')}"
                final["repeats_done"] = len(ok)
                write_final(cell, final)
            elif len(ok) >= cell.repeats:
                ended.add(cell.cell_id)
                write_final(cell, merge_repeats(ok[:cell.repeats]))
        if display:
            display.finished(cell, record)

    rounds = max((c.repeats for c in todo), default=1)
    for repeat in range(1, rounds + 1):
        batch = []
        for cell in todo:
            if repeat > cell.repeats or cell.cell_id in ended:
                continue
            if cell.repeats > 1 and store.has_ok(cell.cell_id, repeat):
                continue
            batch.append(replace(cell, repeat=repeat, save_weights=cell.save_weights if repeat == 1 else None))
        if batch:
            executor.run(batch, run_dir, on_record,
                         on_start=display.started if display else (lambda cell: None),
                         on_output=display.output if display else (lambda line: None))
    for cell in todo:  # every repeat was already on disk (--resume after the last one): merge them
        if cell.repeats > 1 and cell.cell_id not in ended:
            ok = [r for r in store.records(cell.cell_id) if r.get("status") == "ok"]
            if len(ok) >= cell.repeats:
                write_final(cell, merge_repeats(ok[:cell.repeats]))
    pm.hook.fwbench_session_finished(records=outcome.records, out_dir=str(run_dir))
    return outcome


def runs_to_do(cells: list[Cell], run_dir: Path, resume_done: Iterable[str] = ()) -> int:
    """How many cell processes `execute` will start (repeats kept from an earlier run excluded)."""
    from .repeats import RepeatStore

    store = RepeatStore(run_dir)
    done = set(resume_done)
    return sum(sum(1 for r in range(1, c.repeats + 1) if not (c.repeats > 1 and store.has_ok(c.cell_id, r)))
               for c in cells if c.cell_id not in done)
