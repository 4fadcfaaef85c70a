"""Cells that run at once (Dask) never share cores; GPU cells nobody can run are refused; a killed
driver leaves no process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import psutil
import pytest
from fwbench.records.results import load_records

QUICK = ["--backend", "toy", "--task", "mlp_mnist", "--dataset", "digits", "--no-progress", "--peak", "off"]


def _overlap(a: dict, b: dict) -> bool:
    start = max(datetime.fromisoformat(a["started_at"]), datetime.fromisoformat(b["started_at"]))
    end = min(datetime.fromisoformat(a["finished_at"]), datetime.fromisoformat(b["finished_at"]))
    return start < end


def test_dask_cells_that_overlap_in_time_run_on_disjoint_cores(bench, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "res"
    result = bench("run", *QUICK, "--set", "epochs=1", "--set", "backend.sleep=0.02", "--set", "seed=1,2",
                   "--executor", "dask", "--workers", "2", "--out", str(out),
                   env={"FWBENCH_LOCK_DIR": str(tmp_path / "locks")})
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = load_records(out)
    assert a["status"] == b["status"] == "ok"
    assert _overlap(a, b), "the two cells did not run at once; the test proves nothing"
    cores = len(os.sched_getaffinity(0))
    for record in (a, b):
        assert len(record["env"]["cpus"]) == max(1, cores // 2)  # --threads defaults to cores // workers
        assert record["env"]["cpus_shared"] is False
    assert not set(a["env"]["cpus"]) & set(b["env"]["cpus"])


def test_gpu_cells_are_refused_when_no_worker_has_a_gpu(toy_site, tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster
    from fwbench.errors import UsageError
    from fwbench.run.cell import Cell
    from fwbench.run.dask_executor import gpu_resource_check

    cell = Cell(run_id="r", backend="toy", task="mlp_mnist", task_path="x.toml", device="gpu")
    env = {**os.environ, "PYTHONPATH": str(toy_site)}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.raises(UsageError, match="need a Dask worker with the GPU resource"):
            gpu_resource_check([cell], client.scheduler_info()["workers"])
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "fwbench.cli", "run", *QUICK, "--device", "gpu",
                               "--executor", "dask", "--scheduler", cluster.scheduler_address,
                               "--out", str(tmp_path / "res")], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("bench: error:") and "GPU resource" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and not (tmp_path / "res").exists()
    assert time.monotonic() - started < 100  # refused, not waited on for ever


def _cell_processes(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in root.children(recursive=True) if "fwbench.run.worker" in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("executor", [[], ["--executor", "dask", "--workers", "1"]], ids=["local", "dask"])
def test_kill_9_of_the_driver_leaves_no_process_of_the_run(toy_site, tmp_path, executor):
    if executor:
        pytest.importorskip("distributed")
    env = {**os.environ, "PYTHONPATH": str(toy_site), "FWBENCH_DATA_DIR": str(tmp_path / "data")}
    driver = subprocess.Popen([sys.executable, "-m", "fwbench.cli", "run", *QUICK, "--set", "backend.fault=hang",
                               "--out", str(tmp_path / "res"), *executor], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    root = psutil.Process(driver.pid)
    deadline = time.monotonic() + 90
    while not (cells := _cell_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cells, "the cell never started"
    family = [root, *root.children(recursive=True)]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(5)
    alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:  # clean up before failing, so a failure leaves nothing behind either
        p.kill()
    assert not alive, f"left running after kill -9 of the driver: {[' '.join(p.cmdline())[:120] for p in alive]}"


def test_allowed_failures_is_set_on_a_running_scheduler_and_recorded(toy_site, tmp_path, monkeypatch):
    """``--scheduler``: the driver's own dask config never reaches a remote scheduler; the
    executor sets allowed-failures on the scheduler itself and every record says the value."""
    pytest.importorskip("distributed")
    import dask
    from distributed import Client, LocalCluster

    monkeypatch.setenv("PYTHONPATH", str(toy_site))  # the in-process worker's cells inherit it
    env = {**os.environ, "FWBENCH_DATA_DIR": str(tmp_path / "data")}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                         dashboard_address=None) as cluster, Client(cluster) as client:
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 0
        proc = subprocess.run([sys.executable, "-m", "fwbench.cli", "run", *QUICK, "--set", "epochs=1",
                               "--executor", "dask", "--scheduler", cluster.scheduler_address,
                               "--out", str(tmp_path / "res")], env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) == 1
    (record,) = load_records(tmp_path / "res")
    assert record["executor"]["allowed_failures"] == 1
