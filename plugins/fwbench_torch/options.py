"""The PyTorch backend's ``[backend]`` options, declared without importing torch.

`fwbench_torch.backend.TorchBackend.declared_options` lists them (the core checks them when a run
is planned); the trainer and the ops read the parsed values with `fwbench.options.option_values`.
"""
from __future__ import annotations

from typing import Any

from fwbench import execution
from fwbench.options import Option, option_values

#: The ``torch.compile`` modes ``backend.compile`` accepts by name.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

OPTIONS = (
    Option("compile", default=False, choices=(False, True, "eager", *COMPILE_MODES),
           help="false/eager: eager PyTorch; true/default or a torch.compile mode: torch.compile the step"),
    execution.option(("eager", "compiled", "compiled+cudagraphs"), "eager",
                     "eager PyTorch | torch.compile | torch.compile mode reduce-overhead (CUDA graphs, GPU)"),
    Option("optimizer_impl", default="auto", choices=("auto", "fused", "foreach", "forloop"),
           help="torch.optim implementation: auto = fused where torch has it, else foreach"),
)


def torch_options(table: dict[str, Any] | None, where: str = "<spec>") -> dict[str, Any]:
    """``{"compile": mode or None (eager), "optimizer_impl": …}`` from a ``[backend]`` table.

    Raises:
        SpecError: a value outside the choices (one line naming ``where`` and the key).
    """
    values = option_values(OPTIONS, table, where, "torch")
    mode = values["compile"]
    values["compile"] = None if mode in (False, "eager") else "default" if mode is True else mode
    if execution.requested(table or {}) is not None:  # the shared vocabulary decides over compile
        values["compile"] = {"eager": None, "compiled": "default",
                             "compiled+cudagraphs": "reduce-overhead"}[values["execution"]]
    return values
