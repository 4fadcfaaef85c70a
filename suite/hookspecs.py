"""Plugin hooks. Built-in plugins implement them exactly as a third-party package does.

A package becomes a plugin by naming a module in the ``fwbench`` entry-point group::

    [project.entry-points.fwbench]
    mybackend = "my_package.fwbench_plugin"

and implementing any of these hooks with ``@fwbench.hookimpl``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # heavy or circular imports only for type checkers
    import argparse

    from .registry import Registry

hookspec = pluggy.HookspecMarker("fwbench")
hookimpl = pluggy.HookimplMarker("fwbench")


@hookspec
def fwbench_register_backends(register: Registry) -> None:
    """Called once at start-up: ``register.backend(BackendSubclass())`` for each backend offered."""


@hookspec
def fwbench_register_tasks(register: Registry) -> None:
    """Called once at start-up: ``register.task_file(path)`` or ``register.task_dir(dir)``."""


@hookspec
def fwbench_register_studies(register: Registry) -> None:
    """Called once at start-up: ``register.study_file(path)`` or ``register.study_dir(dir)``."""


@hookspec
def fwbench_register_datasets(register: Registry) -> None:
    """Called once at start-up: ``register.dataset(DatasetSubclass())`` for each dataset offered."""


@hookspec
def fwbench_register_executors(register: Registry) -> None:
    """Called once at start-up: ``register.executor(name, factory)``; the runner picks one by name."""


@hookspec
def fwbench_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Called while the CLI is built: add sub-commands with ``subparsers.add_parser(...)``.

    Set ``parser.set_defaults(handler=fn)``; ``fn(args) -> int`` is the exit code.
    """


@hookspec
def fwbench_environment() -> dict[str, Any] | None:
    """Called inside each cell's process: extra facts to store under the record's ``env.plugins``."""


@hookspec
def fwbench_result_recorded(record: dict[str, Any], path: str) -> None:
    """Called in the driver right after one cell's record is written to ``path``."""


@hookspec
def fwbench_session_finished(records: list[dict[str, Any]], out_dir: str) -> None:
    """Called in the driver after the last cell of a ``bench run`` (reports, uploads...)."""
