"""Microbenchmark ops of the NumPy backend (`fwbench.ops`): its own layer and optimizer code.

Each op builds the layer object the trainer would (`fwbench_numpy.layers`), loads the suite's
canonical arrays and converts images to the internal ``(C, H, W, N)`` layout once, outside the
timed region. Passes map onto the layer code like this:

* conv2d ``forward`` = `Conv2D.forward`; ``forward_backward`` = forward + `Conv2D.backward`
  (weight and input gradients); ``backward_weights`` = the forward's ``im2col`` of ``x`` (its
  buffers, inside the timed call: torch, TensorFlow and JAX start from ``x`` too) and
  `Conv2D.backward` with ``needs_input_grad = False``;
  ``backward_data`` = the input-gradient half of `Conv2D.backward` alone (``W^T @ dy`` into the
  layer's column buffer, then `col2im`), which the layer only runs together with the weights'.
* dense / pooling / batchnorm: ``forward`` = the layer's forward in training mode, ``backward``
  = its backward after one untimed forward.
* optimizer_step: `fwbench_numpy.optim.make_optimizer` over the one parameter vector.

Everything runs synchronously on the CPU, so `NumpyOps.sync` has nothing to wait for.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from fwbench.ops import (
    BATCHNORM_PASSES,
    CONV_PASSES,
    DENSE_PASSES,
    POOL_PASSES,
    Op,
    Ops,
    check_pass,
)

from . import layers as L
from .conv import col2im, conv_output_size, im2col
from .optim import make_optimizer


def _internal(x: np.ndarray, dtype) -> np.ndarray:
    """Canonical ``(N, C, H, W)`` -> the backend's ``(C, H, W, N)``, contiguous."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0), dtype=dtype)


def _canonical(x: np.ndarray) -> np.ndarray:
    """``(C, H, W, N)`` -> ``(N, C, H, W)`` (a copy: layer outputs are reused buffers)."""
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def _copies(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.array(a, copy=True) for a in arrays)


