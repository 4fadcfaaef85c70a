"""`OnnxRuntimeBackend`: serves the task's model with onnxruntime (CPU, CUDA where present)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fwbench.backend import Availability, Backend
from fwbench.errors import DeviceError

if TYPE_CHECKING:
    from fwbench.backend import BuildRequest

    from .trainer import OnnxTrainer

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


class OnnxRuntimeBackend(Backend):
    """The model as an ONNX graph built from the spec (``onnx.helper``), run by onnxruntime."""

    name = "onnxruntime"
    requires = ("onnx", "onnxruntime")
    extra = "onnxruntime"
    description = "ONNX Runtime: the spec as an ONNX graph (onnx.helper), inference only (CPU, CUDA EP)"
    gpu_check = "onnxruntime.get_available_providers() lists CUDAExecutionProvider"

    def __init__(self) -> None:
        self.threads = 1

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def supports(self, task: Any) -> Availability:
        """Inference only: the training scenario and microbenchmarks are declined (skipped cells)."""
        if task.task.family != "train":
            return Availability(False, "microbenchmarks: onnxruntime serves whole models only")
        if getattr(task.task, "scenario", "training") != "inference":
            return Availability(False, "training: onnxruntime serves models only (run it with --scenario "
                                       "inference)")
        return Availability(True)

    def gpu_available(self) -> bool:
        import onnxruntime

        return CUDA in onnxruntime.get_available_providers()

    def _providers(self, device: str) -> list[str]:
        if device == "gpu":
            if not self.gpu_available():
                raise DeviceError(f"--device gpu: backend 'onnxruntime' sees no GPU (checked {self.gpu_check}); "
                                  "install onnxruntime-gpu or use --device cpu")
            return [CUDA, CPU]
        return [CPU]

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """One intra-op pool of ``threads`` threads, no inter-op parallelism, sequential execution."""
        import onnx
        import onnxruntime

        self.threads = max(1, int(threads or 1))
        return {"framework": "onnxruntime", "version": onnxruntime.__version__, "onnx": onnx.__version__,
                "device": device, "threads": self.threads, "providers": self._providers(device),
                "available_providers": onnxruntime.get_available_providers(), "compile": "onnxruntime",
                "layout": "NCHW (the canonical layout)"}

    def session_options(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options

    def build(self, request: BuildRequest) -> OnnxTrainer:
        from .trainer import OnnxTrainer

        return OnnxTrainer(request, self._providers(request.device), self.session_options())
