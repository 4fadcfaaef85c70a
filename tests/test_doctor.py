"""`bench doctor`: the sync audit against a fake asynchronous backend, the memory check, and the
command itself on the CPU (passes) and on a GPU this machine lacks (fails row by row, exit 1)."""
from __future__ import annotations

import ctypes
import json
import platform

import numpy as np
import pytest
from fwbench.doctor.probe import FAIL, PASS, fresh_pages, memory_check, sync_audit
from fwbench.ops import Op, Ops


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeDevice(Ops):
    """An asynchronous device with a fake clock: a matmul queues ``n³ / rate`` seconds of work,
    ``sync`` waits for the queue. ``broken_sync``: sync returns at once (the bug to catch)."""

    asynchronous = True

    def __init__(self, clock: Clock, rate: float = 1e12, broken_sync: bool = False, blocking: bool = False):
        super().__init__("fake", "gpu", "float32")
        self.clock, self.rate, self.broken_sync, self.blocking = clock, rate, broken_sync, blocking
        self.queued = 0.0
        self.peak = 0

    def matmul(self, a, b):
        cost = 2.0 * a.shape[0] ** 3 / self.rate

        def run():
            if self.blocking:  # dispatch waits for the work itself: no asynchrony at all
                self.clock.now += cost
            else:
                self.queued += cost

        return Op(run)

    def add(self, a, b):
        def run():
            self.peak += a.nbytes + b.nbytes + a.nbytes

        return Op(run)

    def sync(self, handle):
        if not self.broken_sync:
            self.clock.now += self.queued
        self.queued = 0.0

    def reset_peak_memory(self):
        self.peak = 0

    def peak_device_memory(self):
        return self.peak


def test_an_asynchronous_backend_with_a_working_sync_passes():
    clock = Clock()
    row = sync_audit(FakeDevice(clock), peak_gflops=1000.0, clock=clock)
    assert row["status"] == PASS and "asynchronous" in row["detail"]
    assert row["data"]["no_sync_s"] == 0 and row["data"]["with_sync_s"] > 0


def test_a_sync_that_waits_for_nothing_fails():
    clock = Clock()
    row = sync_audit(FakeDevice(clock, broken_sync=True), peak_gflops=1000.0, clock=clock)
    assert row["status"] == FAIL and "sync" in row["detail"]


def test_a_step_faster_than_the_measured_peak_fails():
    clock = Clock()
    row = sync_audit(FakeDevice(clock, rate=5e12), peak_gflops=1000.0, clock=clock)  # 5 TFLOP/s > 1 TFLOP/s
    assert row["status"] == FAIL and "beats 2 x the measured peak" in row["detail"]
    near = sync_audit(FakeDevice(clock, rate=1.5e12), peak_gflops=1000.0, clock=clock)  # within the one margin
    assert near["status"] == PASS, near["detail"]


def test_a_backend_said_to_be_asynchronous_that_blocks_fails():
    clock = Clock()
    row = sync_audit(FakeDevice(clock, blocking=True), peak_gflops=1000.0, clock=clock)
    assert row["status"] == FAIL and "not shorter" in row["detail"]


def test_the_device_memory_reading_must_move_with_a_known_allocation():
    clock = Clock()
    assert memory_check(FakeDevice(clock), "gpu", mib=8)["status"] == PASS

    class Stuck(FakeDevice):
        def peak_device_memory(self):
            return 123

    row = memory_check(Stuck(clock), "gpu", mib=8)
    assert row["status"] == FAIL and "moved by 0 MiB" in row["detail"]
    host = memory_check(FakeDevice(clock), "cpu", mib=64)
    assert host["status"] == PASS, host["detail"]


def _raise_the_host_peak(mib: int = 192) -> None:
    fresh_pages(mib * 2**20).close()


