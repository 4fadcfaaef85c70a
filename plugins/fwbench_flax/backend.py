"""`FlaxBackend`: Flax NNX on JAX. Configured exactly like the raw ``jax`` backend (threads,
platform, preallocation, full-precision matmuls), so the two differ only in the frontend."""
from __future__ import annotations

import importlib.metadata
from typing import Any

from fwbench import execution
from fwbench.backend import BuildRequest, Trainer
from fwbench.frontends import Frontend, engine_backend, rule_of_check
from fwbench.options import Option, option_values

MODES = ("exact", "native")


class FlaxBackend(Frontend):
    name = "flax"
    #: fp32, tf32 (GPU), bf16/fp16 (nnx.Linear/Conv ``dtype`` = the compute dtype, ``param_dtype``
    #: float32; fp16 with dynamic loss scaling in the step).
    precisions = ("fp32", "tf32", "bf16", "fp16")
    declared_options = (
        Option("mode", default="exact", choices=MODES,
               help="exact: the suite's conventions; native: optax's and Flax's own formulas"),
        execution.option(("compiled",), "compiled", "a jitted train step (see step)"),
        Option("step", default="nnx.jit", choices=("nnx.jit", "functional"),
               help="nnx.jit: the step on the module objects (split/merge every call); functional: "
                    "nnx.split once, a pure jax.jit step over the state, merged back when read"),
    )
    engine_names = ("jax",)
    engine = "jax"
    requires = ("flax", "jax", "optax")
    extra = "flax"
    description = "Flax NNX modules + optax (nnx.Optimizer), one nnx.jit train step, on JAX"

    def __init__(self, mode: str = "exact"):
        self.mode = mode

    def for_options(self, options: dict[str, Any], source: str = "<spec>") -> FlaxBackend:
        return FlaxBackend(option_values(self.declared_options, options, source, self.name)["mode"])

    def native_differences(self, task, quantity: str) -> list[str]:
        """For `bench check` in native mode: the conventions that explain a differing quantity."""
        if self.mode != "native":
            return []
        from .conventions import differences

        rule = rule_of_check(quantity)
        return [] if rule is None else differences(task, **rule)

    def version(self) -> str:
        return importlib.metadata.version("flax")

    def release_caches(self) -> None:
        """The compiled steps (JAX's caches) and the shared optax transforms behind them."""
        from .optim import make_transform

        make_transform.cache_clear()
        engine_backend("jax").release_caches()

    def gpu_available(self) -> bool:
        return engine_backend("jax").gpu_available()

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        facts = dict(engine_backend("jax").configure(device=device, threads=threads))
        facts.update(flax=self.version(), mode=self.mode)
        return facts

    def build(self, request: BuildRequest) -> Trainer:
        from .trainer import FlaxTrainer

        return FlaxTrainer(request, self.mode)
