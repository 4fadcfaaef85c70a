"""The environment manifest stored in every record: what ran, where, with which threads and BLAS."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Environment variables that change numbers; recorded when set.
RELEVANT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE", "XLA_FLAGS", "TF_XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "TF_ENABLE_ONEDNN_OPTS", "FWBENCH_DATA_DIR")
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd")


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and value.strip():
                model = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return {"model": model, "machine": platform.machine(), "logical_cores": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "flags": [f for f in CPU_FLAGS if f in flags]}


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view: library, version, threading layer, kernel (architecture), threads."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture",
            "prefix")
    return [{k: info.get(k) for k in keep if info.get(k) is not None} for info in threadpool_info()]


@functools.cache
def git_commit() -> dict[str, Any]:
    """The commit of the fwbench source tree (when run from a checkout), and whether it is dirty."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "dirty": bool(dirty)} if head else {}


def gpu_info() -> list[dict[str, str]] | None:
    """Name, driver, memory and compute capability of each NVIDIA GPU (``nvidia-smi``), or None."""
    fields = ("name", "driver_version", "memory.total", "compute_cap", "pci.bus_id")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rows = [[part.strip() for part in line.split(",")] for line in out.stdout.strip().splitlines()]
    return [dict(zip(fields, row, strict=False)) for row in rows if row and row[0]]


def collect(threads: int | None = None) -> dict[str, Any]:
    """Facts about this process's machine and Python (frameworks add theirs via `configure`)."""
    from . import __version__

    return {
        "fwbench": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_info(),
        "threads": threads,
        "blas": blas_info(),
        "numpy": _version("numpy"),
        "env_vars": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
        "argv": sys.argv[1:],
    }


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - absence is an answer
        return None
