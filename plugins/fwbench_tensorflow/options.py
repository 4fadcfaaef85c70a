"""The TensorFlow backend's ``[backend]`` options, declared without importing TensorFlow.

`fwbench_tensorflow.backend.TensorflowBackend.declared_options` lists them (checked by the core
when a run is planned); the trainer and the ops read the parsed values (`compile_mode`).
"""
from __future__ import annotations

from typing import Any

from fwbench import execution
from fwbench.options import Option, option_values

#: The modes, also accepted by name as ``backend.compile`` values.
MODES = ("xla", "graph", "eager")

OPTIONS = (
    execution.option(("eager", "graph", "compiled"), "compiled",
                     "eager | tf.function without XLA | tf.function(jit_compile=True)"),
    Option("compile", default=True, choices=(True, False, *MODES),
           help="true/xla: tf.function(jit_compile=True); graph: tf.function without XLA; false/eager"),
)


def compile_mode(table: dict[str, Any] | None, where: str = "<spec>") -> str:
    """``"xla"``, ``"graph"`` or ``"eager"`` from a ``[backend]`` table (default true = xla).

    Raises:
        SpecError: a value outside the choices (one line naming ``where`` and the key).
    """
    values = option_values(OPTIONS, table, where, "tensorflow")
    if execution.requested(table or {}) is not None:  # the shared vocabulary decides over compile
        return {"eager": "eager", "graph": "graph", "compiled": "xla"}[values["execution"]]
    value = values["compile"]
    return "xla" if value is True else "eager" if value is False else value
