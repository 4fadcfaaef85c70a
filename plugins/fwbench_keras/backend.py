"""`KerasBackend`: Keras 3 on one engine (TensorFlow, JAX or PyTorch), chosen per cell.

Nothing here imports Keras or an engine at module level. `for_options` returns a copy bound to
the cell's ``[backend]`` options; its `configure` sets ``KERAS_BACKEND`` and then lets the engine's
own fwbench backend set threads, devices and precision exactly as for the raw engine, so Keras on
an engine and the raw engine run under the same settings.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
from typing import Any

from fwbench.backend import Availability, Backend, BuildRequest, Trainer
from fwbench.errors import UsageError
from fwbench.frontends import Frontend, engine_backend, rule_of_check

from .options import ENGINES, OPTIONS, KerasOptions, engine_installed, parse_options


def _raw_engine_backend(engine: str) -> Backend:
    """The fwbench backend of the raw engine, which knows how to configure it (from the registry)."""
    return engine_backend(ENGINES[engine][1])


class KerasBackend(Frontend):
    name = "keras"
    #: fp32, tf32 (GPU), bf16/fp16 (mixed_bfloat16 / mixed_float16 dtype policies; fp16 with a
    #: LossScaleOptimizer).
    precisions = ("fp32", "tf32", "bf16", "fp16")
    declared_options = OPTIONS
    engine_names = tuple(ENGINES)
    requires = ("keras",)
    extra = "keras"
    description = ("Keras 3 (functional model, Keras optimizers, model.compile + train_on_batch) "
                   "on an engine: --set backend.engine=tensorflow|jax|torch")

    def __init__(self, options: KerasOptions | None = None):
        self.options = options or KerasOptions()

    def for_options(self, options: dict[str, Any], source: str = "<spec>") -> KerasBackend:
        return KerasBackend(parse_options(options, source))

    def availability(self) -> Availability:
        base = super().availability()
        if not base.ok:
            return base
        if not any(engine_installed(e) for e in ENGINES):
            return Availability(False, "no Keras engine installed — install one with: pip install "
                                "'fwbench[keras,jax]' (or tensorflow, torch)")
        return base

    @property
    def engine(self) -> str:
        return self.options.engine

    @property
    def mode(self) -> str:
        return self.options.mode

    def engines(self) -> dict[str, Availability]:
        """Installed = the engine's module is importable (Keras needs no more of the raw backend)."""
        return {e: (Availability(True) if engine_installed(e) else
                    Availability(False, f"pip install 'fwbench[{ENGINES[e][1]}]'")) for e in ENGINES}

    def native_differences(self, task, quantity: str) -> list[str]:
        """In native mode, the Keras conventions behind a differing ``quantity`` (none in exact
        mode, or for logits, loss and gradients: those must agree)."""
        if self.mode != "native":
            return []
        from .conventions import differences

        rule = rule_of_check(quantity)
        if rule is None:
            return []
        if rule.get("clip") in ("norm", "value"):
            return differences(task, **rule) or ["clip value: same rule, on Keras' own SGD"]
        return differences(task, **rule)

    # -- the contract -----------------------------------------------------------------------------
    def version(self) -> str:
        return importlib.metadata.version("keras")

    def release_caches(self) -> None:
        """Keras' global state (``clear_session``: layer names, traced functions), then the engine's."""
        if "keras" in sys.modules:
            import keras

            keras.backend.clear_session()
        _raw_engine_backend(self.options.engine).release_caches()

    def gpu_available(self) -> bool:
        return _raw_engine_backend(self.options.engine).gpu_available()

    def configure(self, *, device: str, threads: int) -> dict[str, Any]:
        """``KERAS_BACKEND`` = the engine, then the engine's own configure, then Keras itself.

        Raises:
            UsageError: Keras was already imported in this process with another engine.
        """
        engine = self.options.engine
        if "keras" in sys.modules:
            import keras

            if keras.backend.backend() != engine:
                raise UsageError(f"Keras is already loaded with engine {keras.backend.backend()!r} in "
                                 f"this process; engine {engine!r} needs its own process (bench run "
                                 "runs each cell in one)")
        os.environ["KERAS_BACKEND"] = engine
        facts = dict(_raw_engine_backend(engine).configure(device=device, threads=threads))
        import keras

        facts.update(keras=keras.__version__, keras_backend=keras.backend.backend(),
                     image_data_format=keras.config.image_data_format(), mode=self.options.mode)
        return facts

    def build(self, request: BuildRequest) -> Trainer:
        from .trainer import KerasTrainer

        return KerasTrainer(request, self.options)


def replace_options(backend: KerasBackend, **changes) -> KerasBackend:
    """A copy of ``backend`` with some options changed (tests)."""
    return KerasBackend(dataclasses.replace(backend.options, **changes))
