"""`TorchTrainer`: one model + optimizer on one device, driven step by step by the suite.

A training step never waits for the device: it returns the detached ``(loss, correct)`` tensors
and the suite calls `TorchTrainer.sync` before it reads the clock. `TorchTrainer.fetch` stacks
an epoch's handles and copies them to the host once.

Backend options (``[backend]`` in the task, or ``--set backend.KEY=VALUE``):

* ``compile``: ``false`` (default, eager) | ``true`` (``torch.compile``, inductor, mode "default")
  | a ``torch.compile`` mode name ("default", "reduce-overhead", "max-autotune",
  "max-autotune-no-cudagraphs"). The compiled region is the forward pass + loss + accuracy count
  (``fullgraph=True``, static shapes); AOTAutograd compiles the matching backward, which
  ``loss.backward()`` runs. Clipping and the (fused) optimizer stay eager: they are single
  multi-tensor kernels already. ``predict`` and ``loss_and_grads`` run eager.
* ``optimizer_impl``: "auto" (default: fused where torch has it for the device, else foreach) |
  "fused" | "foreach" | "forloop".

Frozen layers (``model.frozen``) get ``requires_grad = False`` and stay out of the optimizer; a
frozen BatchNorm still updates its running statistics in train mode (PyTorch's own semantics).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fwbench import precision
from fwbench.backend import BuildRequest, Trainer, Unsupported
from fwbench.errors import FwbenchError

from .model import CanonicalMap, MaskableDropout, build_module
from .optim import make_optimizer
from .options import torch_options

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Compute dtypes of the mixed policies (`fwbench.precision`) under ``torch.autocast``.
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: Modes that replay CUDA graphs: their outputs are overwritten by the next replay.
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")

Batch = tuple[torch.Tensor, torch.Tensor]
Handle = tuple[torch.Tensor, torch.Tensor]


class TorchCompileError(FwbenchError):
    """``torch.compile`` could not compile the training step."""


def compile_mode(task_backend: dict[str, Any] | None, where: str = "<spec>") -> str | None:
    """The ``torch.compile`` mode asked for by ``task.backend["compile"]``; None = eager.

    Raises:
        SpecError: a value that is neither a bool nor a torch.compile mode.
    """
    return torch_options(task_backend, where)["compile"]


def find_cxx() -> str | None:
    """The C++ compiler inductor will use on CPU (``$CXX`` or inductor's candidates), or None."""
    from torch._inductor import config

    for name in (os.environ.get("CXX"), *config.cpp.cxx):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class TorchTrainer(Trainer):
    """Built by `fwbench_torch.backend.TorchBackend.build` from a `BuildRequest`."""

    def __init__(self, request: BuildRequest):
        task = request.task
        options = torch_options(task.backend, task.source)
        self.device = torch.device("cuda" if request.device == "gpu" else "cpu")
        self.dtype = DTYPES[task.training.dtype]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        torch.manual_seed(task.training.seed)  # dropout masks; weights come from the suite

        self.model = build_module(request.info).to(device=self.device, dtype=self.dtype)
        self.model.train()
        self.canonical = CanonicalMap(self.model, request.info)
        self.canonical.set(request.weights)
        for entry in self.canonical.entries:  # model.frozen: no grad, no optimizer state, no decay
            if entry.frozen:
                entry.tensor.requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

        self.optimizer, impl = make_optimizer(
            task.optimizer,
            self.params,
            self.device.type,
            options["optimizer_impl"],
        )
        self._groups = self.optimizer.param_groups
        self._setup_precision(precision.of_task(task))
        self._clip_kind, self._clip_max = task.clip.kind, task.clip.max

        mode = options["compile"]
        if mode == "reduce-overhead" and task.backend.get("execution") == "compiled+cudagraphs" \
                and self.device.type != "cuda":
            raise Unsupported("execution = compiled+cudagraphs on the CPU (CUDA graphs need a GPU)")
        self._clone_outputs = mode in CUDAGRAPH_MODES and self.device.type == "cuda"
        self._compile_pending = mode is not None  # the first step compiles
        if mode is None:
            self._loss_fn = self._forward_loss
            self.compile_info = {"mode": "eager", "optimizer": impl, "precision": self._precision}
        else:
            if self.device.type == "cpu" and find_cxx() is None:
                raise TorchCompileError(
                    "torch.compile on CPU needs a C++ compiler (inductor) and "
                    "none was found; install g++ or set $CXX, or run eager "
                    "with --set backend.compile=false"
                )
            self._loss_fn = torch.compile(
                self._forward_loss, mode=mode, fullgraph=True, dynamic=False
            )
            self.compile_info = {
                "mode": "torch.compile",
                "backend": "inductor",
                "compile_mode": mode,
                "fullgraph": True,
                "dynamic": False,
                "scope": "forward+loss (backward via AOTAutograd)",
                "optimizer": impl,
                "predict": "eager",
                "precision": self._precision,
            }

    def _setup_precision(self, pol: precision.Policy) -> None:
        """tf32: TensorFloat-32 matmuls and convolutions (CUDA only); bf16/fp16: ``torch.autocast``
        over forward and loss (the loss itself in float32), fp16 with a ``GradScaler``."""
        self.policy = pol
        self._scaler = None
        if pol.name == "tf32":
            if self.device.type != "cuda":
                raise Unsupported("precision tf32 on the CPU (TensorFloat-32 is a CUDA matmul mode)")
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if pol.mixed:
            low = AUTOCAST_DTYPES[pol.compute_dtype]
            self._autocast = lambda: torch.autocast(self.device.type, dtype=low)
            if pol.loss_scaling:
                ls = precision.LOSS_SCALE
                self._scaler = torch.amp.GradScaler(
                    self.device.type, init_scale=ls.initial, growth_factor=ls.growth,
                    backoff_factor=ls.backoff, growth_interval=ls.growth_interval)
            how = f"torch.autocast({self.device.type!r}, {low})" + (" + GradScaler" if self._scaler else "")
        else:
            self._autocast = contextlib.nullcontext
            how = "tf32 matmul/cudnn" if pol.name == "tf32" else "float32, TF32 off"
        self._precision = precision.in_force(pol, how=how)

    # -- the step --------------------------------------------------------------------------------
    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> Handle:
        """Mean softmax cross-entropy from logits and the number of correct predictions."""
        with self._autocast():
            logits = self.model(x)
        if self.policy.mixed:
            logits = logits.float()  # the loss in float32
        loss = F.cross_entropy(logits, y)
        correct = (logits.detach().argmax(dim=1) == y).sum()
        return loss, correct

    def _clip(self) -> None:
        if self._clip_kind == "norm":
            torch.nn.utils.clip_grad_norm_(self.params, self._clip_max, foreach=True)
        elif self._clip_kind == "value":
            torch.nn.utils.clip_grad_value_(self.params, self._clip_max, foreach=True)

    def train_step(self, batch: Batch, lr: float) -> Handle:
        self._train_mode()
        if self._compile_pending:
            return self._first_compiled_step(batch, lr)
        x, y = batch
        for group in self._groups:
            group["lr"] = lr
        loss, correct = self._loss_fn(x, y)
        if self._scaler is None:
            loss.backward()
            if self._clip_kind != "none":
                self._clip()
            self.optimizer.step()
        else:  # fp16: scaled backward; a step with inf/nan gradients is skipped
            self._scaler.scale(loss).backward()
            if self._clip_kind != "none":
                self._scaler.unscale_(self.optimizer)
                self._clip()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self._clone_outputs:
            return loss.detach().clone(), correct.clone()
        return loss.detach(), correct

    def _first_compiled_step(self, batch: Batch, lr: float) -> Handle:
        """The first step under torch.compile: compiles forward and backward."""
        self._compile_pending = False
        try:
            return self.train_step(batch, lr)
        except Exception as exc:  # dynamo/inductor raise many types
            self._compile_pending = True
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise TorchCompileError(
                f"torch.compile failed on {self.device.type} ({type(exc).__name__}: {first_line}); "
                "run eager with --set backend.compile=false"
            ) from exc

    # -- data movement and synchronisation ---------------------------------------------------------
    def to_device(self, x: np.ndarray, y: np.ndarray) -> Batch:
        """``x`` ``(N, C, H, W)`` (or ``(N, F)``) float -> model dtype; ``y`` ``(N,)`` -> int64."""
        return self._tensor(x, self.dtype), self._tensor(y, torch.int64)

    def _tensor(self, a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, dtype, non_blocking=True)
        return t.to(dtype=dtype, copy=True)  # own the memory: the suite may reuse its buffers

    def upload(self, x: np.ndarray, y: np.ndarray) -> Batch:
        """The whole split on the device (refused when it will not fit in the GPU's free memory)."""
        if self.device.type == "cuda":
            from fwbench.datasets.pipeline import check_fits

            itemsize = torch.empty((), dtype=self.dtype).element_size()
            check_fits(x.size * itemsize + y.size * 8, torch.cuda.mem_get_info(self.device)[0], "GPU")
        return self.to_device(x, y)

    def take(self, resident: Batch, index: np.ndarray) -> Batch:
        idx = torch.from_numpy(np.asarray(index, np.int64)).to(self.device, non_blocking=True)
        return resident[0].index_select(0, idx), resident[1].index_select(0, idx)

    def sync(self, handle: Any = None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fetch(self, handles: list[Handle]) -> np.ndarray:
        if not handles:
            return np.zeros((0, 2), dtype=np.float64)
        losses = torch.stack([h[0] for h in handles]).to(torch.float64)
        correct = torch.stack([h[1] for h in handles]).to(torch.float64)
        return torch.stack([losses, correct], dim=1).cpu().numpy()

    # -- evaluation and state -------------------------------------------------------------------
    def predict(self, batch: Batch | torch.Tensor) -> np.ndarray:
        """Logits ``(N, classes)`` in eval mode (dropout off, BatchNorm running statistics)."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if self.model.training:  # stays in eval mode until the next training call (_train_mode)
            self.model.eval()
        with torch.inference_mode(), self._autocast():
            logits = self.model(x)
        return logits.float().cpu().numpy() if self.policy.mixed else logits.cpu().numpy()

    def use_dropout_masks(self, keep: dict[str, np.ndarray]) -> None:
        """Check-only seam (`fwbench.conformance.dropout`): every following train-mode forward
        uses these keep masks (bool, canonical layout ``(N, *sample)``, by dropout layer path)
        instead of drawing its own; the layer still scales by ``1 / (1 - p)``."""
        for path, module in self.model.named_modules():
            if isinstance(module, MaskableDropout):
                mask = keep.get(path)
                module.keep = None if mask is None else torch.from_numpy(np.asarray(mask, bool)).to(self.device)

    def _train_mode(self) -> None:
        """Back to train mode after `predict` (switching walks every module: once, not per call)."""
        if not self.model.training:
            self.model.train()

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.canonical.get()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.canonical.set(weights)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def loss_and_grads(self, batch: Batch) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """Eager forward + backward in train mode; parameters, optimizer and BatchNorm running
        statistics are left exactly as they were."""
        self._train_mode()
        x, y = batch
        buffers = [b.clone() for b in self.model.buffers()]
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self._autocast():
                logits = self.model(x)
            logits = logits.float() if self.policy.mixed else logits
            loss = F.cross_entropy(logits, y)
            scale = self._scaler.get_scale() if self._scaler is not None else 1.0
            (loss * scale if scale != 1.0 else loss).backward()
            if scale != 1.0:
                for p in self.params:
                    if p.grad is not None:
                        p.grad.div_(scale)
            grads = self.canonical.grads()
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers, strict=True):
                    b.copy_(saved)
        return logits.detach().cpu().numpy(), loss.item(), grads  # float32 already when mixed

    def peak_device_memory(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None
