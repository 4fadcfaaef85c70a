"""Each device's peak: matmul GFLOP/s per precision and memory bandwidth GB/s, measured and cached.

A cell's percent of peak is judged against the peak of the precision it trains in
(``training.precision``, `peak_precision`): fp32 against a float32 matmul, bf16 against a bfloat16
one, fp16 against a float16 one; tf32 on a CPU (which has no TensorFloat-32) against float32. A
precision no backend multiplies in here has no peak ("not measured for bf16"), never the float32
one in its place. Each precision is measured and cached on its own; the bandwidth is float32's.

A GPU cell is judged against the GPU's peak, a CPU cell against the CPU's: every number here is
per device (``device="cpu"`` or ``"gpu"``). On the CPU the facts below hold; on a GPU each
backend multiplies on the GPU (one process per backend, as on the CPU) and measures the
bandwidth with its own elementwise add of 256 MiB arrays (`fwbench.ops.Ops.add`, 3 arrays
moved), and the cache key is the GPU's name and driver (``nvidia-smi``) and the library versions.

Why every backend: NumPy's BLAS is not the fastest matmul on every machine (OpenBLAS with
``OPENBLAS_CORETYPE=Haswell`` runs AVX2 kernels on an AVX-512 CPU, half its rate), so a
NumPy-only peak would sit below what torch or XLA reach, and every fast backend would be flagged
"too fast to be real". Each installed backend multiplies square matrices with its own matmul
(`fwbench.ops.Ops.matmul`), in its own process with the run's thread count; the peak is the best
of them, and each backend's number is kept. Bandwidth: NumPy copy and add of 128 MiB arrays on
``threads`` threads (STREAM's convention: copy moves 2 arrays, add 3).

`machine_peak` is the one way to the peak (``bench run``, ``bench info --peak``, ``bench doctor``,
the plugin kit; a cell reads its own with `Peak.from_summary`): a `Peak`, the number and where it
comes from. Underneath, `resolve_peak` gives one number per machine and thread count: each backend's
result is cached (``peak.json`` in ``$FWBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/fwbench``, else
``~/.cache/fwbench``) under a key of CPU model, cores, threads, ``OPENBLAS_CORETYPE``, the library
versions and the backend; a run measures only its own backends that have no number yet, and the
peak is the best number known. ``bench info --peak`` measures every available backend again.

``python -m fwbench.micro.peak BACKEND THREADS [--device gpu] [--bandwidth] [--precision bf16]`` is the per-backend
child process (prints one JSON line). ``bench info --peak --device gpu`` measures the GPU.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..records.environment import backend_facts
from .protocol import Protocol, measure
from .roofline import matmul_flops

#: Matrix sizes tried, smallest first; the first whose product takes >= `TARGET_S` is measured.
SIZES = (256, 512, 1024, 2048, 3072)
#: On a GPU: big enough to reach the peak (a GPU runs a 3072² matmul in about a millisecond).
GPU_SIZES = (1024, 2048, 4096, 8192)
TARGET_S = 0.02
BANDWIDTH_FLOATS = 1 << 25  # 128 MiB of float32 per array
GPU_BANDWIDTH_FLOATS = 1 << 26  # 256 MiB per array: well past any GPU cache
DEVICES = ("cpu", "gpu")
CACHE_ENV = "FWBENCH_CACHE_DIR"
LIBRARIES = ("numpy", "torch", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "optax")
CHILD_TIMEOUT_S = 240.0
#: The dtype of each precision's peak matmul (tf32: see `peak_precision`).
PEAK_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def peak_precision(precision: str | None, device: str) -> str:
    """The precision of the peak a cell of ``precision`` is judged against on ``device``: its own,
    except tf32 on a CPU (no TensorFloat-32 there: float32)."""
    precision = precision or "fp32"
    return "fp32" if precision == "tf32" and device == "cpu" else precision


# ---------------------------------------------------------------------------------------------
# Measuring (inside one backend's process)
# ---------------------------------------------------------------------------------------------

def measure_matmul(ops, clock: Callable[[], float] = time.perf_counter, sync_each_call: bool = True,
                   sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Best GFLOP/s of ``ops.matmul`` on square float32 matrices (size grown to ~`TARGET_S`);
    on a GPU (``sync_each_call=False``, `GPU_SIZES`) a timed unit is a loop of calls and one sync."""
    rng = np.random.default_rng(0)
    tried = []
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        op = ops.matmul(a, b)
        m = measure(op.run, ops.sync, Protocol(repeats=3, min_unit_s=TARGET_S, max_inner=1000,
                                               max_warmup=2, max_warmup_s=0.3, clock=clock,
                                               sync_each_call=sync_each_call))
        best = float(m.per_call.min())
        tried.append({"n": n, "best_s": best, "gflops": matmul_flops(n) / best / 1e9})
        if best >= TARGET_S or n == sizes[-1]:
            m = measure(op.run, ops.sync, Protocol(repeats=7, min_unit_s=TARGET_S, max_inner=1000,
                                                   max_warmup=1, max_warmup_s=0.2, clock=clock,
                                                   sync_each_call=sync_each_call))
            best = float(m.per_call.min())
            median = float(np.median(m.per_call))
            return {"gflops": matmul_flops(n) / best / 1e9, "gflops_median": matmul_flops(n) / median / 1e9,
                    "n": n, "best_s": best, "median_s": median, "tried": tried}
    raise AssertionError("unreachable")  # pragma: no cover


