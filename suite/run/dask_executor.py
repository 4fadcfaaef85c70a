"""Run cells on a Dask cluster (``bench run --executor dask``): scale-out on an existing engine.

* ``--workers N`` starts an embedded ``distributed.LocalCluster`` (N single-threaded worker
  processes, each with the ``GPU`` resource when this host has a GPU); ``--scheduler
  tcp://HOST:8786`` uses a running cluster (start its workers with ``dask worker --nthreads 1
  [--resources GPU=1]`` so a worker runs one cell at a time).
* On a worker each cell still runs in its own process (`run_cell_subprocess`), on cores no other
  cell of that host holds and with at most one GPU (`fwbench.run.placement`); the record's
  environment is the worker's. Records stream back as cells finish; the driver writes them.
* GPU cells ask for the ``GPU`` worker resource, so two cells never share a device. A GPU cell
  that no worker could run is refused before anything starts (one line, exit 2).
* Timeouts: each cell's own (``--timeout``) applies on its worker as locally; the driver also
  gives up on the cluster when no cell has finished for the longest cell timeout plus
  `STALL_GRACE_S` (a lost worker, a wedged scheduler) and records the rest as timed out.
* A worker that dies mid-cell: the scheduler retries the cell once on another worker
  (``allowed-failures = 1``, set on the scheduler itself, a remote one included; the value in
  force is in every record's ``executor``); a second death becomes a failed record.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from .cell import Cell
from .executor import ExecutorOptions
from .local import failed_record, run_cell_subprocess

ALLOWED_FAILURES = 1
#: Seconds beyond the longest cell timeout the driver waits for any cell to finish.
STALL_GRACE_S = 120.0


def run_cell_on_worker(cell: Cell) -> dict:
    """Executed on a Dask worker: one cell in a fresh interpreter, logs kept on the worker."""
    import socket

    work = Path(tempfile.mkdtemp(prefix="fwbench-dask-"))
    record = run_cell_subprocess(cell, work)
    worker = None
    try:
        from distributed import get_worker

        worker = str(get_worker().name)
    except (ImportError, ValueError):
        pass
    record["executor"] = {"name": "dask", "worker_host": socket.gethostname(), "worker": worker,
                          "worker_log": record.get("log")}
    return record


def _set_allowed_failures(dask_scheduler=None, allowed: int = ALLOWED_FAILURES) -> int:
    """On the scheduler: how often a task may lose its worker before it fails (returns it)."""
    import dask

    dask.config.set({"distributed.scheduler.allowed-failures": allowed})
    if dask_scheduler is not None and hasattr(dask_scheduler, "allowed_failures"):
        dask_scheduler.allowed_failures = allowed
        return int(dask_scheduler.allowed_failures)
    return allowed


def gpu_resource_check(cells: list[Cell], workers: dict[str, dict]) -> None:
    """Refuse GPU cells no worker can run (they would wait for ever).

    ``workers``: ``client.scheduler_info()["workers"]`` (address -> info with ``resources``).

    Raises:
        UsageError: a ``--device gpu`` cell and no worker with the ``GPU`` resource.
    """
    gpu_cells = [c for c in cells if c.device == "gpu"]
    if not gpu_cells:
        return
    if any((info.get("resources") or {}).get("GPU", 0) >= 1 for info in workers.values()):
        return
    raise UsageError(f"{len(gpu_cells)} --device gpu cell(s) need a Dask worker with the GPU resource and none of "
                     f"the {len(workers)} worker(s) has one (no GPU on this host, or workers started without it); "
                     "start workers with `dask worker --nthreads 1 --resources GPU=1`, or use --device cpu/auto")


class DaskExecutor:
    name = "dask"

    def __init__(self, options: ExecutorOptions | None = None):
        """``options.workers`` starts a local cluster; ``options.scheduler`` uses a running one."""
        workers, scheduler = (options.workers, options.scheduler) if options else (None, None)
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--executor dask needs dask.distributed — install with: pip install 'fwbench[dask]'") from None
        if workers and scheduler:
            raise UsageError("--workers starts a local cluster and --scheduler uses a running one; give only one")
        self.workers, self.scheduler = workers, scheduler
        self.allowed_failures: int | None = None
        self._connection = None

    def prepare(self, cells: list[Cell]) -> None:
        """Connect (or start the local cluster) and refuse what no worker can run, before any
        cell starts (called by the planner; `run` calls it itself otherwise)."""
        if self._connection is None:
            self._connection = self._client()
        client = self._connection[0]
        try:
            gpu_resource_check(cells, client.scheduler_info().get("workers", {}))
        except UsageError:
            self._close()
            raise

    def _close(self) -> None:
        if self._connection is not None:
            client, cluster = self._connection
            self._connection = None
            client.close()
            if cluster is not None:
                cluster.close()

    def _client(self):
        import dask
        from distributed import Client, LocalCluster

        from .placement import visible_gpus

        dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
        if self.scheduler:
            try:
                return Client(self.scheduler, timeout="20s"), None
            except OSError as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {self.scheduler} ({exc}); start it with "
                                 "`dask scheduler` or use --workers N for a local cluster") from None
        # every worker may run a GPU cell; the per-host GPU claim gives each running cell its own GPU
        resources = {"GPU": 1} if visible_gpus() else None
        cluster = LocalCluster(n_workers=self.workers or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, resources=resources)
        return Client(cluster), cluster

    def run(self, cells: list[Cell], run_dir: Path, on_record: Callable[[Cell, dict], None],
            on_start: Callable[[Cell], None], on_output: Callable[[str], None]) -> None:
        from distributed import wait

        self.prepare(cells)
        client, _ = self._connection
        try:
            try:
                self.allowed_failures = client.run_on_scheduler(_set_allowed_failures, allowed=ALLOWED_FAILURES)
            except Exception:  # noqa: BLE001 - a scheduler that refuses remote calls: say what is known
                self.allowed_failures = None
            futures = {}
            for cell in cells:
                resources = {"GPU": 1} if cell.device == "gpu" else None
                future = client.submit(run_cell_on_worker, cell, key=f"fwbench-{cell.run_id}-{cell.cell_id}",
                                       resources=resources, pure=False)
                futures[future] = cell
                on_start(cell)
            stall_s = max((c.timeout_s for c in cells), default=0.0) + STALL_GRACE_S
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=stall_s, return_when="FIRST_COMPLETED")
                if not done:  # nothing finished in a whole cell timeout: the cluster lost them
                    for future in pending:
                        future.cancel()
                        on_record(futures[future], self._stalled(futures[future], stall_s))
                    break
                for future in done:
                    on_record(futures[future], self._record(futures[future], future))
        finally:
            self._close()

    def _record(self, cell: Cell, future) -> dict:
        try:
            record = future.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker and friends become data
            retried = "" if self.allowed_failures is None else f" (its worker died {self.allowed_failures + 1} times)"
            record = failed_record(cell, "failed", f"the cell failed on the Dask cluster{retried}: "
                                   f"{type(exc).__name__}: {exc}".replace("\n", " "))
            record["executor"] = {"name": "dask"}
        record.setdefault("executor", {"name": "dask"})["allowed_failures"] = self.allowed_failures
        return record

    def _stalled(self, cell: Cell, stall_s: float) -> dict:
        record = failed_record(cell, "timeout", f"no cell finished on the Dask cluster for {stall_s:g} s (the longest "
                               "cell timeout + grace): its worker was lost or never started it; check the cluster, "
                               "then continue with --resume")
        record["executor"] = {"name": "dask", "allowed_failures": self.allowed_failures}
        return record
