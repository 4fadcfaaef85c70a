"""The task as the checks run it: dropout off, the batch size, gauge biases dropped, adaptive
rules' eps conditioned (the reasons are in `fwbench.conformance.checks` and docs/conformance.md)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..layers import (
    AvgPool,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    MaxPool,
    Residual,
)
from ..spec import OptimizerSpec, TaskSpec

BATCH = 8
CONDITIONED_EPS = 1e-3
ADAPTIVE = ("rmsprop", "adagrad", "adam", "adamw")


def _no_dropout(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    out = []
    for layer in layers:
        if isinstance(layer, Dropout):
            layer = dataclasses.replace(layer, rate=0.0)
        elif isinstance(layer, Residual):
            layer = dataclasses.replace(layer, layers=_no_dropout(layer.layers))
        out.append(layer)
    return tuple(out)


#: Layers that add a per-channel constant to their output when one is added to their input.
_SHIFT_EQUIVARIANT = (Dropout, MaxPool, AvgPool, GlobalAvgPool, Flatten)


def without_gauge_biases(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """``layers`` with ``use_bias = False`` on every conv/dense whose output reaches a BatchNorm
    through shift-equivariant layers only (dropout, pooling, flatten, linear activation): BN
    subtracts the batch mean, so that bias has an exact gradient of 0 and stays at its initial 0."""
    out = list(layers)
    for i, layer in enumerate(out):
        if isinstance(layer, Residual):
            out[i] = dataclasses.replace(layer, layers=without_gauge_biases(layer.layers))
        elif isinstance(layer, Conv2D | Dense) and layer.use_bias and layer.activation == "linear":
            j = i + 1
            while j < len(out) and (isinstance(out[j], _SHIFT_EQUIVARIANT)
                                    or getattr(out[j], "fn", None) == "linear"):
                j += 1
            if j < len(out) and isinstance(out[j], BatchNorm):
                out[i] = dataclasses.replace(layer, use_bias=False)
    return tuple(out)


def deterministic(task: TaskSpec, dtype: str, gauge_free: bool = False, batch_size: int = BATCH,
                  **changes) -> TaskSpec:
    layers = _no_dropout(task.model.layers)
    if gauge_free:
        layers = without_gauge_biases(layers)
    model = dataclasses.replace(task.model, layers=changes.pop("layers", layers))
    training = dataclasses.replace(task.training, dtype=dtype, batch_size=batch_size)
    return dataclasses.replace(task, model=model, training=training, **changes)


def _put(trainer, batch, dtype):
    x, y = batch
    return trainer.to_device(x.astype(dtype), y.astype(np.int64))


def conditioned(opt: OptimizerSpec) -> OptimizerSpec:
    """``opt`` with an adaptive rule's eps raised to at least `CONDITIONED_EPS` and ``10 * lr * wd``.

    ``g / (sqrt(v) + eps)`` turns any error in a (near-)zero gradient into a step of up to
    ``lr * error / eps``, and L2 decay feeds a parameter's own noise back into its gradient with a
    gain of ``lr * wd / eps`` per step; with this eps both stay far below the tolerances. The exact
    eps is checked on the well-conditioned probe (``rule:``).
    """
    if opt.name in ADAPTIVE:
        return dataclasses.replace(opt, eps=max(opt.eps, CONDITIONED_EPS, 10 * opt.lr * opt.weight_decay))
    return opt
