"""The checks of `bench doctor` that run inside one backend's process (`fwbench.doctor.command`).

``python -m fwbench.doctor.probe BACKEND DEVICE THREADS [PEAK_GFLOPS]`` pins the threads,
configures the backend on the device and prints one JSON line: a list of checks, each
``{"check", "status": "pass"|"fail"|"skip", "detail", "data"}``. A check that raises becomes a
failed check naming the error; nothing here ever crashes the command.

* ``device``: the framework configures on the device and sees it (its own name for it).
* ``threads``: the CPU affinity and the framework's thread count are what the suite set.
* ``sync``: the sync audit (`sync_audit`): the same matmul timed without and with the backend's
  sync; on an asynchronous backend the first must be much shorter (else the sync, or the
  asynchrony, is not what the suite assumes), and no synced step may beat the device's
  measured peak (else a sync is missing).
* ``memory``: the peak-memory reading the records use moves by at least the size of a tensor
  allocated on purpose (`memory_check`).
"""
from __future__ import annotations

import json
import mmap
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..measure.timing import TOO_FAST_MARGIN, too_fast
from ..records.environment import backend_facts

PASS, FAIL, SKIP = "pass", "fail", "skip"
#: On an asynchronous backend, dispatching without sync must take under this share of the synced time.
ASYNC_RATIO = 0.5


def check(name: str, status: str, detail: str, **data: Any) -> dict[str, Any]:
    return {"check": name, "status": status, "detail": detail, "data": data}


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sync_audit(ops, peak_gflops: float | None, clock: Callable[[], float] = time.perf_counter,
               calls: int = 8, rounds: int = 3, min_call_s: float = 2e-3, max_n: int = 4096) -> dict[str, Any]:
    """Time ``calls`` matmuls without and with ``ops.sync`` (best of ``rounds``); judge them."""
    rng = np.random.default_rng(0)
    n = 256
    while True:
        a = rng.standard_normal((n, n)).astype(np.float32)
        op = ops.matmul(a, a)
        ops.sync(op.run())  # the first call (compilation) apart
        one = float("inf")
        for _ in range(3):  # the best of 3: a busy moment must not pick a too small matrix
            start = clock()
            ops.sync(op.run())
            one = min(one, clock() - start)
        if one >= min_call_s or n >= max_n:
            break
        n *= 2
    flops = 2.0 * n ** 3
    dispatch, synced = [], []
    for _ in range(rounds):
        start = clock()
        handle = None
        for _ in range(calls):
            handle = op.run()
        dispatch.append(clock() - start)
        ops.sync(handle)  # outside the clock: the queue is empty before the next timing
        start = clock()
        for _ in range(calls):
            handle = op.run()
        ops.sync(handle)
        synced.append(clock() - start)
    no_sync_s, with_sync_s = min(dispatch), min(synced)
    data = {"n": n, "calls": calls, "no_sync_s": no_sync_s, "with_sync_s": with_sync_s,
            "asynchronous": bool(ops.asynchronous), "peak_gflops": peak_gflops}
    if with_sync_s <= 0:
        return check("sync", FAIL, f"{calls} synced {n}² matmuls took no measurable time: the sync waits for nothing",
                     **data)
    gflops = calls * flops / with_sync_s / 1e9
    ratio = no_sync_s / with_sync_s
    data.update(gflops=gflops, ratio=ratio)
    timing = f"{calls} × {n}² matmul: {no_sync_s * 1e3:.3g} ms without sync, {with_sync_s * 1e3:.3g} ms with"
    if too_fast(gflops * 1e9, (peak_gflops or 0) * 1e9):
        return check("sync", FAIL, f"{timing}: {gflops:,.0f} GFLOP/s beats {TOO_FAST_MARGIN:g} x the measured peak {peak_gflops:,.0f} "
                     "GFLOP/s: a missing device sync?", **data)
    if ops.asynchronous and ratio > ASYNC_RATIO:
        return check("sync", FAIL, f"{timing}: an asynchronous backend, yet timing without its sync is not shorter "
                     "(the sync or the asynchrony is not what the suite assumes)", **data)
    kind = "asynchronous, the sync waits for the work" if ops.asynchronous else "synchronous"
    return check("sync", PASS, f"{kind}; {timing} ({gflops:,.1f} GFLOP/s)", **data)


def _host_peak() -> int:
    from ..run.process import memory_status

    return memory_status().get("VmHWM", 0)


def memory_check(ops, device: str, mib: int | None = None, attempts: int = 3) -> dict[str, Any]:
    """The reading the records use moves by at least a known allocation of ``mib`` MiB (512 on a
    GPU, 256 on the CPU): the
    device peak (`fwbench.ops.Ops.peak_device_memory`) on a GPU, the host's VmHWM on the CPU.
    Up to ``attempts`` tries: another thread of the process freeing memory between the readings
    (a library's pool, a finished worker) lowers the RSS the block is measured against once; a
    reading that does not move fails every try."""
    mib = mib or (512 if device == "gpu" else 256)  # beyond any earlier peak of the probe
    nbytes = mib * 2**20
    for _ in range(attempts):
        measured = _peak_moved(ops, device, nbytes)
        if isinstance(measured, dict):  # no reading at all
            return measured
        before, after, what = measured
        moved = after - before
        if moved >= 0.9 * nbytes:
            break
    status = PASS if moved >= 0.9 * nbytes else FAIL
    return check("memory", status, f"{what} moved by {moved / 2**20:,.0f} MiB for a {mib} MiB allocation",
                 before=before, after=after, allocated=nbytes)


