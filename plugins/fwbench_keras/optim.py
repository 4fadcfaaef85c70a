"""Keras optimizers for a task's `OptimizerSpec` and `ClipSpec`.

Exact mode: `ExactOptimizer`, a ``keras.optimizers.Optimizer`` subclass whose ``update_step``
is the suite's rule (`fwbench.spec.OptimizerSpec`, PyTorch's conventions: eps outside the square
root, Adam's bias correction as PyTorch evaluates it, Adagrad from ``initial_accumulator``, L2
weight decay added to the gradient) and whose ``_clip_gradients`` is PyTorch's
(``max / (norm + 1e-6)``). AdamW's decoupled decay is Keras' own ``weight_decay``: Keras applies
``p -= lr * wd * p`` before the update, which is PyTorch's rule.

Native mode: Keras' own classes (``SGD``, ``RMSprop``, ``Adagrad``, ``Adam``, ``AdamW``) with the
spec's hyperparameters; see `fwbench_keras.conventions` for where their formulas differ.
"""
from __future__ import annotations

import keras
import numpy as np
from fwbench.spec import ClipSpec, OptimizerSpec
from keras import ops

#: Added to the global norm before dividing, as in ``torch.nn.utils.clip_grad_norm_``.
CLIP_NORM_EPS = 1e-6


class ExactOptimizer(keras.optimizers.Optimizer):
    """Every rule of the suite in one Keras optimizer; ``spec.name`` picks the rule."""

    def __init__(self, spec: OptimizerSpec, clip: ClipSpec, **kwargs):
        decay = spec.weight_decay if spec.name == "adamw" and spec.weight_decay else None
        super().__init__(learning_rate=float(spec.lr), weight_decay=decay, name=f"exact_{spec.name}", **kwargs)
        self.spec, self.clip = spec, clip

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        name = self.spec.name
        self.slots: dict[str, list] = {}
        if name in ("momentum", "nesterov"):
            self.slots["b"] = self.add_optimizer_variables(variables, "momentum")
        elif name == "rmsprop":
            self.slots["v"] = self.add_optimizer_variables(variables, "velocity")
        elif name == "adagrad":
            # not keras.initializers.Constant: its Python float goes through float32 on TensorFlow
            # (0.1 -> 0.100000001 in a float64 model); assign the value in the variable's dtype
            value = self.spec.initial_accumulator

            def init(shape, dtype=None):
                return ops.convert_to_tensor(np.full(tuple(shape), value, dtype=np.dtype(dtype)))

            self.slots["s"] = [self.add_variable(v.shape, initializer=init, dtype=v.dtype, name="accumulator")
                               for v in variables]
        elif name in ("adam", "adamw"):
            self.slots["m"] = self.add_optimizer_variables(variables, "m")
            self.slots["v"] = self.add_optimizer_variables(variables, "v")

    def _slot(self, key: str, variable):
        return self.slots[key][self._get_variable_index(variable)]

    def _clip_gradients(self, grads):
        kind, limit = self.clip.kind, self.clip.max
        if kind == "norm":
            total = ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads if g is not None))
            coef = ops.minimum(limit / (total + CLIP_NORM_EPS), 1.0)
            return [None if g is None else g * ops.cast(coef, g.dtype) for g in grads]
        if kind == "value":
            return [None if g is None else ops.clip(g, -limit, limit) for g in grads]
        return grads

    def update_step(self, gradient, variable, learning_rate):
        spec, dtype = self.spec, variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        if spec.weight_decay and spec.name != "adamw":
            g = g + spec.weight_decay * variable  # L2
        name = spec.name
        if name == "sgd":
            self.assign_sub(variable, lr * g)
        elif name in ("momentum", "nesterov"):
            b = self._slot("b", variable)
            self.assign(b, spec.momentum * b + g)
            step = g + spec.momentum * b if name == "nesterov" else b
            self.assign_sub(variable, lr * step)
        elif name == "rmsprop":
            v = self._slot("v", variable)
            self.assign(v, spec.alpha * v + (1.0 - spec.alpha) * ops.square(g))
            self.assign_sub(variable, lr * g / (ops.sqrt(v) + spec.eps))
        elif name == "adagrad":
            s = self._slot("s", variable)
            self.assign_add(s, ops.square(g))
            self.assign_sub(variable, lr * g / (ops.sqrt(s) + spec.eps))
        else:  # adam, adamw (the decoupled decay already ran: Keras' weight_decay)
            m, v = self._slot("m", variable), self._slot("v", variable)
            t = ops.cast(self.iterations + 1, dtype)
            b1, b2 = spec.beta1, spec.beta2
            self.assign(m, b1 * m + (1.0 - b1) * g)
            self.assign(v, b2 * v + (1.0 - b2) * ops.square(g))
            # a Python float through ops.cast goes through float32 on TensorFlow: convert directly
            bc1 = 1.0 - ops.power(ops.convert_to_tensor(b1, dtype=dtype), t)
            bc2 = 1.0 - ops.power(ops.convert_to_tensor(b2, dtype=dtype), t)
            self.assign_sub(variable, (lr / bc1) * m / (ops.sqrt(v) / ops.sqrt(bc2) + spec.eps))


def native_optimizer(spec: OptimizerSpec, clip: ClipSpec) -> keras.optimizers.Optimizer:
    """Keras' own optimizer for ``spec`` (Keras' formulas; weight decay is Keras' decoupled one)."""
    kwargs = {"learning_rate": float(spec.lr)}
    if spec.weight_decay:
        kwargs["weight_decay"] = spec.weight_decay
    if clip.kind == "norm":
        kwargs["global_clipnorm"] = clip.max
    elif clip.kind == "value":
        kwargs["clipvalue"] = clip.max
    name = spec.name
    if name == "sgd":
        return keras.optimizers.SGD(**kwargs)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=spec.momentum, nesterov=name == "nesterov", **kwargs)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rho=spec.alpha, epsilon=spec.eps, **kwargs)
    if name == "adagrad":
        return keras.optimizers.Adagrad(initial_accumulator_value=spec.initial_accumulator,
                                        epsilon=spec.eps, **kwargs)
    cls = keras.optimizers.AdamW if name == "adamw" else keras.optimizers.Adam
    if name == "adamw":
        kwargs.setdefault("weight_decay", 0.0)
    return cls(beta_1=spec.beta1, beta_2=spec.beta2, epsilon=spec.eps, **kwargs)


def make_optimizer(spec: OptimizerSpec, clip: ClipSpec, exact: bool) -> keras.optimizers.Optimizer:
    return ExactOptimizer(spec, clip) if exact else native_optimizer(spec, clip)
