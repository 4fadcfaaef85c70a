"""`RunOptions`: one ``bench run`` as the library takes it (`fwbench.run.matrix.plan_run`, `run_planned`).

``bench run`` builds it from its flags (`fwbench.commands.run.run_options`); a script builds it
directly, without argparse::

    plan = plan_run(RunOptions(backends=["numpy"], tasks=["mlp_mnist"], dataset="digits", peak="off"))

Every default is the flag's. Errors still name the ``bench run`` flag a field stands for.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .executor import ExecutorOptions


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What to run and how: the matrix, the cell limits, the executor and the output.

    Sequences are kept as tuples and folders as `Path` (a list or a string is converted)."""

    backends: tuple[str, ...] | None = None
    """``--backend``: backend names; None: every available one."""
    tasks: tuple[str, ...] = ("mlp_mnist",)
    """``--task``: task names or paths to ``.toml`` specs."""
    devices: tuple[str, ...] = ("cpu",)
    """``--device``: ``cpu``, ``gpu`` or ``auto``, one cell per device."""
    overrides: tuple[str, ...] = ()
    """``--set``: ``KEY=VALUE`` texts (dotted keys); ``KEY=a,b,c`` makes a grid."""
    dataset: str | None = None
    """``--dataset``: a dataset instead of each task's; None: the task's own."""
    profile: Literal["quick", "full"] = "full"
    """``--profile``: ``quick`` takes each task's ``[profiles.quick]``."""
    threads: int | None = None
    """``--threads``: threads per cell; None: `fwbench.run.placement.default_threads`."""
    repeats: int | None = None
    """``--repeat``: fresh processes per cell; None: `fwbench.run.matrix.default_repeats`."""
    timeout_s: float = 3600.0
    """``--timeout``: seconds per cell before it is killed."""
    memory_limit_mb: int | None = None
    """``--memory-limit``: address-space limit per cell process in MiB; None: no limit."""
    out: Path = Path("results")
    """``--out``: the results folder; the run writes to ``out/<run_id>/``."""
    resume: bool = False
    """``--resume``: continue the latest run in `out`, skipping cells with an ok record."""
    data_dir: Path | None = None
    """``--data-dir``: the dataset cache; None: ``$FWBENCH_DATA_DIR`` or ``~/.cache/fwbench/data``."""
    executor: str = "local"
    """``--executor``: the registered executor that runs the cells (``local``, ``dask``, a plugin's)."""
    workers: int | None = None
    """``--workers``: with the ``dask`` executor, a local cluster of that many workers."""
    scheduler: str | None = None
    """``--scheduler``: with the ``dask`` executor, the address of a running scheduler."""
    progress: bool = True
    """Not ``--no-progress``: the live progress display (on a terminal only)."""
    peak: str | float = "auto"
    """``--peak``: ``auto`` (cached or measured), ``off``, or the machine's peak in GFLOP/s."""
    report: bool = False
    """``--report``: write the HTML report when the run ends."""
    report_file: Path | None = None
    """``--report FILE``: where the report goes; None: the run folder's ``report.html``."""
    save_weights: Path | None = None
    """``--save-weights``: write each cell's final weights to ``DIR/<cell_id>.npz``."""
    scenario: Literal["training", "inference"] | None = None
    """``--scenario``: None runs each task as written (training)."""
    weights: Path | None = None
    """``--weights``: with ``scenario="inference"``, serve this checkpoint (an ``.npz``)."""
    argv: tuple[str, ...] = ()
    """The command line, kept in the run's manifest (``run.json``)."""

    def __post_init__(self) -> None:
        for name in ("backends", "tasks", "devices", "overrides", "argv"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, _as_tuple(name, value))
        for name in ("out", "data_dir", "report_file", "save_weights", "weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    @property
    def executor_options(self) -> ExecutorOptions:
        """What the executor factory is given (`fwbench.run.executor`)."""
        return ExecutorOptions(workers=self.workers, scheduler=self.scheduler)


def _as_tuple(name: str, value: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"RunOptions({name}={value!r}): give a list of names, e.g. {name}=[{value!r}]")
    return tuple(str(v) for v in value)
