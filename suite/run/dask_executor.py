"""Run cells on a Dask cluster (``bench run --executor dask``): scale-out on an existing engine.

* ``--workers N`` starts an embedded ``distributed.LocalCluster`` (N single-threaded worker
  processes); ``--scheduler tcp://HOST:8786`` uses a running cluster (start its workers with
  ``dask worker --nthreads 1 [--resources GPU=1]`` so a worker runs one cell at a time).
* On a worker each cell still runs in its own process (`run_cell_subprocess`), so the record's
  environment is the worker's. Records stream back as cells finish; the driver writes them.
* GPU cells ask for the ``GPU`` worker resource, so two cells never share a device.
* A worker that dies mid-cell: the scheduler retries the cell once on another worker
  (``distributed.scheduler.allowed-failures = 1``); a second death becomes a failed record.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from .local import Cell, failed_record, run_cell_subprocess

ALLOWED_FAILURES = 1


def run_cell_on_worker(cell: Cell) -> dict:
    """Executed on a Dask worker: one cell in a fresh interpreter, logs kept on the worker."""
    import socket

    work = Path(tempfile.mkdtemp(prefix="fwbench-dask-"))
    record = run_cell_subprocess(cell, work)
    record["executor"] = {"name": "dask", "worker_host": socket.gethostname(), "worker_log": record.get("log")}
    return record


class DaskExecutor:
    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None, **_options):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--executor dask needs dask.distributed — install with: pip install 'fwbench[dask]'") from None
        if workers and scheduler:
            raise UsageError("--workers starts a local cluster and --scheduler uses a running one; give only one")
        self.workers, self.scheduler = workers, scheduler

    def _client(self):
        import dask
        from distributed import Client, LocalCluster

        dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
        if self.scheduler:
            try:
                return Client(self.scheduler, timeout="20s"), None
            except OSError as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {self.scheduler} ({exc}); start it with "
                                 "`dask scheduler` or use --workers N for a local cluster") from None
        cluster = LocalCluster(n_workers=self.workers or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, resources=None)
        return Client(cluster), cluster

    def run(self, cells: list[Cell], run_dir: Path, on_record: Callable[[Cell, dict], None],
            on_start: Callable[[Cell], None], on_output: Callable[[str], None]) -> None:
        from distributed import as_completed

        client, cluster = self._client()
        try:
            futures = {}
            for cell in cells:
                resources = {"GPU": 1} if cell.device == "gpu" else None
                future = client.submit(run_cell_on_worker, cell, key=f"fwbench-{cell.run_id}-{cell.cell_id}",
                                       resources=resources, pure=False)
                futures[future] = cell
                on_start(cell)
            for future in as_completed(futures):
                cell = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker and friends become data
                    record = failed_record(cell, "failed", f"the cell failed on the Dask cluster: "
                                           f"{type(exc).__name__}: {exc} (workers died {ALLOWED_FAILURES + 1} times "
                                           "running it?)".replace("\n", " "))
                on_record(cell, record)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
