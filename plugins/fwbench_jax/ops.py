"""Microbenchmark ops of the JAX backend (`fwbench.ops`), through its own model and optimizer code.

Each layer op is the `fwbench_jax.model.Model` of a one-layer spec (`fwbench.model.analyze`), so
the layout (NHWC by default, ``[backend] layout``), convolution precision and batch-norm maths are
the trainer's; arrays are converted and put on the device once, here.

* ``forward``: ``jax.jit`` of the model's forward (train mode).
* backward passes: ``jax.vjp`` of the forward restricted to the needed argument (``x`` for
  ``backward_data``, the kernel for ``backward_weights``, ``x`` and the weights otherwise),
  taken once outside the timed region; the timed call is the jitted pullback applied to ``dy``,
  so it runs on the forward's residuals (pool maxima, batch statistics) as training does, and XLA
  drops what the requested gradient does not need.
* ``forward_backward``: one jitted function computing the output and the pullback.
* optimizer_step: `fwbench_jax.optim.Optimizer` (optax) update + ``optax.apply_updates`` in one
  ``jax.jit`` with parameters and state donated, as in the trainer.

``[backend] compile = false`` runs the same functions without ``jax.jit``. `JaxOps.sync` is
``jax.block_until_ready``; the device peak is ``memory_stats()["peak_bytes_in_use"]`` (GPU).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
from fwbench.spec import ClipSpec, ModelSpec

from .model import PRECISION, Model
from .optim import Optimizer
from .options import jax_options


class JaxOps(Ops):
    """Single operations on one JAX device (CPU or GPU) in float32 / float64."""

    def __init__(self, backend_name: str, device: str, dtype: str, options: dict[str, Any]):
        super().__init__(backend_name, device, dtype)
        if dtype == "float64" and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)  # as the trainer does for float64 tasks
        self.np_dtype = np.dtype(dtype)
        self.jit, self.layout = jax_options(options, "<ops>")
        self.jax_device = jax.devices("gpu" if device == "gpu" else "cpu")[0]
        self.compile_info = {"mode": "jit" if self.jit else "eager", "layout": self.layout.name,
                             "dtype": dtype, "device": str(self.jax_device)}

    # -- helpers ----------------------------------------------------------------------------
    def _put(self, tree):
        # copies: a donated buffer must never alias the suite's NumPy array
        cast = jax.tree.map(lambda a: np.array(a, dtype=self.np_dtype, order="C", copy=True), tree)
        return jax.device_put(cast, self.jax_device)

    def _jit(self, fn, **kw):
        return jax.jit(fn, **kw) if self.jit else fn

    def _model(self, layer: L.Layer, in_shape: tuple[int, ...]) -> Model:
        return Model(analyze(ModelSpec(layers=(layer,)), in_shape), self.layout)

    def _passes(self, pass_: str, forward, primals: tuple, wrt: tuple[int, ...], dy, to_numpy) -> Op:
        """``forward(*primals) -> y``; the op for ``pass_``: the forward, the pullback for the
        primals at ``wrt``, or both. ``to_numpy`` gets the outputs as NumPy arrays."""

        def restricted(*chosen):
            args = list(primals)
            for i, value in zip(wrt, chosen, strict=True):
                args[i] = value
            return forward(*args)

        convert = lambda h: to_numpy(jax.device_get(h))
        if pass_ == "forward":
            f = self._jit(forward)
            return Op(lambda: f(*primals), lambda y: to_numpy((np.asarray(jax.device_get(y)),)))
        if pass_ == "forward_backward":
            def both(*chosen_and_dy):
                *chosen, g = chosen_and_dy
                y, pullback = jax.vjp(restricted, *chosen)
                return (y, *pullback(g))

            f = self._jit(both)
            chosen = tuple(primals[i] for i in wrt)
            return Op(lambda: f(*chosen, dy), convert)
        _, pullback = jax.vjp(restricted, *(primals[i] for i in wrt))  # the forward, once, untimed
        f = self._jit(lambda p, g: p(g))
        return Op(lambda: f(pullback, dy), convert, {"gradient": "jitted vjp pullback on stored residuals"})

    # -- layers -----------------------------------------------------------------------------
    def conv2d(self, x, w, dy, *, stride, pad, pass_):
        check_pass("conv2d", pass_, CONV_PASSES)
        f, _, k, _ = w.shape
        model = self._model(L.Conv2D(filters=f, kernel=k, stride=stride, padding=pad, use_bias=False),
                            tuple(x.shape[1:]))
        lay = self.layout
        X, W, DY = self._put((lay.images_in(x), lay.param_in(w), lay.images_in(dy)))

        def forward(a, kernel):
            return model.apply({"0.weight": kernel}, {}, a, train=True)[0]

        wrt = {"backward_data": (0,), "backward_weights": (1,)}.get(pass_, (0, 1))
        outputs = {"backward_data": (lay.images_out,), "backward_weights": (lay.param_out,),
                   "forward": (lay.images_out,)}.get(pass_, (lay.images_out, lay.images_out, lay.param_out))

        def to_numpy(arrays):
            return tuple(np.ascontiguousarray(fn(np.asarray(a))) for fn, a in zip(outputs, arrays, strict=True))

        return self._passes(pass_, forward, (X, W), wrt, DY, to_numpy)

    def dense(self, x, w, dy, *, pass_):
        check_pass("dense", pass_, DENSE_PASSES)
        model = self._model(L.Dense(units=w.shape[1], use_bias=False), (w.shape[0],))
        X, W, DY = self._put((x, w, dy))

        def forward(a, weight):
            return model.apply({"0.weight": weight}, {}, a, train=True)[0]

        to_numpy = lambda arrays: tuple(np.array(a) for a in arrays)
        return self._passes(pass_, forward, (X, W), (0, 1), DY, to_numpy)

    def pool(self, x, dy, *, kind, size, stride, pass_):
        check_pass("pool", pass_, POOL_PASSES)
        cls = L.MaxPool if kind == "max" else L.AvgPool
        model = self._model(cls(size=size, stride=stride), tuple(x.shape[1:]))
        X, DY = self._put((self.layout.images_in(x), self.layout.images_in(dy)))

        def forward(a):
            return model.apply({}, {}, a, train=True)[0]

        to_numpy = lambda arrays: (np.ascontiguousarray(self.layout.images_out(np.asarray(arrays[0]))),)
        return self._passes(pass_, forward, (X,), (0,), DY, to_numpy)

    def batchnorm(self, x, gamma, beta, dy, *, momentum, eps, pass_):
        check_pass("batchnorm", pass_, BATCHNORM_PASSES)
        c = x.shape[1]
        model = self._model(L.BatchNorm(momentum=momentum, eps=eps), tuple(x.shape[1:]))
        lay = self.layout
        X, G, B, DY = self._put((lay.images_in(x), gamma, beta, lay.images_in(dy)))
        state = self._put({"0.running_mean": np.zeros(c), "0.running_var": np.ones(c)})

        def images_out(arrays):
            return (np.ascontiguousarray(lay.images_out(np.asarray(arrays[0]))), *map(np.array, arrays[1:]))

        if pass_ == "forward":  # the output and the new running statistics, as in training
            f = self._jit(lambda a, g, b, s: model.apply({"0.gamma": g, "0.beta": b}, s, a, train=True))
            return Op(lambda: f(X, G, B, state), lambda h: images_out((jax.device_get(h[0]),)))

        def forward(a, g, b):
            return model.apply({"0.gamma": g, "0.beta": b}, state, a, train=True)[0]

        return self._passes(pass_, forward, (X, G, B), (0, 1, 2), DY, images_out)

    # -- optimizer and matmul ---------------------------------------------------------------
    def optimizer_step(self, spec, params, grad):
        optimizer = Optimizer(spec, ClipSpec())
        p = self._put({"p": params})
        g = self._put({"p": grad})
        holder = [p, jax.device_put(optimizer.init(p), self.jax_device)]
        lr = float(spec.lr)

        def update(params, state, grads, rate):
            updates, state = optimizer.update(grads, state, params, rate)
            return optax.apply_updates(params, updates), state

        step = self._jit(update, donate_argnums=(0, 1)) if self.jit else update

        def run():
            holder[0], holder[1] = step(holder[0], holder[1], g, lr)
            return holder[0]

        return Op(run, lambda h: (np.array(jax.device_get(h["p"])),), {"optimizer": "optax chain (fwbench_jax.optim)"})

    def matmul(self, a, b):
        A, B = self._put((a, b))
        f = self._jit(lambda u, v: jnp.matmul(u, v, precision=PRECISION))
        return Op(lambda: f(A, B), lambda h: (np.array(h),))

    def add(self, a, b):
        A, B = self._put((a, b))
        f = self._jit(lambda u, v: u + v)
        return Op(lambda: f(A, B), lambda h: (np.array(h),))

    # -- device -----------------------------------------------------------------------------
    #: JAX dispatches asynchronously on every platform (the CPU too).
    asynchronous = True

    def sync(self, handle: Any) -> None:
        jax.block_until_ready(handle)

    def peak_device_memory(self) -> int | None:
        if self.jax_device.platform == "cpu":
            return None
        stats = self.jax_device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")  # not resettable: the process's peak so far
        return int(peak) if peak is not None else None


def make_ops(backend, device: str, dtype: str, options: dict | None = None) -> JaxOps:
    """The JAX backend's `fwbench.ops.Ops` (call after ``backend.configure``)."""
    return JaxOps(backend.name, device, dtype, dict(options or {}))
