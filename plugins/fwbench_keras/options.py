"""The Keras backend's ``[backend]`` options, checked without importing Keras or an engine."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from fwbench.errors import SpecError

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


def parse_options(options: dict[str, Any], source: str = "<spec>") -> KerasOptions:
    """``task.backend`` -> `KerasOptions`. Raises `SpecError` naming the key and the fix."""
    engine = str(options.get("engine", DEFAULT_ENGINE)).lower()
    if engine not in ENGINES:
        raise SpecError(source, "backend.engine", f"unknown Keras engine {options.get('engine')!r}; "
                        f"expected one of: {', '.join(ENGINES)}")
    if not engine_installed(engine):
        raise SpecError(source, "backend.engine", f"Keras engine {engine!r} is not installed; install "
                        f"it with: pip install 'fwbench[{ENGINES[engine][1]}]' or pick another engine")
    mode = str(options.get("mode", "exact")).lower()
    if mode not in MODES:
        raise SpecError(source, "backend.mode", f"unknown mode {options.get('mode')!r}; expected exact "
                        "(the suite's conventions) or native (Keras' own formulas)")
    compile_ = options.get("compile", "auto")
    if compile_ not in COMPILE:
        raise SpecError(source, "backend.compile", f"the keras backend takes compile = \"auto\" (Keras' "
                        f"choice), true (jit_compile=True) or false, got {compile_!r}")
    return KerasOptions(engine, mode, compile_)
