"""Disjoint core sets and one GPU per cell (`fwbench.run.placement`), and `--threads` with `--workers`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from fwbench.errors import UsageError
from fwbench.run.placement import Claim, claim_cores, claim_gpu, threads_per_cell, with_placement
from fwbench.run.process import pin_threads


def test_concurrent_claims_get_disjoint_cores_and_the_one_too_many_says_it_shares(tmp_path):
    first = claim_cores(2, cores=[0, 1, 2, 3], folder=tmp_path)
    second = claim_cores(2, cores=[0, 1, 2, 3], folder=tmp_path)
    assert first.cpus == [0, 1] and second.cpus == [2, 3]
    assert not first.shared and not second.shared
    third = claim_cores(1, cores=[0, 1, 2, 3], folder=tmp_path)
    assert third.shared and len(third.cpus) == 1
    first.release()
    again = claim_cores(2, cores=[0, 1, 2, 3], folder=tmp_path)
    assert again.cpus == [0, 1] and not again.shared
    for claim in (second, third, again):
        claim.release()


def test_the_cores_of_a_killed_holder_are_free_at_once(tmp_path):
    code = ("import sys, time; from pathlib import Path; from fwbench.run.placement import claim_cores;"
            f"c = claim_cores(2, cores=[0, 1], folder=Path({str(tmp_path)!r})); print(c.cpus, flush=True);"
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "[0, 1]"
    busy = claim_cores(1, cores=[0, 1], folder=tmp_path)
    assert busy.shared
    busy.release()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with claim_cores(2, cores=[0, 1], folder=tmp_path) as free:
        assert free.cpus == [0, 1] and not free.shared


def test_each_gpu_cell_gets_its_own_gpu(tmp_path):
    a = claim_gpu(Claim(cpus=[0]), gpus=["0", "1"], folder=tmp_path)
    b = claim_gpu(Claim(cpus=[1]), gpus=["0", "1"], folder=tmp_path)
    assert {a.gpu, b.gpu} == {"0", "1"} and not a.gpu_shared and not b.gpu_shared
    c = claim_gpu(Claim(cpus=[2]), gpus=["0", "1"], folder=tmp_path, wait_s=0.0)
    assert c.gpu_shared
    assert claim_gpu(Claim(cpus=[0]), gpus=[], folder=tmp_path).gpu is None
    for claim in (a, b, c):
        claim.release()


def test_a_record_says_where_and_when_it_ran():
    record = with_placement({"status": "failed", "env": {}}, Claim(cpus=[3, 4], shared=True), "2026-01-01T00:00:00")
    assert record["env"]["cpus"] == [3, 4] and record["env"]["cpus_shared"] is True
    assert record["started_at"] == "2026-01-01T00:00:00" and record["finished_at"]
    assert any("shared" in w for w in record["warnings"])


def test_pinning_follows_the_claimed_set():
    allowed = sorted(os.sched_getaffinity(0))
    code = (f"from fwbench.run.process import pin_threads; import os; print(pin_threads(1, [{allowed[-1]}]),"
            " sorted(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [f"[{allowed[-1]}]", f"[{allowed[-1]}]"]
    assert pin_threads(len(allowed)) == allowed


@pytest.mark.parametrize(("requested", "workers", "cores", "expected"),
                         [(None, 1, 16, 16), (None, 2, 16, 8), (None, 3, 2, 1), (4, 4, 16, 4), (1, 2, 2, 1),
                          (None, 1, 2, 1), (None, 1, 4, 3), (None, 1, 1, 1), (2, 1, 2, 2)])
def test_default_threads_share_the_cores_between_workers(requested, workers, cores, expected):
    assert threads_per_cell(requested, workers, cores) == expected


def test_threads_that_cannot_fit_disjoint_sets_are_refused_naming_what_fits():
    with pytest.raises(UsageError, match=r"--threads 5 with --workers 2 needs 10 cores .* has 8; use --threads 4"):
        threads_per_cell(5, 2, 8)


def test_bench_run_refuses_threads_that_do_not_fit_before_any_cell(bench, tmp_path):
    cores = len(os.sched_getaffinity(0))
    result = bench("run", "-b", "toy", "-t", "mlp_mnist", "--dataset", "digits", "--executor", "dask",
                   "--workers", "2", "--threads", str(cores), "--out", str(tmp_path / "r"), "--peak", "off")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "disjoint core sets" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("cores, workers, expected", [(1, 1, 1), (2, 1, 1), (4, 1, 3), (8, 1, 8), (8, 2, 4)])
def test_one_default_threads_for_every_command(cores, workers, expected, monkeypatch):
    from fwbench.run import placement

    monkeypatch.setattr(placement, "available_cores", lambda: cores)
    assert placement.default_threads(workers) == expected
    assert f"; {placement.default_threads()} on this machine)" in placement.threads_help()
