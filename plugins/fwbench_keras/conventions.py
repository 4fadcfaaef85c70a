"""Where Keras' own formulas (native mode) differ from the suite's conventions.

Exact mode replaces each of these (`fwbench_keras.optim`, `fwbench_keras.layers`); native mode
keeps Keras' and lists them in the record (``compile_info["differs"]``) and in ``bench check``.
This module imports nothing heavy: `differences` reads only the spec.
"""
from __future__ import annotations

from fwbench.layers import Activation, BatchNorm, Residual
from fwbench.spec import TaskSpec


def _has(layers, kind) -> bool:
    for layer in layers:
        if isinstance(layer, kind):
            return True
        if isinstance(layer, Residual) and _has(layer.layers, kind):
            return True
    return False


def differences(task: TaskSpec, optimizer: str | None = None, clip: str | None = None) -> list[str]:
    """Conventions of ``task`` (or of ``optimizer``/``clip`` instead of the task's) that Keras'
    own classes compute differently."""
    name = optimizer or task.optimizer.name
    kind = clip or task.clip.kind
    out = []
    if name in ("adam", "adamw"):
        out.append("adam: Keras adds eps to sqrt(v_hat) after folding both bias corrections into lr "
                   "(eps scaled by sqrt(1 - b2^t)); the suite adds it to sqrt(v)/sqrt(1 - b2^t)")
    if name == "rmsprop":
        out.append("rmsprop: Keras puts eps inside the square root")
    if name == "adagrad":
        out.append("adagrad: Keras puts eps inside the square root")
    if name == "nesterov":
        out.append("nesterov: Keras' SGD stores -lr * b (velocity) and applies the Nesterov step "
                   "to it, which differs when lr changes between steps")
    if name == "momentum":
        out.append("momentum: Keras' SGD keeps the velocity -lr * b, so a changing lr weighs past "
                   "gradients differently")
    if (task.optimizer.weight_decay or optimizer) and name not in ("adamw", "sgd"):  # plain SGD: the same
        out.append("weight_decay: Keras' is decoupled (p -= lr * wd * p); the suite's is L2 on the gradient")
    if kind == "norm":
        out.append("clip norm: Keras scales by max / max(norm, max); the suite by max / (norm + 1e-6)")
    if _has(task.model.layers, BatchNorm):
        out.append("batchnorm: Keras' moving variance uses the biased batch variance (the suite: unbiased)")
    return out


def _leaky_after_add(layers) -> bool:
    """A residual block whose sum goes into a leaky ReLU (its own activation, or an activation
    layer right after a linear one), at any depth."""
    for i, layer in enumerate(layers):
        if isinstance(layer, Residual):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if layer.activation == "leaky_relu" or (
                    layer.activation == "linear" and isinstance(nxt, Activation) and nxt.fn == "leaky_relu"):
                return True
            if _leaky_after_add(layer.layers):
                return True
    return False


def tensorflow_remapper_fault(task: TaskSpec, mode: str) -> str | None:
    """Why grappler's remapper must be off for ``task`` on the TensorFlow engine, or None.

    Keras' ``LeakyReLU`` (native mode; exact mode uses `ExactLeakyReLU`, no ``LeakyRelu`` op) after
    a residual sum is fused by TensorFlow's graph optimizer with the convolution and the add into one
    ``_FusedConv2D`` whose float32 result is wrong (predictions off by 0.72 in issue 21; eager,
    float64 and the raw TensorFlow backend are right).
    """
    if mode != "native" or not _leaky_after_add(task.model.layers):
        return None
    return ("grappler remapper off: it fuses conv + add + LeakyRelu into a _FusedConv2D whose float32 "
            "result is wrong (tests/fixtures/conformance/projected_residual_leaky_relu.toml)")
