"""What a cell process sets and reads about itself: its CPU affinity and its memory (Linux /proc)."""
from __future__ import annotations

import os
import resource
from pathlib import Path


def pin_threads(threads: int) -> None:
    """Cap every library at ``threads`` cores the same way: CPU affinity (what really limits JAX
    and XLA) on top of the OMP/MKL/OpenBLAS variables the driver already set."""
    if hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])


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
