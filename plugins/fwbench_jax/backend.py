"""The JAX backend: jax.jit + optax. JAX is imported lazily, inside the methods."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from typing import Any

from fwbench.backend import Backend, BuildRequest, Trainer
from fwbench.errors import DeviceError

from .options import OPTIONS

#: Single-threaded XLA CPU: no Eigen thread pool for XLA's own kernels. (The often-quoted
#: ``intra_op_parallelism_threads=1`` is not an XLA flag: without ``--`` XLA ignores it, with
#: ``--`` XLA refuses to start; the affinity mask the suite sets is what caps XLA's pools.)
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)
#: Flags this backend owns in ``XLA_FLAGS`` (replaced on every configure).
_OWN_FLAGS = ("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads", "--intra_op_parallelism_threads")
#: How a GPU is looked for without starting JAX's devices in this process.
GPU_PROBE = ("import json, jax; print(json.dumps([d.device_kind for d in jax.devices()"
             " if d.platform == 'gpu']))")


def _xla_flags(existing: str, threads: int) -> str:
    """``existing`` XLA_FLAGS plus the single-thread flag when ``threads == 1``.

    XLA has no flag for an arbitrary CPU thread count; its pools size themselves from the CPU
    affinity mask, which the suite pins for every backend alike.
    """
    flags = [f for f in existing.split() if not f.startswith(_OWN_FLAGS)]
    if threads == 1:
        flags.extend(SINGLE_THREAD_XLA_FLAGS)
    return " ".join(flags)


def _probe_gpu_in_child(timeout: float = 120.0) -> bool:
    """Whether JAX sees a GPU, asked in a child process so that this one can still be configured."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the probe must never grab 75 % of a GPU
    try:
        out = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True, timeout=timeout,
                             env=env, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    return out.returncode == 0 and bool(lines) and bool(json.loads(lines[-1]))


def _backends_initialized() -> bool:
    """Whether this process already started JAX's device backends (env changes come too late)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # private, hence the fallback

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def _flags_in_force(initialized_before: bool) -> dict[str, Any] | None:
    """The XLA/JAX environment XLA read when its backends started: this process's after
    `JaxBackend.configure`, or unknown (None) when JAX had started before it."""
    if initialized_before:
        return None
    return {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS"),
            "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")}


class JaxBackend(Backend):
    name = "jax"
    #: fp32 (HIGHEST), tf32 (DEFAULT precision on a GPU), bf16/fp16 (compute dtype, float32
    #: parameters; fp16 with dynamic loss scaling in the step).
    precisions = ("fp32", "tf32", "bf16", "fp16")
    declared_options = OPTIONS
    requires = ("jax", "optax")
    extra = "jax"
    description = "JAX + optax: pure functions over pytrees, one jax.jit train step (XLA)"

    def version(self) -> str:
        return importlib.metadata.version("jax")

    def release_caches(self) -> None:
        """Every ``jax.jit`` executable compiled so far (each trainer compiles its own)."""
        if "jax" in sys.modules:
            import jax

            jax.clear_caches()

    gpu_check = "jax.devices('gpu')"

    def gpu_available(self) -> bool:
        """Whether JAX sees a GPU. Before `configure` (``--device auto``) JAX must not start its
        devices here, or ``XLA_FLAGS`` / ``JAX_PLATFORMS`` set by `configure` come too late: the
        question then goes to a child process."""
        if not _backends_initialized():
            return _probe_gpu_in_child()
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
        try:
            devices = jax.devices("gpu" if device == "gpu" else "cpu")
        except RuntimeError as exc:
            raise DeviceError(f"--device {device}: JAX sees no {device.upper()} ({str(exc).splitlines()[0]}); "
                              "install a CUDA build of jax (pip install 'jax[cuda13]') or use --device cpu") from None
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
            "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS"),
            "jax_platforms": jax.config.jax_platforms,
            "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"],
            # what this process's XLA started with: what was in force (None = not readable)
            "flags_in_force": _flags_in_force(initialized_before),
            "matmul_precision": "highest",
            "x64": "enabled at build for float64 tasks",
            # True means XLA_FLAGS / preallocation came too late for this process
            "jax_initialized_before_configure": initialized_before,
        }

    def build(self, request: BuildRequest) -> Trainer:
        from .trainer import JaxTrainer

        return JaxTrainer(request)
