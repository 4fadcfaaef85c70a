"""The Keras backend's ``[backend]`` options, checked without importing Keras or an engine."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from fwbench import execution
from fwbench.errors import SpecError
from fwbench.options import Option, option_values

#: Engine -> (module that must be importable, the raw fwbench backend that configures it).
ENGINES: dict[str, tuple[str, str]] = {
    "tensorflow": ("tensorflow", "tensorflow"),
    "jax": ("jax", "jax"),
    "torch": ("torch", "torch"),
}
DEFAULT_ENGINE = "tensorflow"
MODES = ("exact", "native")
COMPILE = ("auto", True, False)


def engine_installed(engine: str) -> bool:
    return importlib.util.find_spec(ENGINES[engine][0]) is not None


@dataclass(frozen=True)
class KerasOptions:
    """Resolved options: the engine, exact or native conventions, ``jit_compile``."""

    engine: str = DEFAULT_ENGINE
    mode: str = "exact"
    compile: str | bool = "auto"


OPTIONS = (
    Option("engine", default=DEFAULT_ENGINE, choices=tuple(ENGINES),
           help="the Keras 3 engine (KERAS_BACKEND), set in the cell process before Keras loads"),
    Option("mode", default="exact", choices=MODES,
           help="exact: the suite's conventions; native: Keras' own formulas"),
    Option("compile", default="auto", choices=COMPILE,
           help="model.compile(jit_compile=...): auto = Keras' choice per engine"),
    execution.option(("eager", "graph", "compiled"), "compiled",
                     "run_eagerly=True | jit_compile=False | jit_compile=True (decides over compile)"),
)


def parse_options(options: dict[str, Any], source: str = "<spec>") -> KerasOptions:
    """``task.backend`` -> `KerasOptions`. Raises `SpecError` naming the key and the fix."""
    values = option_values(OPTIONS, options, source, "keras")
    engine = values["engine"]
    if not engine_installed(engine):
        raise SpecError(source, "backend.engine", f"Keras engine {engine!r} is not installed; install "
                        f"it with: pip install 'fwbench[{ENGINES[engine][1]}]' or pick another engine")
    return KerasOptions(engine, values["mode"], values["compile"])
