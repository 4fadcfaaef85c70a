"""Mixed precision in the reference: rounding exactly where the policy rounds (`fwbench.precision`).

Storage stays float32 everywhere; a value "in bfloat16" is a float32 array whose every element is
representable in bfloat16 (rounded to nearest even by `ml_dtypes`). Products are accumulated in
float32 by the BLAS, as a framework's bf16/fp16 matmul accumulates in float32. `apply_policy`
wraps the ``forward``/``backward`` of each layer object in place (the layer classes and the model
topology are untouched):

* `Dense` / `Conv2D`: input, weight and bias rounded; output rounded; backward: the incoming
  gradient rounded, the input gradient rounded, the weight and bias gradients (float32 sums of
  rounded products) rounded before they reach the float32 master weights;
* any other layer: computes in float32 on its (already rounded) input, BatchNorm with its float32
  statistics and parameters; its output and input gradient are rounded.

`DynamicLossScale` is the fp16 loss scaling of `fwbench.precision.LOSS_SCALE`.
"""
from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np
from fwbench.precision import LOSS_SCALE, Policy

from . import layers as L

LOW_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def rounder(compute_dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """``f(a)``: a new float32 array, each element of ``a`` rounded to ``compute_dtype`` (nearest even)."""
    low = LOW_DTYPES[compute_dtype]

    def rnd(a: np.ndarray) -> np.ndarray:
        return np.asarray(a).astype(low).astype(np.float32)

    return rnd


def apply_policy(layers: list[L.Layer], pol: Policy) -> None:
    """Wrap every layer of ``layers`` (nested ones included) for the mixed policy ``pol``."""
    if not pol.mixed:
        return
    rnd = rounder(pol.compute_dtype)
    for layer in L.walk(layers):
        if isinstance(layer, L.Dense | L.Conv2D):
            _wrap_parametric(layer, rnd)
        else:
            _wrap_plain(layer, rnd)


def _round_or_none(rnd, a):
    return None if a is None else rnd(a)


def _wrap_plain(layer: L.Layer, rnd) -> None:
    forward, backward = layer.forward, layer.backward

    def rounded_forward(x, training):
        y = forward(x, training)
        if np.shares_memory(y, x):  # a view of its input (flatten): already rounded, never written
            return rnd(y)
        y[...] = rnd(y)  # in place: what the layer kept for its backward (tanh's y) is rounded too
        return y

    layer.forward = rounded_forward
    layer.backward = lambda dy: _round_or_none(rnd, backward(dy))


def _wrap_parametric(layer: L.Dense | L.Conv2D, rnd) -> None:
    """Run the layer's own maths on rounded parameters, keeping the float32 masters in place."""
    forward, backward = layer.forward, layer.backward

    def with_rounded_params(fn, arg, *rest):
        masters = dict(layer.params)
        layer.params.update({name: rnd(p) for name, p in masters.items()})
        try:
            return fn(arg, *rest)
        finally:
            layer.params.update(masters)

    def rounded_forward(x, training):
        return rnd(with_rounded_params(forward, rnd(x), training))

    def rounded_backward(dy):
        dx = with_rounded_params(backward, rnd(dy))
        for g in layer.grads.values():
            g[...] = rnd(g)
        return _round_or_none(rnd, dx)

    layer.forward, layer.backward = rounded_forward, rounded_backward


class DynamicLossScale:
    """fp16 loss scaling (`fwbench.precision.LossScale`): ``scale`` multiplies the loss gradient;
    `update` is told whether the step's gradients were finite and returns whether to apply it."""

    def __init__(self) -> None:
        self.scale = LOSS_SCALE.initial
        self.good_steps = 0
        self.skipped = 0

    def update(self, finite: bool) -> bool:
        if not finite:
            self.scale *= LOSS_SCALE.backoff
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= LOSS_SCALE.growth_interval:
            self.scale *= LOSS_SCALE.growth
            self.good_steps = 0
        return True
