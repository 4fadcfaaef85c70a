"""Microbenchmark ops of the TensorFlow backend (`fwbench.ops`), through its own model code.

Each layer op is a one-layer `fwbench_tensorflow.model.Network` built from a one-layer spec
(`fwbench.model.analyze`), so the kernels, NHWC/HWIO layouts, padding choice (`conv_padding`) and
the fused batch norm are exactly the trainer's. Images and weights are converted to NHWC / HWIO
once, here. Every pass is one ``tf.function`` with a fixed input signature, compiled like the
trainer's step (``[backend] compile``: true = XLA ``jit_compile=True`` (default), "graph", false
= eager) and called through its concrete function (`fwbench_tensorflow.trainer.Compiled`).

Backward passes use ``tf.GradientTape`` with only the needed sources (``x`` for
``backward_data``, the kernel for ``backward_weights``); TF prunes, and XLA eliminates, what no
requested gradient needs (the forward convolution itself). A tf.function cannot keep a forward's
intermediates for a later call, so max-pool and batch-norm ``backward`` recompute what their
gradient kernels need (the pooled maxima, the batch statistics) in the same executable; torch and
JAX replay a stored forward instead. The optimizer step is `fwbench_tensorflow.optim.Optimizer`
on one variable, compiled the same way.

Sync: every function also returns one element of its first output; `TensorflowOps.sync` reads it
back (CPU) or calls ``tf.test.experimental.sync_devices()`` (GPU).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from fwbench import layers as L
from fwbench.model import analyze
from fwbench.ops import (
    BATCHNORM_PASSES,
    CONV_PASSES,
    DENSE_PASSES,
    POOL_PASSES,
    Op,
    Ops,
    check_pass,
)
from fwbench.spec import ModelSpec

from .model import Network
from .optim import Optimizer
from .options import compile_mode
from .trainer import Compiled


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class TensorflowOps(Ops):
    """Single operations on ``/CPU:0`` or ``/GPU:0`` in float32 / float64."""

    def __init__(self, backend_name: str, device: str, dtype: str, options: dict[str, Any]):
        super().__init__(backend_name, device, dtype)
        self.tf_dtype = tf.as_dtype(dtype)
        self.gpu = device == "gpu"
        self.tf_device = "/GPU:0" if self.gpu else "/CPU:0"
        self.mode = compile_mode(options, "<ops>")
        self.compile_info = {"mode": self.mode, "jit_compile": self.mode == "xla", "layout": "NHWC",
                             "dtype": dtype, "device": self.tf_device}

    # -- helpers ----------------------------------------------------------------------------
    def _const(self, a: np.ndarray) -> tf.Tensor:
        with tf.device(self.tf_device):
            return tf.constant(np.asarray(a, dtype=self.tf_dtype.as_numpy_dtype))

    def _network(self, layer: L.Layer, in_shape: tuple[int, ...], weights: dict[str, np.ndarray]) -> Network:
        info = analyze(ModelSpec(layers=(layer,)), in_shape)
        with tf.device(self.tf_device):
            return Network(info, {k: np.asarray(v, self.tf_dtype.as_numpy_dtype) for k, v in weights.items()},
                           self.tf_dtype)

    def _op(self, fn, args: tuple[tf.Tensor, ...], to_numpy, info: dict | None = None) -> Op:
        """``fn(*args) -> output or tuple``, compiled per `self.mode`, returning ``(probe, *outputs)``."""

        def probed(*a):
            outs = fn(*a)
            outs = tuple(outs) if isinstance(outs, list | tuple) else (outs,)
            return (tf.reshape(outs[0], [-1])[0], *outs)

        if self.mode == "eager":
            call = probed
        else:
            signature = [tf.TensorSpec(a.shape, a.dtype) for a in args]
            call = Compiled(tf.function(probed, input_signature=signature, jit_compile=self.mode == "xla",
                                        autograph=False))
        device = self.tf_device

        def run():
            with tf.device(device):
                return call(*args)

        return Op(run, lambda h: to_numpy([t.numpy() for t in h[1:]]), {"mode": self.mode, **(info or {})})

    # -- layers -----------------------------------------------------------------------------
    def conv2d(self, x, w, dy, *, stride, pad, pass_):
        check_pass("conv2d", pass_, CONV_PASSES)
        f, _, k, _ = w.shape
        net = self._network(L.Conv2D(filters=f, kernel=k, stride=stride, padding=pad, use_bias=False),
                            tuple(x.shape[1:]), {"0.weight": w})
        kernel = net.params["0.weight"]
        X, DY = self._const(_nhwc(x)), self._const(_nhwc(dy))

        def forward(a):
            return net.forward(a, training=True)[0]

        if pass_ == "forward":
            return self._op(forward, (X,), lambda o: (_nchw(o[0]),))
        if pass_ == "backward_data":
            def data(a, g):
                with tf.GradientTape() as tape:
                    tape.watch(a)
                    y = forward(a)
                return tape.gradient(y, a, output_gradients=g)

            return self._op(data, (X, DY), lambda o: (_nchw(o[0]),), {"gradient": "tape, x only"})
        if pass_ == "backward_weights":
            def weights(a, g):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(kernel.variable)
                    y = forward(a)
                return tape.gradient(y, kernel.variable, output_gradients=g)

            return self._op(weights, (X, DY), lambda o: (kernel.to_canonical(o[0]),), {"gradient": "tape, kernel only"})

        def both(a, g):
            with tf.GradientTape() as tape:
                tape.watch(a)
                y = forward(a)
            dx, dw = tape.gradient(y, [a, kernel.variable], output_gradients=g)
            return y, dx, dw

        return self._op(both, (X, DY), lambda o: (_nchw(o[0]), _nchw(o[1]), kernel.to_canonical(o[2])))

    def dense(self, x, w, dy, *, pass_):
        check_pass("dense", pass_, DENSE_PASSES)
        net = self._network(L.Dense(units=w.shape[1], use_bias=False), (w.shape[0],), {"0.weight": w})
        weight = net.params["0.weight"].variable
        X, DY = self._const(x), self._const(dy)

        def forward(a):
            return net.forward(a, training=True)[0]

        if pass_ == "forward":
            return self._op(forward, (X,), tuple)

        def grads(a, g):
            with tf.GradientTape() as tape:
                tape.watch(a)
                y = forward(a)
            dx, dw = tape.gradient(y, [a, weight], output_gradients=g)
            return (dx, dw) if pass_ == "backward" else (y, dx, dw)

        return self._op(grads, (X, DY), tuple)

    def pool(self, x, dy, *, kind, size, stride, pass_):
        check_pass("pool", pass_, POOL_PASSES)
        cls = L.MaxPool if kind == "max" else L.AvgPool
        net = self._network(cls(size=size, stride=stride), tuple(x.shape[1:]), {})
        X, DY = self._const(_nhwc(x)), self._const(_nhwc(dy))

        def forward(a):
            return net.forward(a, training=True)[0]

        if pass_ == "forward":
            return self._op(forward, (X,), lambda o: (_nchw(o[0]),))

        def backward(a, g):
            with tf.GradientTape() as tape:
                tape.watch(a)
                y = forward(a)
            return tape.gradient(y, a, output_gradients=g)

        return self._op(backward, (X, DY), lambda o: (_nchw(o[0]),), {"recomputes": "forward (pool indices)"})

    def batchnorm(self, x, gamma, beta, dy, *, momentum, eps, pass_):
        check_pass("batchnorm", pass_, BATCHNORM_PASSES)
        c = x.shape[1]
        weights = {"0.gamma": gamma, "0.beta": beta, "0.running_mean": np.zeros(c), "0.running_var": np.ones(c)}
        net = self._network(L.BatchNorm(momentum=momentum, eps=eps), tuple(x.shape[1:]), weights)
        variables = [net.params["0.gamma"].variable, net.params["0.beta"].variable]
        X, DY = self._const(_nhwc(x)), self._const(_nhwc(dy))

        if pass_ == "forward":
            def forward(a):
                y, updates = net.forward(a, training=True)
                for variable, value in updates:  # the running statistics, as the trainer does
                    variable.assign(value)
                return y

            return self._op(forward, (X,), lambda o: (_nchw(o[0]),))

        def backward(a, g):
            with tf.GradientTape() as tape:
                tape.watch(a)
                y, _ = net.forward(a, training=True)
            return tape.gradient(y, [a, *variables], output_gradients=g)

        return self._op(backward, (X, DY), lambda o: (_nchw(o[0]), o[1], o[2]),
                        {"recomputes": "batch statistics"})

    # -- optimizer and matmul ---------------------------------------------------------------
    def optimizer_step(self, spec, params, grad):
        with tf.device(self.tf_device):
            var = tf.Variable(np.asarray(params, self.tf_dtype.as_numpy_dtype), name="params")
            optimizer = Optimizer(spec, [var])
        G, LR = self._const(grad), self._const(np.asarray(spec.lr))

        def step(g, lr):
            optimizer.apply([g], lr)
            return tf.reshape(var.read_value(), [-1])[:1]

        op = self._op(step, (G, LR), lambda o: (var.numpy().copy(),), {"optimizer": "fwbench_tensorflow.optim"})
        return op

    def matmul(self, a, b):
        A, B = self._const(a), self._const(b)
        return self._op(tf.linalg.matmul, (A, B), tuple)

    def add(self, a, b):
        A, B = self._const(a), self._const(b)
        return self._op(tf.add, (A, B), tuple)

    # -- device -----------------------------------------------------------------------------
    @property
    def asynchronous(self) -> bool:  # GPU kernels are queued; a CPU function returns when done
        return self.gpu

    def sync(self, handle: Any) -> None:
        if self.gpu:
            tf.test.experimental.sync_devices()
        else:
            handle[0].numpy()  # a host read returns once the function's work is done

    def reset_peak_memory(self) -> None:
        if self.gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_device_memory(self) -> int | None:
        if self.gpu:
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        return None


def make_ops(backend, device: str, dtype: str, options: dict | None = None) -> TensorflowOps:
    """The TensorFlow backend's `fwbench.ops.Ops` (call after ``backend.configure``)."""
    return TensorflowOps(backend.name, device, dtype, dict(options or {}))
