"""The JAX backend's ``[backend]`` options, declared without importing JAX.

`fwbench_jax.backend.JaxBackend.declared_options` lists them (checked by the core when a run is
planned); the trainer and the ops read the parsed values (`jax_options`).
"""
from __future__ import annotations

from typing import Any

from fwbench import execution
from fwbench.options import Option, option_values

from .layout import DEFAULT_LAYOUT, LAYOUTS, Layout

OPTIONS = (
    execution.option(("eager", "compiled"), "compiled", "no jit | jax.jit of the whole step"),
    Option("compile", default=True, choices=(True, False), help="true: jax.jit the train step; false: no jit"),
    Option("layout", default=DEFAULT_LAYOUT, choices=LAYOUTS,
           help="activation layout inside the model (NHWC measured faster on CPU)"),
)


def jax_options(table: dict[str, Any] | None, where: str = "<spec>") -> tuple[bool, Layout]:
    """``(jit, layout)`` from a ``[backend]`` table (defaults: jit, NHWC).

    Raises:
        SpecError: a value outside the choices (one line naming ``where`` and the key).
    """
    values = option_values(OPTIONS, table, where, "jax")
    jit = values["compile"]
    if execution.requested(table or {}) is not None:  # the shared vocabulary decides over compile
        jit = values["execution"] == "compiled"
    return jit, Layout(values["layout"])
