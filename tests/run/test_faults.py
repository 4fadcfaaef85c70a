"""Fault tolerance beyond a single crashing cell: Dask scale-out with a dying worker, a full disk."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fwbench.records import results as results_mod
from fwbench.records.results import load_records, write_record
from fwbench.run.cell import Cell
from fwbench.run.local import execute

QUICK = ["--backend", "toy", "--task", "mlp_mnist", "--dataset", "digits", "--set", "epochs=2", "--no-progress",
         "--repeat", "1"]


def comparable(record):
    """What must be equal between executors: everything but timings, paths and hosts."""
    m = record["metrics"]
    return (record["cell_id"], record["status"], record["params"], m["test_accuracy"], m["test_loss"],
            [(h["train_loss"], h["val_loss"], h["val_accuracy"]) for h in m["history"]])


def test_dask_executor_gives_the_same_records_as_local(bench, tmp_path):
    # one thread each: with --workers 2 the default would halve the cores (BLAS sums change order)
    local = bench("run", *QUICK, "--threads", "1", "--set", "seed=1,2", "--out", str(tmp_path / "local"))
    dask = bench("run", *QUICK, "--threads", "1", "--set", "seed=1,2", "--out", str(tmp_path / "dask"),
                 "--executor", "dask", "--workers", "2")
    assert local.returncode == 0 and dask.returncode == 0, dask.stderr[-2000:]
    a = sorted(map(comparable, load_records(tmp_path / "local")))
    b = sorted(map(comparable, load_records(tmp_path / "dask")))
    assert a == b and len(a) == 2
    for record in load_records(tmp_path / "dask"):
        assert record["executor"]["name"] == "dask" and record["env"]["hostname"]


def test_a_worker_killed_mid_cell_is_retried_on_another(toy_site, tmp_path):
    pytest.importorskip("distributed")
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.scheduler.allowed-failures": 1})
    env = {**os.environ, "PYTHONPATH": str(toy_site)}
    os.environ["PYTHONPATH"] = str(toy_site)  # the cluster's worker processes inherit it
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = tmp_path / "res"
        proc = subprocess.Popen([sys.executable, "-m", "fwbench.cli", "run", *QUICK, "--set", "backend.sleep=0.1",
                                 "--out", str(out), "--executor", "dask", "--scheduler", cluster.scheduler_address],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = threading.Event()

        def kill_the_busy_worker():
            deadline = time.time() + 60
            while time.time() < deadline and not killed.is_set():
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(1.5)  # well inside the cell (it runs for ~7 s)
                    pids = client.run(os.getpid, workers=busy)
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.set()
                time.sleep(0.2)

        killer = threading.Thread(target=kill_the_busy_worker)
        killer.start()
        _stdout, stderr = proc.communicate(timeout=300)
        killer.join()
    assert killed.is_set(), "the test never saw the cell running"
    assert proc.returncode == 0, stderr[-2000:]
    (record,) = load_records(out)
    assert record["status"] == "ok" and record["metrics"]["epochs_run"] == 2


def test_dask_options_without_dask_executor_are_rejected(bench):
    result = bench("run", *QUICK, "--workers", "2")
    assert result.returncode == 2 and "only apply to --executor dask" in result.stderr


def test_disk_full_while_writing_a_record_keeps_earlier_records(tmp_path, monkeypatch):
    cells = [Cell(run_id="r", backend="toy", task=f"t{i}", task_path="x.toml") for i in range(3)]
    records = [{"schema_version": 1, "cell_id": c.cell_id, "status": "ok", "run_id": "r"} for c in cells]

    class FillsTheDisk:
        def run(self, cells, run_dir, on_record, on_start, on_output):
            for i, (cell, record) in enumerate(zip(cells, records)):
                if i == 1:
                    def no_space(fd):
                        raise OSError(errno.ENOSPC, "No space left on device")
                    monkeypatch.setattr(results_mod.os, "fsync", no_space)
                on_record(cell, dict(record))

    outcome = execute(cells, tmp_path / "run", FillsTheDisk())
    assert len(outcome.write_errors) == 2 and "No space left on device" in outcome.write_errors[0]
    assert [r["cell_id"] for r in load_records(tmp_path / "run")] == [cells[0].cell_id]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".tmp-")]


def test_write_record_never_clobbers(tmp_path):
    record = {"schema_version": 1, "cell_id": "same", "status": "ok"}
    first, second = write_record(record, tmp_path), write_record(record, tmp_path)
    assert first != second and first.exists() and second.exists()