def test_the_host_memory_check_passes_where_malloc_hands_back_resident_memory():
    """glibc serves a large request from a free chunk already resident in its heap before it maps
    new pages (in CI's test process: 'moved by 0 MiB'). Forced here: mmap and trimming off, a
    resident 256 MiB chunk freed, which malloc keeps."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the reuse is forced through glibc's mallopt")
    from fwbench.run.process import memory_status, reset_host_peak

    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    m_trim_threshold, m_mmap_max, pool_bytes, mib = -1, -4, 256 * 2**20, 64
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**30)
    try:
        pool = libc.malloc(pool_bytes)
        ctypes.memset(pool, 1, pool_bytes)  # resident
        libc.free(pool)
        reset_host_peak()
        before = memory_status()["VmHWM"]
        through_malloc = np.ones(mib * 2**20 // 4, np.float32)
        moved_through_malloc = memory_status()["VmHWM"] - before
        del through_malloc
        row = memory_check(FakeDevice(Clock()), "cpu", mib=mib)
    finally:
        libc.mallopt(m_mmap_max, 65536)  # glibc's defaults
        libc.mallopt(m_trim_threshold, 128 * 1024)
        libc.malloc_trim(0)
    assert moved_through_malloc < 2**20  # the premise: malloc reused the pool, the RSS stood still
    assert row["status"] == PASS, row["detail"]


def test_the_host_memory_check_passes_where_the_peak_cannot_be_reset(monkeypatch):
    """A reset that did not take (reported as done) leaves the old peak: the allocation must still
    reach beyond it."""
    from fwbench.run import process

    _raise_the_host_peak()
    monkeypatch.setattr(process, "reset_host_peak", lambda: True)
    row = memory_check(FakeDevice(Clock()), "cpu", mib=64)
    assert row["status"] == PASS, row["detail"]
    assert row["data"]["before"] > process.memory_status()["VmRSS"] + 64 * 2**20  # the old peak was kept


def test_a_reset_that_leaves_the_old_peak_is_reported_as_no_reset(monkeypatch, tmp_path):
    from fwbench.run import process

    _raise_the_host_peak()
    ignored = tmp_path / "clear_refs"  # the write lands nowhere that matters
    real_path = process.Path
    monkeypatch.setattr(process, "Path", lambda p: ignored if p == "/proc/self/clear_refs" else real_path(p))
    assert process.reset_host_peak() is False
    monkeypatch.setattr(process, "Path", real_path)
    assert process.reset_host_peak() is True  # this machine's kernel does reset it


def test_the_memory_check_tries_again_when_the_reading_dropped_once():
    """Another thread freeing memory between the two readings hides one allocation; a second try
    passes. A reading that never moves fails all three (above)."""
    class FreedOnce(FakeDevice):
        tries = 0

        def reset_peak_memory(self):
            FreedOnce.tries += 1
            self.peak = 0

        def peak_device_memory(self):  # first try: 100 MiB freed while the 24 MiB block came in
            return self.peak - (100 * 2**20 if FreedOnce.tries == 1 and self.peak else 0)

    row = memory_check(FreedOnce(Clock()), "gpu", mib=8)
    assert row["status"] == PASS and FreedOnce.tries == 2


def test_bench_doctor_passes_on_the_cpu(bench, tmp_path, monkeypatch):
    import os

    from fwbench.micro.peak import resolve_peak

    # the peak comes from the cache (its measurement is tested on its own): a shared, noisy
    # machine can measure a peak under load that a later quiet step then beats
    monkeypatch.setenv("FWBENCH_CACHE_DIR", str(tmp_path / "cache"))
    resolve_peak(["numpy"], ["numpy"], len(os.sched_getaffinity(0)),
                 child=lambda *a, **k: {"gflops": 1e6, "bandwidth": {"gbps": 10.0}})
    result = bench("doctor", "--device", "cpu", "-b", "numpy", "--task", "mlp_mnist", "--json",
                   env={"FWBENCH_CACHE_DIR": str(tmp_path / "cache")}, timeout=600)
    rows = json.loads(result.stdout)
    assert result.returncode == 0, [r for r in rows if r["status"] != PASS]
    checks = {(r["backend"], r["check"]): r for r in rows}
    for check in ("device", "threads", "sync", "memory", "conformance"):
        assert checks[("numpy", check)]["status"] == PASS
    assert checks[("machine", "peak")]["status"] == checks[("machine", "bandwidth")]["status"] == PASS


def test_bench_doctor_on_a_missing_gpu_fails_row_by_row_without_a_traceback(bench, tmp_path):
    result = bench("doctor", "--device", "gpu", "-b", "numpy", "--no-conformance",
                   env={"FWBENCH_CACHE_DIR": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "numpy" in result.stdout and "fail" in result.stdout


def test_numpy_reports_what_it_is():
    from fwbench_numpy.ops import NumpyOps

    assert NumpyOps("numpy", "float32").asynchronous is False
    assert np.isfinite(sync_audit(NumpyOps("numpy", "float32"), None, min_call_s=0, max_n=64)["data"]["gflops"])


def test_conformance_rows_of_a_frontend_count_its_engine_labels(monkeypatch):
    """Keras' checks are labelled keras[tensorflow], keras[jax]...: "no check ran" was a failure
    of every frontend; a skipped (declined) check is not a failure."""
    from fwbench.conformance import runner as conformance_runner
    from fwbench.conformance.checks import Check, skipped_check
    from fwbench.doctor import command as doctor

    seen = {}

    def fake_run_checks(variants, tasks, device="cpu"):
        seen["variants"] = variants
        return [Check("keras[tensorflow]", "mlp_mnist", "logits", 0.0, 0.0, True),
                Check("keras[jax]", "mlp_mnist", "logits", 0.0, 0.0, True),
                skipped_check("keras[jax]", "mlp_mnist", "step:adam", "declined"),
                Check("numpy", "mlp_mnist", "logits", 0.0, 0.0, False, "off")]

    monkeypatch.setattr(conformance_runner, "run_checks", fake_run_checks)
    monkeypatch.setattr(conformance_runner, "check_variants", lambda registry, names, items: [(n, {}) for n in names])
    rows = {r["backend"]: r for r in doctor._conformance_rows(["keras", "numpy"], ["mlp_mnist"], "cpu")}
    assert rows["keras"]["status"] == PASS and "2 checks" in rows["keras"]["detail"]
    assert rows["numpy"]["status"] == FAIL
