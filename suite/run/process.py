"""What a cell process sets and reads about itself: its cores, its parent, its memory.

* **Cores**: the cell pins itself to the core set its driver claimed for it
  (`fwbench.run.placement`), or to its first ``threads`` cores (`pin_threads`).
* **Parent death**: a cell dies with the process that started it (`die_with_parent`: Linux
  ``PR_SET_PDEATHSIG`` set between fork and exec, plus `watch_parent` inside the cell, which
  kills the cell's process group when its parent is gone), so a ``kill -9`` of ``bench run``
  leaves nothing running.
* **Memory**: VmRSS / VmHWM (Linux /proc).
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def allowed_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), sorted."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_threads(threads: int, cpus: list[int] | None = None) -> list[int]:
    """Pin this process to ``cpus`` (the claimed set) or, without one, to its first ``threads``
    allowed cores: CPU affinity is what really limits JAX and XLA, on top of the OMP/MKL/OpenBLAS
    variables the driver already set. Returns the cores pinned to."""
    if not hasattr(os, "sched_setaffinity"):
        return list(range(threads))
    allowed = allowed_cores()
    chosen = [c for c in (cpus or []) if c in allowed] or allowed[:threads]
    if chosen != allowed:
        os.sched_setaffinity(0, chosen)
    return sorted(chosen)


# ---------------------------------------------------------------------------------------------
# Dying with the parent
# ---------------------------------------------------------------------------------------------

def _set_parent_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(then: Callable[[], None] | None = None, cpus: list[int] | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` for `subprocess.Popen`: the child gets SIGTERM when the thread that
    started it dies (Linux), runs on ``cpus`` from its first instruction (interpreter start and
    imports included), then runs ``then`` (e.g. a memory limit)."""
    parent = os.getpid()

    def apply() -> None:
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)
        if cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass  # the cell pins itself again (pin_threads) and records what it got
        if then is not None:
            then()

    return apply


def _kill_own_group() -> None:
    """SIGKILL this process's group (the cell and anything it started), this process last."""
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(1)


def watch_parent(parent: int | None = None, interval_s: float = 0.5) -> threading.Thread:
    """Inside a cell: kill the cell's process group when its parent dies, by the parent-death
    SIGTERM (`die_with_parent`) or, where that is unavailable, by noticing a new parent."""
    parent = os.getppid() if parent is None else parent
    if os.getpgrp() == os.getpid():  # only a group leader may take its whole group down
        signal.signal(signal.SIGTERM, lambda signum, frame: _kill_own_group())

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                _kill_own_group()
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="fwbench-parent-watch", daemon=True)
    thread.start()
    return thread


def memory_status() -> dict[str, int]:
    """VmRSS / VmHWM of this process in bytes (Linux); ru_maxrss as a fallback for the peak."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


RESET_SLACK_BYTES = 4 * 2**20  # pages a busy process faults between the write and the reading


def reset_host_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (``echo 5 > /proc/self/clear_refs``); True
    when the peak reads as the RSS afterwards: an accepted write alone does not prove the reset
    took (a kernel or sandbox may take it and keep the old peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    status = memory_status()
    return status.get("VmHWM", 0) - status.get("VmRSS", 0) <= RESET_SLACK_BYTES