def conv_backward_data(layer: L.Conv2D, dy: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """The input-gradient half of `L.Conv2D.backward`, with the same buffers and calls.

    ``dcols = W2^T @ dy2`` into the layer's column buffer, then `col2im` into ``dx``
    ``(C, H, W, N)``; a pointwise (1x1, stride 1, unpadded) convolution is one GEMM.
    """
    f = layer.filters
    dy2 = dy.reshape(f, -1)
    w2 = layer.params["weight"].reshape(f, -1)
    dx = layer.ws.get("dx", x_shape)
    if layer._pointwise:
        np.matmul(w2.T, dy2, out=dx.reshape(dx.shape[0], -1))
        return dx
    cols = layer.ws.get("cols", (w2.shape[1], dy2.shape[1]))
    np.matmul(w2.T, dy2, out=cols)
    return col2im(cols, x_shape, layer.kernel, layer.stride, layer.pad, dx)


def conv_columns(layer: L.Conv2D, x: np.ndarray) -> np.ndarray:
    """The forward's column matrix of ``x`` ``(C, H, W, N)``: `im2col` into the layer's own
    buffers, exactly as `L.Conv2D.forward` makes it (a view of ``x`` for a pointwise conv)."""
    c, h, w, n = x.shape
    k, s, p = layer.kernel, layer.stride, layer.pad
    if layer._pointwise:
        return x.reshape(c, h * w * n)
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    buf = layer.ws.get("cols", (c * k * k, ho * wo * n))
    padded = layer.ws.get("padded", (c, h + 2 * p, w + 2 * p, n), zero=True) if p else None
    return im2col(x, k, s, p, buf, padded)


class NumpyOps(Ops):
    """Single layers and optimizer steps of the NumPy backend, float32 or float64, CPU."""

    def __init__(self, backend_name: str, dtype: str):
        super().__init__(backend_name, "cpu", dtype)
        self.np_dtype = np.dtype(dtype)
        self.compile_info = {"mode": "eager", "layout": "CHWN", "dtype": dtype}

    # -- layers -----------------------------------------------------------------------------
    def conv2d(self, x, w, dy, *, stride, pad, pass_):
        check_pass("conv2d", pass_, CONV_PASSES)
        f, c, k, _ = w.shape
        layer = L.Conv2D("0", c, f, k, stride, pad, False, self.np_dtype)
        layer.params["weight"][...] = w
        xi, dyi = _internal(x, self.np_dtype), _internal(dy, self.np_dtype)
        dw = layer.grads["weight"]
        if pass_ == "forward":
            return Op(lambda: layer.forward(xi, True), lambda y: (_canonical(y),))
        if pass_ == "backward_data":
            return Op(lambda: conv_backward_data(layer, dyi, xi.shape), lambda dx: (_canonical(dx),),
                      {"note": "input-gradient half of Conv2D.backward (W^T dy + col2im)"})
        if pass_ == "backward_weights":
            layer.needs_input_grad = False

            def weights():
                layer._cols, layer._x_shape = conv_columns(layer, xi), xi.shape
                layer.backward(dyi)
                return dw

            return Op(weights, lambda g: _copies(g),
                      {"note": "im2col(x) + Conv2D.backward without the input gradient"})

        def both():
            y = layer.forward(xi, True)
            return y, layer.backward(dyi), dw

        return Op(both, lambda h: (_canonical(h[0]), _canonical(h[1]), h[2].copy()))

    def dense(self, x, w, dy, *, pass_):
        check_pass("dense", pass_, DENSE_PASSES)
        layer = L.Dense("0", w.shape[0], w.shape[1], False, self.np_dtype)
        layer.params["weight"][...] = w
        xd, dyd = (np.ascontiguousarray(a, dtype=self.np_dtype) for a in (x, dy))
        dw = layer.grads["weight"]
        if pass_ == "forward":
            return Op(lambda: layer.forward(xd, True), lambda y: _copies(y))
        if pass_ == "backward":
            layer.forward(xd, True)
            return Op(lambda: (layer.backward(dyd), dw), lambda h: _copies(*h))
        return Op(lambda: (layer.forward(xd, True), layer.backward(dyd), dw), lambda h: _copies(*h))

    def pool(self, x, dy, *, kind, size, stride, pass_):
        check_pass("pool", pass_, POOL_PASSES)
        cls = L.MaxPool if kind == "max" else L.AvgPool
        layer = cls("0", size, stride, self.np_dtype)
        xi, dyi = _internal(x, self.np_dtype), _internal(dy, self.np_dtype)
        if pass_ == "forward":
            return Op(lambda: layer.forward(xi, True), lambda y: (_canonical(y),))
        layer.forward(xi, True)
        return Op(lambda: layer.backward(dyi), lambda dx: (_canonical(dx),))

    def batchnorm(self, x, gamma, beta, dy, *, momentum, eps, pass_):
        check_pass("batchnorm", pass_, BATCHNORM_PASSES)
        layer = L.BatchNorm("0", x.shape[1], momentum, eps, self.np_dtype)
        layer.params["gamma"][...] = gamma
        layer.params["beta"][...] = beta
        xi, dyi = _internal(x, self.np_dtype), _internal(dy, self.np_dtype)
        if pass_ == "forward":
            return Op(lambda: layer.forward(xi, True), lambda y: (_canonical(y),))
        layer.forward(xi, True)
        grads = layer.grads

        def backward():
            return layer.backward(dyi), grads["gamma"], grads["beta"]

        return Op(backward, lambda h: (_canonical(h[0]), h[1].copy(), h[2].copy()))

    # -- optimizer and matmul ---------------------------------------------------------------
    def optimizer_step(self, spec, params, grad):
        p = np.array(params, dtype=self.np_dtype, copy=True)
        g = np.array(grad, dtype=self.np_dtype, copy=True)
        optimizer = make_optimizer(spec, [p], [g])
        lr = float(spec.lr)

        def step():
            optimizer.step(lr)
            return p

        return Op(step, lambda h: _copies(h), {"optimizer": type(optimizer).__name__})

    def matmul(self, a, b):
        a = np.ascontiguousarray(a, dtype=self.np_dtype)
        b = np.ascontiguousarray(b, dtype=self.np_dtype)
        c = np.empty((a.shape[0], b.shape[1]), self.np_dtype)
        return Op(lambda: np.matmul(a, b, out=c), lambda h: _copies(h))

    def add(self, a, b):
        a = np.ascontiguousarray(a, dtype=self.np_dtype)
        b = np.ascontiguousarray(b, dtype=self.np_dtype)
        c = np.empty_like(a)
        return Op(lambda: np.add(a, b, out=c), lambda h: _copies(h))

    def sync(self, handle: Any) -> None:
        """NumPy is synchronous: the work is done when the call returns."""


def make_ops(backend, device: str, dtype: str, options: dict | None = None) -> NumpyOps:
    """The NumPy backend's `fwbench.ops.Ops` (CPU only)."""
    from .backend import _check_device

    _check_device(device)
    return NumpyOps(backend.name, dtype)
