"""The built-in task specs: every ``*.toml`` file beside this module (training tasks) and in
``bench/`` (microbenchmarks: conv2d, dense, pooling, batchnorm, optim_step, param_scaling),
registered as a plugin. Both are found by name (``--task conv2d``)."""
from __future__ import annotations

from pathlib import Path

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_tasks(register):
    register.task_dir(Path(__file__).parent)
    register.task_dir(Path(__file__).parent / "bench")
