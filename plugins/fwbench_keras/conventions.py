"""Where Keras' own formulas (native mode) differ from the suite's conventions.

Exact mode replaces each of these (`fwbench_keras.optim`, `fwbench_keras.layers`); native mode
keeps Keras' and lists them in the record (``compile_info["differs"]``) and in ``bench check``.
This module imports nothing heavy: `differences` reads only the spec.
"""
from __future__ import annotations

from fwbench.layers import BatchNorm, Residual
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