def measure_bandwidth(threads: int, floats: int = BANDWIDTH_FLOATS, repeats: int = 5) -> dict[str, Any]:
    """Best copy and add bandwidth (GB/s) of NumPy on ``threads`` threads, each on its own chunk
    (NumPy releases the GIL for large copies, so the threads run in parallel)."""
    a = np.ones(floats, np.float32)
    b = np.full(floats, 2.0, np.float32)
    c = np.empty(floats, np.float32)
    bounds = np.linspace(0, floats, threads + 1).astype(int)
    chunks = list(itertools.pairwise(bounds))

    def parallel(fn) -> float:
        workers = [threading.Thread(target=fn, args=(lo, hi)) for lo, hi in chunks]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - start

    def copy(lo, hi):
        np.copyto(c[lo:hi], a[lo:hi])

    def add(lo, hi):
        np.add(a[lo:hi], b[lo:hi], out=c[lo:hi])

    copy_s = min(parallel(copy) for _ in range(repeats))
    add_s = min(parallel(add) for _ in range(repeats))
    nbytes = floats * 4
    out = {"copy_gbps": 2 * nbytes / copy_s / 1e9, "add_gbps": 3 * nbytes / add_s / 1e9,
           "array_mib": nbytes / 2**20, "threads": threads}
    out["gbps"] = max(out["copy_gbps"], out["add_gbps"])
    return out


