"""Microbenchmark ops of the PyTorch backend (`fwbench.ops`): the kernels its trainer runs.

* conv2d: ``F.conv2d`` (what ``Conv2dAct`` calls); ``backward_data`` / ``backward_weights`` are
  ``torch.nn.grad.conv2d_input`` / ``conv2d_weight``, i.e. ``aten.convolution_backward`` with
  only that output enabled; ``forward_backward`` is a forward with autograd and
  ``torch.autograd.grad`` for the input and the weight.
* dense: ``F.linear`` with the weight stored ``(out, in)`` like ``nn.Linear``; ``backward``
  replays the autograd graph of one (untimed) forward (``retain_graph=True``): input and weight
  gradients, nothing else.
* pooling / batchnorm: ``F.max_pool2d`` / ``F.avg_pool2d`` / ``F.batch_norm(training=True)``;
  ``backward`` replays the retained graph of one forward (the saved indices / statistics are
  the forward's, as in training).
* optimizer_step: `fwbench_torch.optim.make_optimizer` (fused or foreach, as the trainer picks)
  on one parameter whose ``.grad`` is the fixed gradient; the learning rate is set per step as
  the trainer does.

``options["compile"]`` (the task's ``[backend] compile``) wraps the forward / gradient functions
of the layer ops in ``torch.compile`` (fullgraph, static shapes) like the trainer's forward; the
graph replays and the optimizer stay eager, as in the trainer. On a GPU, `TorchOps.sync` calls
``torch.cuda.synchronize`` and the peak memory comes from ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fwbench.ops import (
    BATCHNORM_PASSES,
    CONV_PASSES,
    DENSE_PASSES,
    POOL_PASSES,
    Op,
    Ops,
    check_pass,
)

from .optim import make_optimizer
from .trainer import AUTOCAST_DTYPES, DTYPES, compile_mode, find_cxx

#: float32 / float64, and the low precisions a peak is measured in (`fwbench.micro.peak.PEAK_DTYPES`)
OPS_DTYPES = {**DTYPES, **AUTOCAST_DTYPES}


class TorchOps(Ops):
    """Single operations on ``cpu`` or ``cuda`` in float32 / float64 (bfloat16 / float16 for the peak's matmul)."""

    def __init__(self, backend_name: str, device: str, dtype: str, options: dict[str, Any]):
        super().__init__(backend_name, device, dtype)
        self.torch_device = torch.device("cuda" if device == "gpu" else "cpu")
        self.torch_dtype = OPS_DTYPES[dtype]
        self.options = options
        self.mode = compile_mode(options, "<ops>")
        if self.mode is not None and self.torch_device.type == "cpu" and find_cxx() is None:
            raise RuntimeError("torch.compile on CPU needs a C++ compiler and none was found; "
                               "install g++ or set backend.compile = false")
        self.compile_info = {"mode": "eager" if self.mode is None else "torch.compile",
                             "compile_mode": self.mode, "device": str(self.torch_device), "dtype": dtype}

    # -- helpers ----------------------------------------------------------------------------
    def _t(self, a: np.ndarray, grad: bool = False) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device, self.torch_dtype, copy=True)
        return t.requires_grad_(grad)  # a copy: an update must never write into the suite's array

    def _compiled(self, fn):
        if self.mode is None:
            return fn
        return torch.compile(fn, mode=self.mode, fullgraph=True, dynamic=False)

    @staticmethod
    def _np(*tensors: torch.Tensor) -> tuple[np.ndarray, ...]:
        return tuple(t.detach().cpu().numpy().copy() for t in tensors)

    def _replay(self, outputs: torch.Tensor, inputs: tuple[torch.Tensor, ...], dy: torch.Tensor):
        """A callable running only the backward of a retained graph, for ``inputs``."""

        def backward():
            return torch.autograd.grad(outputs, inputs, dy, retain_graph=True)

        return backward

    # -- layers -----------------------------------------------------------------------------
    def conv2d(self, x, w, dy, *, stride, pad, pass_):
        check_pass("conv2d", pass_, CONV_PASSES)
        if pass_ == "forward":
            X, W = self._t(x), self._t(w)
            f = self._compiled(lambda a, b: F.conv2d(a, b, None, stride, pad))
            return Op(lambda: f(X, W), lambda y: self._np(y))
        if pass_ == "backward_data":
            W, DY = self._t(w), self._t(dy)
            f = self._compiled(lambda b, g: torch.nn.grad.conv2d_input(x.shape, b, g, stride, pad))
            return Op(lambda: f(W, DY), lambda dx: self._np(dx), {"kernel": "conv2d_input"})
        if pass_ == "backward_weights":
            X, DY = self._t(x), self._t(dy)
            f = self._compiled(lambda a, g: torch.nn.grad.conv2d_weight(a, w.shape, g, stride, pad))
            return Op(lambda: f(X, DY), lambda dw: self._np(dw), {"kernel": "conv2d_weight"})
        X, W, DY = self._t(x, True), self._t(w, True), self._t(dy)
        forward = self._compiled(lambda a, b: F.conv2d(a, b, None, stride, pad))

        def both():
            y = forward(X, W)
            dx, dw = torch.autograd.grad(y, (X, W), DY)
            return y.detach(), dx, dw

        return Op(both, lambda h: self._np(*h))

    def dense(self, x, w, dy, *, pass_):
        check_pass("dense", pass_, DENSE_PASSES)
        grad = pass_ != "forward"
        X, WT, DY = self._t(x, grad), self._t(np.ascontiguousarray(w.T), grad), self._t(dy)
        forward = self._compiled(lambda a, b: F.linear(a, b))
        canonical = lambda h: (*self._np(*h[:-1]), self._np(h[-1])[0].T.copy())
        if pass_ == "forward":
            return Op(lambda: forward(X, WT), lambda y: self._np(y))
        if pass_ == "backward":
            y = forward(X, WT)
            return Op(self._replay(y, (X, WT), DY), canonical, {"kernel": "autograd replay"})

        def both():
            y = forward(X, WT)
            dx, dwt = torch.autograd.grad(y, (X, WT), DY)
            return y.detach(), dx, dwt

        return Op(both, canonical)

    def pool(self, x, dy, *, kind, size, stride, pass_):
        check_pass("pool", pass_, POOL_PASSES)
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        forward = self._compiled(lambda a: fn(a, size, stride))
        if pass_ == "forward":
            X = self._t(x)
            return Op(lambda: forward(X), lambda y: self._np(y))
        X, DY = self._t(x, True), self._t(dy)
        y = forward(X)
        return Op(self._replay(y, (X,), DY), lambda h: self._np(*h), {"kernel": "autograd replay"})

    def batchnorm(self, x, gamma, beta, dy, *, momentum, eps, pass_):
        check_pass("batchnorm", pass_, BATCHNORM_PASSES)
        c = x.shape[1]
        mean = torch.zeros(c, device=self.torch_device, dtype=self.torch_dtype)
        var = torch.ones(c, device=self.torch_device, dtype=self.torch_dtype)
        grad = pass_ == "backward"
        X, G, B = self._t(x, grad), self._t(gamma, grad), self._t(beta, grad)
        forward = self._compiled(
            lambda a, g, b: F.batch_norm(a, mean, var, g, b, training=True, momentum=momentum, eps=eps))
        if pass_ == "forward":
            return Op(lambda: forward(X, G, B), lambda y: self._np(y))
        y = forward(X, G, B)
        return Op(self._replay(y, (X, G, B), self._t(dy)), lambda h: self._np(*h), {"kernel": "autograd replay"})

    # -- optimizer and matmul ---------------------------------------------------------------
    def optimizer_step(self, spec, params, grad):
        p = torch.nn.Parameter(self._t(params))
        p.grad = self._t(grad)
        optimizer, impl = make_optimizer(spec, [p], self.torch_device.type,
                                         self.options.get("optimizer_impl", "auto"))
        groups, lr = optimizer.param_groups, float(spec.lr)

        def step():
            for group in groups:
                group["lr"] = lr
            optimizer.step()
            return p

        return Op(step, lambda h: self._np(h), {"optimizer": type(optimizer).__name__, "impl": impl})

    def matmul(self, a, b):
        A, B = self._t(a), self._t(b)
        C = torch.empty(a.shape[0], b.shape[1], device=self.torch_device, dtype=self.torch_dtype)
        return Op(lambda: torch.mm(A, B, out=C), lambda h: self._np(h))

    def add(self, a, b):
        A, B = self._t(a), self._t(b)
        C = torch.empty_like(A)
        return Op(lambda: torch.add(A, B, out=C), lambda h: self._np(h))

    # -- device -----------------------------------------------------------------------------
    @property
    def asynchronous(self) -> bool:  # CUDA kernels are queued on a stream; CPU ops are synchronous
        return self.torch_device.type == "cuda"

    def sync(self, handle: Any) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def reset_peak_memory(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.torch_device)

    def peak_device_memory(self) -> int | None:
        if self.torch_device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.torch_device))
        return None


def make_ops(backend, device: str, dtype: str, options: dict | None = None) -> TorchOps:
    """The torch backend's `fwbench.ops.Ops` (call after ``backend.configure``)."""
    return TorchOps(backend.name, device, dtype, dict(options or {}))
