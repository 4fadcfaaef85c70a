"""The microbenchmark contract: single operations of one backend on one device (`Ops`).

The suite makes every array in NumPy, in the canonical layouts of `fwbench.layers`: images
``x``/``dy`` ``(N, C, H, W)``, convolution kernels ``(F, C, k, k)`` (OIHW), dense weights
``(in, out)``. Each ``Ops`` method moves its arrays to the device (converting layout, e.g. to
NHWC, once, here) and compiles what the backend's trainer would compile, all outside the timed
region, and returns an `Op`: a zero-argument callable that runs the pass once and returns a
*handle*. The suite times ``handle = op(); ops.sync(handle)``; `Op.to_numpy` turns a handle
into canonical NumPy arrays (for correctness checks, never timed).

What a pass computes (``dy`` is the gradient arriving from above, fixed by the suite) and what
`Op.to_numpy` returns:

===================== ===================================== ==========================
op / pass             computes                              to_numpy
===================== ===================================== ==========================
conv2d forward        ``y = conv(x, w)`` (no bias)          ``(y,)``
conv2d backward_data  ``dx`` from ``w, dy``                 ``(dx,)``
conv2d backward_w...  ``dw`` from ``x, dy``                 ``(dw,)``
conv2d forward_bac... all three                             ``(y, dx, dw)``
dense forward         ``y = x @ w``                         ``(y,)``
dense backward        ``dx = dy @ w.T``, ``dw = x.T @ dy``  ``(dx, dw)``
dense forward_bac...  all three                             ``(y, dx, dw)``
pool forward          max / mean over windows               ``(y,)``
pool backward         ``dx``                                ``(dx,)``
batchnorm forward     train mode, running stats updated     ``(y,)``
batchnorm backward    ``dx, dgamma, dbeta`` (train mode)    ``(dx, dgamma, dbeta)``
optimizer_step        one update of ``params`` (state kept) ``(params,)``
matmul                ``a @ b``                             ``(c,)``
add                   ``a + b`` (elementwise)               ``(c,)``
===================== ===================================== ==========================

A backend offers microbenchmarks with a module ``ops.py`` in its own package that defines
``make_ops(backend, device, dtype, options=None) -> Ops`` (see `fwbench.backend.Backend.ops`).
Backward passes should compute only what they name (a framework's "gradient w.r.t. x only"), and
reuse what the backend's trainer runs (its layers, layouts, optimizer code and compile mode).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .spec import OptimizerSpec

CONV_PASSES = ("forward", "backward_data", "backward_weights", "forward_backward")
DENSE_PASSES = ("forward", "backward", "forward_backward")
POOL_PASSES = ("forward", "backward")
BATCHNORM_PASSES = ("forward", "backward")


@dataclass
class Op:
    """One prepared pass: ``run()`` executes it once and returns a handle (not yet synced)."""

    run: Callable[[], Any]
    to_numpy: Callable[[Any], tuple[np.ndarray, ...]] = field(default=lambda handle: ())
    #: Facts for the record (what was compiled, which kernels...).
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        return self.run()


def check_pass(op: str, pass_: str, allowed: tuple[str, ...]) -> None:
    if pass_ not in allowed:
        raise ValueError(f"unknown {op} pass {pass_!r}; expected one of: {', '.join(allowed)}")


class Ops(ABC):
    """Single-operation microbenchmarks of one backend on one device and dtype.

    Subclasses implement the ops they support; the others raise `NotImplementedError` (the suite
    records that as the case's error). ``compile_info`` goes into the record like a trainer's.
    """

    def __init__(self, backend_name: str, device: str, dtype: str):
        self.backend_name, self.device, self.dtype = backend_name, device, dtype
        self.compile_info: dict[str, Any] = {}

    def _missing(self, what: str):
        return NotImplementedError(f"backend {self.backend_name!r} has no {what} microbenchmark op; "
                                   f"implement {type(self).__name__}.{what}")

    def conv2d(self, x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, stride: int, pad: int,
               pass_: str) -> Op:
        """x ``(N, C, H, W)``, w ``(F, C, k, k)``, dy ``(N, F, Ho, Wo)``; symmetric zero padding."""
        raise self._missing("conv2d")

    def dense(self, x: np.ndarray, w: np.ndarray, dy: np.ndarray, *, pass_: str) -> Op:
        """x ``(N, in)``, w ``(in, out)``, dy ``(N, out)``; no bias."""
        raise self._missing("dense")

    def pool(self, x: np.ndarray, dy: np.ndarray, *, kind: str, size: int, stride: int,
             pass_: str) -> Op:
        """``kind`` "max" or "avg"; x ``(N, C, H, W)``, dy ``(N, C, Ho, Wo)``; no padding."""
        raise self._missing("pool")

    def batchnorm(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dy: np.ndarray, *,
                  momentum: float, eps: float, pass_: str) -> Op:
        """Training mode; x, dy ``(N, C, H, W)``, gamma/beta ``(C,)``; running stats start 0 / 1."""
        raise self._missing("batchnorm")

    def optimizer_step(self, spec: OptimizerSpec, params: np.ndarray, grad: np.ndarray) -> Op:
        """Each call: one update of ``params`` ``(n,)`` with the fixed ``grad`` and ``spec.lr``,
        through the optimizer code the backend's trainer uses; optimizer state persists."""
        raise self._missing("optimizer_step")

    def matmul(self, a: np.ndarray, b: np.ndarray) -> Op:
        """``(m, k) @ (k, n)`` with the framework's own matmul (for the machine peak)."""
        raise self._missing("matmul")

    def add(self, a: np.ndarray, b: np.ndarray) -> Op:
        """``a + b`` elementwise, 1-D, into a new or reused device array (the device's memory
        bandwidth for the peak: 3 arrays moved per call)."""
        raise self._missing("add")

    #: Whether ``run()`` returns before the device has finished (GPU streams, JAX dispatch):
    #: `fwbench.doctor.command` then expects timing without `sync` to be much shorter than with it.
    asynchronous: bool = False

    @abstractmethod
    def sync(self, handle: Any) -> None:
        """Block until the work behind ``handle`` has finished on the device."""

    def reset_peak_memory(self) -> None:
        """Start a new device-memory peak (where the framework can)."""

    def peak_device_memory(self) -> int | None:
        """Peak device bytes since the last reset, or None (CPU, or not measurable)."""
        return None