def measure_device_bandwidth(ops, floats: int = GPU_BANDWIDTH_FLOATS,
                             clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Best GB/s of ``ops.add`` (``c = a + b``: 3 arrays of ``floats`` float32 moved) on the device."""
    a = np.ones(floats, np.float32)
    op = ops.add(a, a)
    m = measure(op.run, ops.sync, Protocol(repeats=7, min_unit_s=TARGET_S, max_inner=1000, max_warmup=2,
                                           max_warmup_s=0.3, clock=clock, sync_each_call=False))
    best = float(m.per_call.min())
    nbytes = floats * 4
    return {"add_gbps": 3 * nbytes / best / 1e9, "gbps": 3 * nbytes / best / 1e9, "array_mib": nbytes / 2**20,
            "method": "elementwise add on the device (3 arrays moved)"}


def child_main(backend_name: str, threads: int, with_bandwidth: bool, device: str = "cpu",
               precision: str = "fp32") -> dict[str, Any]:
    """One backend's peak on ``device`` in ``precision``, in this (fresh) process: configure, make
    ops in the precision's dtype (`PEAK_DTYPES`), multiply."""
    from ..plugins import get_registry
    from ..run.process import pin_threads

    if precision not in PEAK_DTYPES:
        return {"error": f"no {precision} matmul to measure on the {device}"}
    pin_threads(threads)
    backend = get_registry().get_backend(backend_name)
    if not backend.availability().ok:
        return {"error": str(backend.availability())}
    started = time.perf_counter()
    facts = backend_facts(backend.configure(device=device, threads=threads), device)
    if device == "gpu" and not backend.gpu_available():
        return {"error": f"{backend_name} sees no GPU"}
    ops = backend.ops(device, PEAK_DTYPES[precision])
    setup_s = time.perf_counter() - started
    result = {"backend": backend_name, "version": backend.version(), "threads": threads, "device": device,
              "precision": precision,
              "device_name": facts.get("device_name") or facts.get("device_kind"),
              "setup_s": setup_s, **measure_matmul(ops, sync_each_call=device == "cpu",
                                                   sizes=SIZES if device == "cpu" else GPU_SIZES)}
    if with_bandwidth:
        result["bandwidth"] = measure_bandwidth(threads) if device == "cpu" else measure_device_bandwidth(ops)
    return result


# ---------------------------------------------------------------------------------------------
# The driver side: one child per backend, the cache
# ---------------------------------------------------------------------------------------------

def cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fwbench"
    return root / "peak.json"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def machine_facts(threads: int) -> dict[str, Any]:
    """What a peak depends on besides the backend: CPU, threads, library versions, BLAS core type."""
    from ..records.environment import cpu_info

    cpu = cpu_info()
    return {"cpu": cpu["model"], "logical_cores": cpu["logical_cores"], "threads": threads,
            "versions": _versions(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}


def gpu_facts() -> dict[str, Any]:
    """What a GPU peak depends on: the GPU model and driver (``nvidia-smi``), library versions."""
    from ..records.environment import gpu_info

    gpus = gpu_info() or []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = gpus[0] if gpus else {}
    return {"device": "gpu", "gpu": first.get("name", "unknown GPU (no nvidia-smi)"),
            "driver": first.get("driver_version"), "memory": first.get("memory.total"),
            "gpus": len(gpus), "cuda_visible_devices": visible, "versions": _versions()}


def device_facts(device: str, threads: int) -> dict[str, Any]:
    """The facts a peak on ``device`` is cached under (`machine_facts` or `gpu_facts`)."""
    return gpu_facts() if device == "gpu" else {**machine_facts(threads), "device": "cpu"}


def cache_key(facts: dict[str, Any], what: str) -> str:
    """The cache key of one backend's peak (or ``"_bandwidth"``) on this machine."""
    text = json.dumps({**facts, "what": what}, sort_keys=True)
    return f"{what}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def read_cache(path: Path | None = None) -> dict[str, Any]:
    path = path or cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(entries: dict[str, Any], path: Path | None = None) -> None:
    """Merge ``entries`` into the cache file (atomically: temporary file + rename)."""
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**read_cache(path), **entries}
    fd, tmp = tempfile.mkstemp(prefix=".peak-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def run_child(backend: str, threads: int, with_bandwidth: bool, timeout: float = CHILD_TIMEOUT_S,
              device: str = "cpu", precision: str = "fp32") -> dict:
    """`child_main` in a fresh interpreter with the run's thread variables; errors become data."""
    from ..run.local import THREAD_ENV
    from ..run.process import die_with_parent  # a killed driver takes its peak child with it

    env = {**os.environ, **{name: str(threads) for name in THREAD_ENV}}
    cmd = [sys.executable, "-m", "fwbench.micro.peak", backend, str(threads), "--device", device]
    cmd += ["--bandwidth"] if with_bandwidth else []
    cmd += ["--precision", precision] if precision != "fp32" else []
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit code {proc.returncode}"}


def resolve_peak(run_backends: list[str], available: list[str], threads: int, *, refresh: bool = False,
                 progress: Callable[[str], None] = lambda m: None, child: Callable[..., dict] | None = None,
                 path: Path | None = None, device: str = "cpu",
                 facts: dict[str, Any] | None = None, cache_entries: bool = True,
                 precision: str = "fp32") -> dict[str, Any] | None:
    """The ``precision`` peak of ``device`` for ``threads``: the best cached or newly measured backend matmul.

    Each backend's number is cached on its own, under the device's facts (`device_facts`, or
    ``facts`` given). The backends of this run (``run_backends``) that have no cached number are
    measured now, each in its own process; ``refresh`` measures every ``available`` backend
    again. The peak is the best number of every available backend known for this device, so a
    NumPy-only run launches no other framework but still profits from an earlier
    ``bench info --peak``. Bandwidth: NumPy's on the CPU; on a GPU the best of the backends' own.
    ``cache_entries=False`` neither reads nor writes the cache. Returns None when no backend has a
    number. Each precision is cached under its own key; only the float32 run measures the bandwidth.
    Callers go through `machine_peak`.
    """
    child = child or run_child
    facts = facts if facts is not None else device_facts(device, threads)
    cache = read_cache(path) if cache_entries else {}
    key = {name: cache_key(facts, name if precision == "fp32" else f"{name}@{precision}") for name in available}
    key["_bandwidth"] = cache_key(facts, "_bandwidth")
    todo = list(available) if refresh else [b for b in run_backends if b in available and key[b] not in cache]
    on_gpu = device == "gpu"
    want_bandwidth = precision == "fp32" and (refresh or key["_bandwidth"] not in cache)
    extra = {"device": device} if on_gpu else {}
    extra.update({"precision": precision} if precision != "fp32" else {})
    if not on_gpu and want_bandwidth and "numpy" in available and "numpy" not in todo:
        todo.append("numpy")
    new: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    for name in todo:
        progress(f"measuring the {device} {precision} peak with {name} ({threads} thread(s))…")
        wants = on_gpu or (want_bandwidth and name == "numpy")
        result = child(name, threads, wants, **extra)
        bandwidth = result.pop("bandwidth", None)
        if isinstance(bandwidth, dict):
            bandwidth = {**bandwidth, "backend": name, "measured_at": _now(), "machine": facts}
            current = new.get(key["_bandwidth"])  # on a GPU every backend measures: keep the best
            if current is None or bandwidth.get("gbps", 0) > current.get("gbps", 0):
                new[key["_bandwidth"]] = bandwidth
        result.pop("tried", None)
        measured[name] = {**result, "measured_at": _now(), "machine": facts}
        if "gflops" in result:  # failures are reported, never cached: the next run tries again
            new[key[name]] = measured[name]
    old_bandwidth = cache.get(key["_bandwidth"])
    if on_gpu and not refresh and key["_bandwidth"] in new and isinstance(old_bandwidth, dict) \
            and old_bandwidth.get("gbps", 0) > new[key["_bandwidth"]].get("gbps", 0):
        new[key["_bandwidth"]] = old_bandwidth  # a run of fewer backends never lowers a known best
    if new and cache_entries:
        write_cache(new, path)
    cache.update(new)
    per_backend = {name: {**cache[key[name]], "source": "cache"} for name in available if key[name] in cache}
    per_backend.update({name: {**v, "source": "measured"} for name, v in measured.items()})
    good = {n: v["gflops"] for n, v in per_backend.items() if isinstance(v.get("gflops"), int | float)}
    if not good:
        return None
    best = max(good, key=good.get)
    bandwidth = cache.get(key["_bandwidth"])
    return {"gflops": good[best], "best_backend": best, "per_backend": per_backend, "device": device,
            "precision": precision,
            "device_name": per_backend[best].get("device_name") or facts.get("gpu") or facts.get("cpu"),
            "not_measured": [n for n in available if n not in per_backend],
            "bandwidth_gbps": bandwidth.get("gbps") if isinstance(bandwidth, dict) else None,
            "bandwidth": bandwidth, "threads": threads,
            "source": "measured" if any(v["source"] == "measured" for v in per_backend.values()) else "cache",
            "measured_at": max(str(v.get("measured_at")) for v in per_backend.values()),
            "method": f"best of each backend's own {PEAK_DTYPES.get(precision, precision)} square matmul on the "
                      f"{device}, one process per backend"}


@dataclass(frozen=True, kw_only=True)
class Peak:
    """A device's matmul peak in one precision and where the number comes from.

    ``source``: "measured" (now), "cache", or the words of a given number ("command line");
    ``details``: `resolve_peak`'s dict (``per_backend``, ``bandwidth``, ``not_measured``...), or a
    record's summary; empty for a given number.
    """

    gflops: float
    source: str
    device: str = "cpu"
    best_backend: str | None = None
    bandwidth_gbps: float | None = None
    precision: str = "fp32"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def flops(self) -> float:
        """The peak in FLOP/s, for `fwbench.measure.timing.too_fast` and percent of peak."""
        return self.gflops * 1e9

    def summary(self) -> dict[str, Any]:
        """What a cell carries and its record keeps as ``env.peak`` (JSON)."""
        d = self.details
        per_backend = d.get("per_backend_gflops") or {n: v.get("gflops") for n, v in (d.get("per_backend") or {}).items()}
        return {"gflops": self.gflops, "best_backend": self.best_backend, "bandwidth_gbps": self.bandwidth_gbps,
                "source": self.source, "measured_at": d.get("measured_at"), "threads": d.get("threads"),
                "device": self.device, "device_name": d.get("device_name"), "per_backend_gflops": per_backend,
                "precision": self.precision}

    @classmethod
    def from_summary(cls, info: dict[str, Any] | None, device: str | None = None) -> Peak | None:
        """The `Peak` of a `summary` (a cell's or a record's ``env.peak``); None without a number."""
        if not info or not info.get("gflops"):
            return None
        return cls(gflops=float(info["gflops"]), source=str(info.get("source") or "given"),
                   device=device or info.get("device") or "cpu", best_backend=info.get("best_backend"),
                   bandwidth_gbps=info.get("bandwidth_gbps"), precision=str(info.get("precision") or "fp32"),
                   details=dict(info))


def peak_backends(registry=None) -> list[str]:
    """The backends that can measure a peak: registered, available, with microbenchmark ops (a
    backend without ``ops.py``, Keras or Flax, has no matmul to time)."""
    if registry is None:
        from ..plugins import get_registry

        registry = get_registry()
    return [n for n, b in sorted(registry.backends.items()) if b.availability().ok and b.has_ops()]


def machine_peak(device: str, threads: int, backends: list[str] | None = None, *, refresh: bool = False,
                 given: float | None = None, given_as: str = "command line", among: list[str] | None = None,
                 progress: Callable[[str], None] = lambda m: None, measure: Callable[..., dict] | None = None,
                 cache: bool = True, precision: str = "fp32") -> Peak | None:
    """The ``precision`` (fp32, bf16, fp16; `peak_precision`) matmul peak of ``device`` with
    ``threads`` threads: the one way to it.

    ``given`` (GFLOP/s, e.g. ``--peak 150``): that number as the fp32 peak, nothing measured
    (``given_as`` says where it came from); other precisions then have none. Otherwise the best number of the backends ``among`` (default:
    `peak_backends`): cached ones, and those of ``backends`` (the run's; default: all of
    ``among``) not cached yet measured now, each by ``measure`` (default `run_child`, a process
    per backend); ``refresh`` measures all of ``among`` again; ``cache=False`` neither reads nor
    writes the cache (the kit measures under its own load). None when no backend has a number.
    """
    if given is not None:
        return Peak(gflops=float(given), source=given_as, device=device) if precision == "fp32" else None
    among = peak_backends() if among is None else among
    run = [n for n in (among if backends is None else backends) if n in among]
    found = resolve_peak(run, among, threads, refresh=refresh, progress=progress, child=measure, device=device,
                         cache_entries=cache, precision=precision)
    if found is None:
        return None
    return Peak(gflops=found["gflops"], source=found["source"], device=device, best_backend=found["best_backend"],
                bandwidth_gbps=found.get("bandwidth_gbps"), precision=precision, details=found)


def peak_for_cell(cell: dict[str, Any], device: str, precision: str = "fp32") -> Peak | None:
    """The peak a cell training in ``precision`` is judged against on ``device``: the planner passes
    one per device (``peak_info["by_device"]``: an ``auto`` cell learns its device only in its
    process) and one per device and other precision (``peak_info["by_precision"]``); a given
    ``--peak`` number or an older plan has one fp32 peak for all devices. None when the precision's
    peak was not measured."""
    info = cell.get("peak_info") or {}
    wanted = peak_precision(precision, device)
    if wanted != "fp32":
        return Peak.from_summary(((info.get("by_precision") or {}).get(device) or {}).get(wanted), device)
    if "by_device" in info:
        return Peak.from_summary((info.get("by_device") or {}).get(device), device)
    info = dict(info)
    if cell.get("peak_flops"):
        info.setdefault("gflops", cell["peak_flops"] / 1e9)
    return Peak.from_summary(info, device)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    backend, threads = argv[0], int(argv[1])
    device = argv[argv.index("--device") + 1] if "--device" in argv else "cpu"
    precision = argv[argv.index("--precision") + 1] if "--precision" in argv else "fp32"
    try:
        result = child_main(backend, threads, "--bandwidth" in argv, device, precision)
    except Exception as exc:  # noqa: BLE001 - reported to the driver as data
        result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
