"""The executor protocol: what runs a list of cells (`fwbench.run.local.LocalExecutor`, the Dask one,
or a plugin's), registered with ``register.executor(name, factory)`` (``fwbench_register_executors``).

``bench run --executor NAME`` calls ``factory(**options)`` once, where ``options`` are **all** of
``bench run``'s flags as keywords (``workers``, ``scheduler``, ``threads``, ``timeout``, ``out``...,
argparse's names); a factory takes the ones it needs and must accept the rest (``**_options``),
so a new flag never breaks an executor. It refuses bad options with `fwbench.errors.UsageError`
(exit 2). Then, before any cell starts, ``prepare(cells)`` if the executor has it (connect, check
that some worker can run every cell; raise `UsageError` to refuse), and ``run`` once per round of
repeats (docs/plugins.md, "Executors").
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .local import Cell

#: ``on_record(cell, record)``: a cell's record (a dict, `fwbench.records.record.new_record`), exactly once per cell.
OnRecord = Callable[["Cell", dict[str, Any]], None]


@runtime_checkable
class Executor(Protocol):
    """Runs cells, each in its own process, and hands back one record per cell.

    ``run`` must call ``on_start(cell)`` when a cell starts, ``on_output(line)`` with progress lines
    (optional), and ``on_record(cell, record)`` exactly once per cell, even when the cell's process
    dies, hangs or its machine disappears (`fwbench.run.local.failed_record` makes that record).
    Cells that run at once must not share cores (`fwbench.run.placement`).
    """

    name: str

    def run(self, cells: list[Cell], run_dir: Path, on_record: OnRecord,
            on_start: Callable[[Cell], None], on_output: Callable[[str], None]) -> None:
        """Run every cell of ``cells`` (one round of repeats) and report each record."""


@runtime_checkable
class PreparingExecutor(Executor, Protocol):
    """An executor that checks the plan before any cell starts (``prepare`` raises `UsageError`)."""

    def prepare(self, cells: list[Cell]) -> None:
        """Connect, check resources; refuse what it cannot run."""


#: ``register.executor(name, factory)``: called with every ``bench run`` flag as a keyword.
ExecutorFactory = Callable[..., Executor]
