"""Where optax's stock optimizers and ``nnx.BatchNorm`` (native mode) differ from the suite's
conventions (optax's Adam and AdamW equal the suite's rule and are not listed). Exact mode uses the raw jax backend's optax chains and `ExactBatchNorm` instead."""
from __future__ import annotations

from fwbench.layers import BatchNorm, Residual
from fwbench.spec import TaskSpec


def _has(layers, kind) -> bool:
    return any(isinstance(layer, kind) or (isinstance(layer, Residual) and _has(layer.layers, kind))
               for layer in layers)


def differences(task: TaskSpec, optimizer: str | None = None, clip: str | None = None) -> list[str]:
    """Conventions of ``task`` (or of ``optimizer``/``clip`` instead) that native mode computes
    differently."""
    name = optimizer or task.optimizer.name
    kind = clip or task.clip.kind
    out = []
    if name == "rmsprop":
        out.append("rmsprop: optax.rmsprop puts eps inside the square root")
    if name == "adagrad":
        out.append("adagrad: optax.adagrad puts eps inside the square root and starts the accumulator at 0.1")
    if kind == "norm":
        out.append("clip norm: optax scales by max / max(norm, max); the suite by max / (norm + 1e-6)")
    if _has(task.model.layers, BatchNorm):
        out.append("batchnorm: nnx.BatchNorm's running variance uses the biased batch variance (the suite: unbiased)")
    return out
