"""The PyTorch backend: framework facts, per-process configuration, and `build`.

torch is imported inside the methods only, so ``bench list`` works where torch is missing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from fwbench.backend import Backend, BuildRequest
from fwbench.errors import DeviceError

from .options import OPTIONS

if TYPE_CHECKING:
    from .trainer import TorchTrainer

#: cuDNN autotuning: training batches all have one shape (the suite drops the last partial
#: batch), so searching the fastest algorithm once per shape pays off.
CUDNN_BENCHMARK = True


class TorchBackend(Backend):
    """PyTorch, eager by default; ``[backend] compile = true`` uses ``torch.compile``."""

    name = "torch"
    declared_options = OPTIONS
    requires = ("torch",)
    #: fp32 (TF32 off), tf32 (CUDA), bf16 and fp16 (torch.autocast; fp16 with a GradScaler).
    precisions = ("fp32", "tf32", "bf16", "fp16")
    extra = "torch"
    description = "PyTorch (eager; torch.compile with backend.compile = true)"

    def version(self) -> str:
        import torch

        return torch.__version__

    def release_caches(self) -> None:
        """``torch.compile``'s compiled frames, where anything was compiled (Keras' compiled mode)."""
        if "torch._dynamo" in sys.modules:
            import torch._dynamo

            torch._dynamo.reset()

    def gpu_available(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """Thread pools, TF32 off, cuDNN choices; returns the facts for the record.

        Raises:
            DeviceError: ``device="gpu"`` but torch sees no CUDA device.
        """
        import torch

        torch.set_num_threads(threads)
        interop: int | str = threads
        try:  # only possible before the first inter-op parallel work in this process
            torch.set_num_interop_threads(threads)
        except RuntimeError as exc:
            interop = f"unchanged ({torch.get_num_interop_threads()}): {exc}"
        # Full fp32 precision everywhere so every backend computes the same maths.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
        torch.backends.cudnn.deterministic = False
        facts: dict[str, Any] = {
            "framework": "torch",
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "interop_threads": interop,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version()
            if torch.backends.cudnn.is_available()
            else None,
        }
        if device == "gpu":
            if not torch.cuda.is_available():
                raise DeviceError(
                    "torch sees no CUDA device; run with --device cpu, or install a "
                    "CUDA build of torch (https://pytorch.org/get-started/locally/)"
                )
            facts["device_name"] = torch.cuda.get_device_name(0)
            facts["device_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        return facts

    def build(self, request: BuildRequest) -> TorchTrainer:
        from .trainer import TorchTrainer

        return TorchTrainer(request)
