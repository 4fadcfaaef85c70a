"""The executor protocol: what runs a list of cells (`fwbench.run.local.LocalExecutor`, the Dask one,
or a plugin's), registered with ``register.executor(name, factory)`` (``fwbench_register_executors``).

A run (``bench run --executor NAME``, or `fwbench.run.matrix.run_planned` with
``RunOptions(executor=NAME)``) calls ``factory(options)`` once, where ``options`` is an
`ExecutorOptions`: the typed settings that concern executors (``workers``, ``scheduler``). Each
cell carries its own threads, timeout and memory limit (`fwbench.run.cell.Cell`). A factory
refuses bad options with `fwbench.errors.UsageError` (exit 2). Then, before any cell starts,
``prepare(cells)`` if the executor has it (connect, check that some worker can run every cell;
raise `UsageError` to refuse), and ``run`` once per round of repeats (docs/plugins.md, "Executors").
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .cell import Cell

#: ``on_record(cell, record)``: a cell's record (a dict, `fwbench.records.record.new_record`), exactly once per cell.
OnRecord = Callable[["Cell", dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class ExecutorOptions:
    """What an executor factory is given (`fwbench.run.options.RunOptions.executor_options`)."""

    workers: int | None = None
    """``--workers``: start a local cluster of that many single-threaded workers (None: the executor's choice)."""
    scheduler: str | None = None
    """``--scheduler``: the address of a running scheduler to use (e.g. ``tcp://HOST:8786``)."""


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


#: ``register.executor(name, factory)``: ``factory(options: ExecutorOptions) -> Executor``, once per run.
ExecutorFactory = Callable[[ExecutorOptions], Executor]
