"""The built-in task specs: every ``*.toml`` file beside this module, registered as a plugin."""
from __future__ import annotations

from pathlib import Path

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_tasks(register):
    register.task_dir(Path(__file__).parent)
