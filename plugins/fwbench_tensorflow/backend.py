"""`TensorflowBackend`: describes TensorFlow (version, devices, threads) and builds trainers.

Imports TensorFlow only inside methods, so this module loads where TensorFlow is missing.

Threads: ``configure(threads=N)`` sets TensorFlow's intra-op pool (the threads one kernel, oneDNN
or an XLA CPU executable uses) to ``N`` and the inter-op pool (independent ops run side by side)
to 1. A train step is one XLA executable by default, so there is no independent op to overlap,
and ``N + 1`` pools of ``N`` threads would use more cores than the ``N`` the suite grants every
backend (``torch.set_num_threads(N)`` is the equivalent there).
"""
from __future__ import annotations

import importlib.metadata
import os
from typing import TYPE_CHECKING, Any

from fwbench.backend import Backend, BuildRequest
from fwbench.errors import DeviceError

from .options import OPTIONS

if TYPE_CHECKING:
    from .trainer import TensorflowTrainer

#: Inter-op threads (see the module docstring for why 1).
INTER_OP_THREADS = 1
#: Distributions that provide the ``tensorflow`` module, for `TensorflowBackend.version`.
_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly", "tf-nightly-cpu")


class TensorflowBackend(Backend):
    name = "tensorflow"
    #: fp32 (TF32 off), tf32 (GPU), bf16/fp16 (inputs and weights cast in the step, float32
    #: variables; fp16 with dynamic loss scaling).
    precisions = ("fp32", "tf32", "bf16", "fp16")
    declared_options = OPTIONS
    requires = ("tensorflow",)
    extra = "tensorflow"
    description = ("TensorFlow 2: one tf.function(jit_compile=True) XLA train step, NHWC layout, "
                   "hand-written optimizer updates")

    def version(self) -> str:
        """The installed TensorFlow version, read from package metadata (no 5 s import)."""
        for dist in _DISTRIBUTIONS:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        import tensorflow as tf

        return tf.__version__

    def gpu_available(self) -> bool:
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """Thread pools, visible devices, GPU memory growth and TF32 off. Must run before any
        TensorFlow op; calling it again with the same arguments is a no-op.

        Raises:
            DeviceError: ``device="gpu"`` but TensorFlow sees no GPU.
            RuntimeError: the runtime is already initialised with other settings.
        """
        import tensorflow as tf

        _set_threads(tf, threads)
        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu" and not gpus:
            raise DeviceError("tensorflow sees no GPU (a CPU-only build or no CUDA driver); "
                              "install 'tensorflow[and-cuda]' on a GPU machine or use --device cpu")
        if device == "cpu" and gpus and tf.config.get_visible_devices("GPU"):
            _before_init(tf.config.set_visible_devices, [], "GPU")
        if device == "gpu":
            for gpu in gpus:
                if not tf.config.experimental.get_memory_growth(gpu):
                    _before_init(tf.config.experimental.set_memory_growth, gpu, True)
        tf.config.experimental.enable_tensor_float_32_execution(False)

        build = tf.sysconfig.get_build_info()
        device_name = None  # on the CPU the core names it (fwbench.records.environment.backend_facts)
        if device == "gpu":
            details = tf.config.experimental.get_device_details(gpus[0])
            device_name = details.get("device_name", gpus[0].name)
        return {
            "framework": "tensorflow",
            "version": tf.__version__,
            "device": device,
            "device_name": device_name,
            "gpus": [gpu.name for gpu in gpus] if device == "gpu" else [],
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "xla": "train step is tf.function(jit_compile=True) unless task.backend.compile "
                   "is 'graph' or false",
            "xla_auto_clustering": bool(tf.config.optimizer.get_jit()),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "memory_growth": device == "gpu",
            "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "cuda_build": bool(build.get("is_cuda_build", False)),
            "cuda_version": build.get("cuda_version"),
            "cudnn_version": build.get("cudnn_version"),
        }

    def build(self, request: BuildRequest) -> TensorflowTrainer:
        from .trainer import TensorflowTrainer

        return TensorflowTrainer(request)


def _set_threads(tf, threads: int) -> None:
    wanted = {"intra": threads, "inter": INTER_OP_THREADS}
    current = {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter": tf.config.threading.get_inter_op_parallelism_threads()}
    if current == wanted:
        return
    _before_init(tf.config.threading.set_intra_op_parallelism_threads, threads)
    _before_init(tf.config.threading.set_inter_op_parallelism_threads, INTER_OP_THREADS)


def _before_init(setter, *args) -> None:
    """Call a tf.config setter that only works before the TensorFlow runtime starts."""
    try:
        setter(*args)
    except RuntimeError as exc:
        raise RuntimeError(
            f"TensorFlow was already running when fwbench configured it ({exc}); call "
            "TensorflowBackend.configure() first in the process, before any TensorFlow op"
        ) from exc
