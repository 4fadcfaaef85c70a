"""`NumpyBackend`: the from-scratch reference backend (NumPy only, CPU only)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
from fwbench.backend import Backend
from fwbench.errors import DeviceError

if TYPE_CHECKING:
    from fwbench.backend import BuildRequest

    from .trainer import NumpyTrainer

#: Keys of `threadpoolctl.threadpool_info()` entries kept for the record.
_POOL_KEYS = ("user_api", "internal_api", "version", "num_threads", "architecture",
              "threading_layer", "filepath")


def _check_device(device: str) -> None:
    if device != "cpu":
        raise DeviceError(f"the numpy backend runs on the CPU only, got device {device!r}; "
                          "use --device cpu (or auto)")


class NumpyBackend(Backend):
    """Every forward and backward written by hand with NumPy: the suite's numerical reference."""

    name = "numpy"
    requires = ()
    extra = ""
    description = "NumPy from scratch: hand-written forward/backward, im2col convolutions, CPU"
    #: bf16/fp16 round exactly where the policy rounds (`fwbench_numpy.precision`): the reference.
    precisions = ("fp32", "bf16", "fp16")

    def __init__(self) -> None:
        self._limits = None  # keeps the threadpoolctl limiter alive

    def version(self) -> str:
        return np.__version__

    def gpu_available(self) -> bool:
        return False

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """Limit the BLAS thread pool to ``threads`` (NumPy's element-wise code is single-threaded)
        and return facts for the record, including ``threadpoolctl.threadpool_info()``."""
        _check_device(device)
        from threadpoolctl import threadpool_info, threadpool_limits

        if threads and threads > 0:
            self._limits = threadpool_limits(limits=int(threads), user_api="blas")
        pools = [{k: info[k] for k in _POOL_KEYS if k in info} for info in threadpool_info()]
        return {
            "framework": "numpy",
            "version": np.__version__,
            "device": "cpu",
            "threads": threads,
            "blas": pools,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "compile": "eager",
            "layout": "CHWN inside, canonical NCHW at the interface",
        }

    def build(self, request: BuildRequest) -> NumpyTrainer:
        _check_device(request.device)
        from .trainer import NumpyTrainer

        return NumpyTrainer(request)
