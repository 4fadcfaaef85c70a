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


def backend_facts(facts: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """What a backend's ``configure`` returned, normalised by the core for the record's ``env.backend``:
    ``device`` always, and on the CPU ``device_name`` = the CPU model (`cpu_info`) unless the backend
    named it, so no backend reads ``/proc/cpuinfo`` itself."""
    out = dict(facts or {})
    out.setdefault("device", device)
    if device == "cpu" and not out.get("device_name"):
        out["device_name"] = cpu_info()["model"]
    return out


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
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, check=False,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, check=False, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "dirty": bool(dirty)} if head else {}


def gpu_info() -> list[dict[str, str]] | None:
    """Name, driver, memory and compute capability of each NVIDIA GPU (``nvidia-smi``), or None."""
    fields = ("name", "driver_version", "memory.total", "compute_cap", "pci.bus_id")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    rows = [[part.strip() for part in line.split(",")] for line in out.stdout.strip().splitlines()]
    return [dict(zip(fields, row, strict=False)) for row in rows if row and row[0]]


def framework_kernels() -> dict[str, Any]:
    """Which math libraries the frameworks already imported in this process dispatch to (BLAS,
    oneDNN, CPU capability), read without importing anything new."""
    out: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            lines = [ln.strip(" -") for ln in torch.__config__.show().splitlines()]
            keep = ("Math Kernel Library", "MKL-DNN", "OpenMP", "CPU capability")
            settings = next((ln for ln in lines if ln.startswith("Build settings:")), "")
            info = {k: v for k, _, v in (part.strip().partition("=") for part in settings.split(","))
                    if k in ("BLAS_INFO", "LAPACK_INFO", "USE_MKLDNN", "USE_OPENMP")}
            out["torch"] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "libraries": [ln for ln in lines if any(k in ln for k in keep)], **info}
        except Exception as exc:  # noqa: BLE001 - a fact, never a failure
            out["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "tensorflow" in sys.modules:
        out["tensorflow"] = {"onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 CPUs)"),
                             "TF_XLA_FLAGS": os.environ.get("TF_XLA_FLAGS", "")}
    if "jax" in sys.modules:
        out["jax"] = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "cpu": "XLA:CPU (its own dot/conv emitters)"}
    return out


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """The comparable facts of a finished cell in one place, whatever the backend reported:
    dtype, threads, BLAS (library, kernel, threads), compile mode, XLA flags, TF32, versions,
    CPU, GPU and driver, OS, git commit."""
    env = record.get("env") or {}
    facts = env.get("backend") or {}
    backend = record.get("backend")
    blas = [f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture') or '?'}, "
            f"{b.get('num_threads')} threads)" for b in env.get("blas_loaded") or env.get("blas") or []
            if b.get("user_api") == "blas"]
    if backend == "torch":
        tf32 = bool(facts.get("matmul_allow_tf32") or facts.get("cudnn_allow_tf32"))
    elif backend == "tensorflow":
        tf32 = facts.get("tf32")
    elif backend == "jax":
        tf32 = facts.get("matmul_precision") not in ("highest", "float32", None)
    else:
        tf32 = None  # no TensorFloat-32 path
    cpu = env.get("cpu") or {}
    return {
        "backend": backend, "framework_version": record.get("backend_version"),
        "device": record.get("device"), "dtype": env.get("dtype"),
        "compile_mode": (env.get("compile") or {}).get("mode"),
        "threads": {"requested": env.get("threads"),
                    "intra_op": facts.get("threads", facts.get("intra_op_threads")),
                    "inter_op": facts.get("interop_threads", facts.get("inter_op_threads")),
                    "cpu_affinity": cpu.get("affinity")},
        "blas": blas, "kernels": (env.get("kernels") or {}).get(backend),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "tf_xla_flags": os.environ.get("TF_XLA_FLAGS", ""),
        "tf32": tf32, "cpu": cpu.get("model"), "cpu_flags": cpu.get("flags"),
        "gpu": env.get("gpu"), "os": env.get("os"), "git_commit": (env.get("git") or {}).get("commit"),
        "git_dirty": (env.get("git") or {}).get("dirty"),
    }


def collect(threads: int | None = None) -> dict[str, Any]:
    """Facts about this process's machine and Python (frameworks add theirs via `configure`)."""
    from ..version import __version__

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
