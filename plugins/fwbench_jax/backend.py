"""The JAX backend: jax.jit + optax. JAX is imported lazily, inside the methods."""
from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Any

from fwbench.backend import Backend, BuildRequest, Trainer

#: Single-threaded XLA CPU: no Eigen thread pool, one intra-op thread.
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


def _xla_flags(existing: str, threads: int) -> str:
    """``existing`` XLA_FLAGS plus the single-thread flags when ``threads == 1``.

    XLA has no flag for an arbitrary CPU thread count; its pools size themselves from the CPU
    affinity mask, which the suite pins for every backend alike.
    """
    flags = [f for f in existing.split() if not f.startswith(("--xla_cpu_multi_thread_eigen",
                                                               "intra_op_parallelism_threads"))]
    if threads == 1:
        flags.extend(SINGLE_THREAD_XLA_FLAGS)
    return " ".join(flags)


def _backends_initialized() -> bool:
    """Whether this process already started JAX's device backends (env changes come too late)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # private, hence the fallback

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


class JaxBackend(Backend):
    name = "jax"
    requires = ("jax", "optax")
    extra = "jax"
    description = "JAX + optax: pure functions over pytrees, one jax.jit train step (XLA)"

    def version(self) -> str:
        return importlib.metadata.version("jax")

    def gpu_available(self) -> bool:
        # asked before `configure` when --device is auto/gpu: never let this first import grab 75 % of a GPU
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax

        try:
            return any(d.platform == "gpu" for d in jax.devices("gpu"))
        except RuntimeError:  # no GPU backend installed or initialised
            return False

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """Set JAX's environment before jax is first imported in this process.

        ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (no 75 % GPU grab), ``JAX_PLATFORMS=cpu`` for the
        CPU, single-thread XLA flags when ``threads == 1``, full-precision matmuls (no TF32).
        """
        initialized_before = _backends_initialized()
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = _xla_flags(os.environ.get("XLA_FLAGS", ""), threads)

        import jax

        if device == "cpu" and not initialized_before:
            jax.config.update("jax_platforms", "cpu")  # in case jax was imported before configure
        jax.config.update("jax_default_matmul_precision", "highest")
        devices = jax.devices("gpu" if device == "gpu" else "cpu")
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return {
            "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"),
            "optax": importlib.metadata.version("optax"),
            "devices": [str(d) for d in devices],
            "device_kind": devices[0].device_kind,
            "platform": devices[0].platform,
            "threads": threads,
            "cpu_affinity": affinity,
            "thread_cap": ("XLA has no flag for N CPU threads; the CPU affinity mask set by the "
                           "suite caps XLA's thread pools" + ("; plus single-thread XLA flags"
                                                              if threads == 1 else "")),
            "XLA_FLAGS": os.environ["XLA_FLAGS"],
            "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"],
            "matmul_precision": "highest",
            "x64": "enabled at build for float64 tasks",
            # True means XLA_FLAGS / preallocation came too late for this process
            "jax_initialized_before_configure": initialized_before,
        }

    def build(self, request: BuildRequest) -> Trainer:
        from .trainer import JaxTrainer

        return JaxTrainer(request)