def _peak_moved(ops, device: str, nbytes: int) -> tuple[int, int, str] | dict[str, Any]:
    """``(peak before, peak after, what)`` around an allocation of ``nbytes``, or a failed check
    where the device has no peak reading."""
    if device == "gpu":
        ops.reset_peak_memory()
        before = ops.peak_device_memory()
        if before is None:
            return check("memory", FAIL, "no device peak-memory reading on the GPU (peak_device_memory is None)")
        op = ops.add(np.ones(nbytes // 4, np.float32), np.ones(nbytes // 4, np.float32))
        ops.sync(op.run())
        after = ops.peak_device_memory() or 0
        del op
        return before, after, "device peak"
    from ..run.process import memory_status, reset_host_peak

    resettable = reset_host_peak()
    status = memory_status()
    before = status.get("VmHWM", 0)
    # a peak above the RSS (not reset, or memory freed since) is passed first: the block must reach beyond it
    gap = max(0, before - status.get("VmRSS", before))
    block = fresh_pages(nbytes + gap)
    after = _host_peak()
    block.close()
    return before, after, "host VmHWM" + ("" if resettable else " (not resettable here)")


def fresh_pages(nbytes: int) -> mmap.mmap:
    """``nbytes`` of new anonymous memory, every page written (resident). Straight from the
    kernel: malloc may hand back a free chunk that is already resident (glibc takes one from its
    bins before it maps anew), and then the RSS does not move at all."""
    block = mmap.mmap(-1, nbytes)
    pages = np.frombuffer(block, np.uint8)
    pages[::mmap.PAGESIZE] = 1
    del pages  # the buffer must be released before the map can close
    return block


def threads_check(facts: dict[str, Any], threads: int, cpus: list[int]) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    framework = facts.get("threads")
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    problems = []
    if affinity is not None and affinity != threads:
        problems.append(f"CPU affinity is {affinity} cores, not {threads}")
    if isinstance(framework, int) and framework != threads:
        problems.append(f"the framework reports {framework} threads, not {threads}")
    if any(v not in (None, str(threads)) for v in env.values()):
        problems.append(f"thread variables {env} differ from {threads}")
    detail = f"{threads} thread(s) on cores {cpus}; framework: {framework if framework is not None else 'n/a'}"
    return check("threads", FAIL if problems else PASS, "; ".join(problems) or detail, cpus=cpus,
                 affinity=affinity, framework_threads=framework, env=env,
                 interop=facts.get("interop_threads"), thread_cap=facts.get("thread_cap"))


def probe(backend_name: str, device: str, threads: int, peak_gflops: float | None) -> list[dict[str, Any]]:
    from ..plugins import get_registry
    from ..run.process import pin_threads

    cpus = pin_threads(threads)
    backend = get_registry().get_backend(backend_name)
    availability = backend.availability()
    if not availability.ok:
        return [check("device", FAIL, str(availability))]
    try:
        facts = backend_facts(backend.configure(device=device, threads=threads), device)
        if device == "gpu" and not backend.gpu_available():
            raise RuntimeError(f"{backend_name} sees no GPU")
    except Exception as exc:  # noqa: BLE001 - every failure is a row
        return [check("device", FAIL, one_line(exc)),
                *(check(name, SKIP, "the backend could not be configured on the device")
                  for name in ("threads", "sync", "memory"))]
    seen = facts.get("device_name") or facts.get("device_kind") or facts.get("platform") or device
    extra = {k: facts.get(k) for k in ("cuda_version", "cudnn_version", "devices", "XLA_FLAGS", "flags_in_force",
                                       "jax_initialized_before_configure") if k in facts}
    rows = [check("device", PASS, f"{backend_name} {backend.version()} on {seen}", **extra)]
    if facts.get("jax_initialized_before_configure"):
        rows[0] = check("device", FAIL, "JAX started before configure: its XLA flags came too late", **extra)
    rows.append(_guard("threads", lambda: threads_check(facts, threads, cpus)))
    try:
        ops = backend.ops(device, "float32")
    except Exception as exc:  # noqa: BLE001
        reason = f"no microbenchmark ops: {one_line(exc)}"
        return rows + [check("sync", SKIP, reason), check("memory", SKIP, reason)]
    rows.append(_guard("sync", lambda: sync_audit(ops, peak_gflops)))
    rows.append(_guard("memory", lambda: memory_check(ops, device)))
    return rows


def _guard(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except NotImplementedError as exc:
        return check(name, SKIP, one_line(exc))
    except Exception as exc:  # noqa: BLE001
        return check(name, FAIL, one_line(exc))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    backend, device, threads = argv[0], argv[1], int(argv[2])
    peak = float(argv[3]) if len(argv) > 3 and argv[3] not in ("", "none") else None
    try:
        rows = probe(backend, device, threads, peak)
    except Exception as exc:  # noqa: BLE001
        rows = [check("device", FAIL, one_line(exc))]
    print(json.dumps(rows, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
