"""Where a cell runs: disjoint core sets and one GPU per cell, for cells that run at once.

Concurrent cells on one host (Dask workers, two runs at once) must not time their work on the
same cores. The process that starts a cell (`fwbench.run.local.run_cell_subprocess`, on the Dask
worker's host under Dask) claims ``threads`` cores with one lock file per core (``flock``: the
kernel drops the lock when the holder dies, so a killed run frees its cores at once) and hands the
set to the cell, which pins itself to it (`fwbench.run.process.pin_threads`). A GPU cell claims
one GPU the same way and sees only it (``CUDA_VISIBLE_DEVICES``). When too few cores are free the
cell shares them and its record says so (``env.cpus_shared`` and a warning); the planner sizes
``--threads`` so that the cells of one run always fit (`fwbench.run.matrix`).

Every record gets ``env.cpus`` (the cores it was pinned to), ``started_at`` and ``finished_at``.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records.results import now_iso
from .process import allowed_cores

#: Where the per-core and per-GPU lock files live (default: one folder per user in the temp dir).
LOCK_DIR_ENV = "FWBENCH_LOCK_DIR"
#: How long a GPU cell waits for a free GPU before it shares one (and says so).
GPU_WAIT_S = 600.0


def lock_dir() -> Path:
    folder = os.environ.get(LOCK_DIR_ENV) or os.path.join(tempfile.gettempdir(), f"fwbench-locks-{os.getuid()}")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Claim:
    """Cores (and maybe a GPU) held for one cell; `release` (or the holder's death) frees them."""

    cpus: list[int]
    shared: bool = False
    gpu: str | None = None
    gpu_shared: bool = False
    _files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fh in self._files:
            try:
                fh.close()  # closing the descriptor drops its flock
            except OSError:
                pass
        self._files.clear()

    def __enter__(self) -> Claim:  # noqa: PYI034 - a dataclass, never subclassed
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(path: Path):
    fh = open(path, "a+")  # noqa: SIM115 - held open for the claim's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def claim_cores(threads: int, cores: list[int] | None = None, folder: Path | None = None) -> Claim:
    """``threads`` cores that no other cell on this host holds, locked until `Claim.release`.

    Too few free cores: the free ones plus the first busy ones, with ``shared=True``."""
    cores = cores if cores is not None else allowed_cores()
    folder = folder or lock_dir()
    threads = max(1, min(threads, len(cores)))
    claim = Claim(cpus=[])
    for core in cores:
        if len(claim.cpus) == threads:
            break
        fh = _try_lock(folder / f"cpu{core}.lock")
        if fh is not None:
            claim.cpus.append(core)
            claim._files.append(fh)
    if len(claim.cpus) < threads:
        claim.shared = True
        claim.cpus += [c for c in cores if c not in claim.cpus][:threads - len(claim.cpus)]
    claim.cpus.sort()
    return claim


def visible_gpus() -> list[str]:
    """GPU indices this host offers: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def claim_gpu(claim: Claim, gpus: list[str] | None = None, folder: Path | None = None,
              wait_s: float = 0.0, poll_s: float = 0.5) -> Claim:
    """Add one GPU nobody else on this host holds to ``claim`` (waiting up to ``wait_s``); none
    free after that: the first, shared. No GPU at all: ``claim.gpu`` stays None."""
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        return claim
    folder = folder or lock_dir()
    deadline = time.monotonic() + wait_s
    while True:
        for gpu in gpus:
            fh = _try_lock(folder / f"gpu{gpu}.lock")
            if fh is not None:
                claim.gpu = gpu
                claim._files.append(fh)
                return claim
        if time.monotonic() >= deadline:
            claim.gpu, claim.gpu_shared = gpus[0], True
            return claim
        time.sleep(poll_s)


def claim_for_cell(cell, env: dict[str, str]) -> Claim:
    """Cores for ``cell`` (and a GPU for a gpu/auto cell: ``CUDA_VISIBLE_DEVICES`` set in ``env``)."""
    claim = claim_cores(cell.threads)
    if cell.device in ("gpu", "auto"):
        claim_gpu(claim, wait_s=min(GPU_WAIT_S, cell.timeout_s) if cell.device == "gpu" else 0.0)
        if claim.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = claim.gpu
    return claim


def with_placement(record: dict[str, Any], claim: Claim, started_at: str) -> dict[str, Any]:
    """Add where and when the cell ran to its record (``env.cpus``, ``started_at``...)."""
    record.setdefault("started_at", started_at)
    record.setdefault("finished_at", now_iso())
    env = record.get("env")
    if not isinstance(env, dict):
        env = record["env"] = {}
    env.setdefault("cpus", list(claim.cpus))
    env["cpus_shared"] = claim.shared
    if claim.gpu is not None:
        env["gpu_index"] = claim.gpu
        env["gpu_shared"] = claim.gpu_shared
    warnings = record.setdefault("warnings", [])
    if claim.shared:
        warnings.append(f"cores {claim.cpus} were shared with another cell running on this host at the same "
                        "time: its timings may be slow; run fewer cells at once or lower --threads")
    if claim.gpu_shared:
        warnings.append(f"GPU {claim.gpu} was shared with another cell running on this host at the same time")
    return record


#: Up to this many cores, one cell at a time leaves one core free by default: on a 2-core host a
#: cell on both cores shares one with the driver, the OS and any neighbour, and its run-to-run CV
#: was 4-15% against 1.3-2.1% with one thread (benchmarks/run_to_run.py, docs/statistics.md).
SMALL_HOST_CORES = 4


def available_cores() -> int:
    """The cores this process may run on (its affinity set; the CPU count where that is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(concurrent: int = 1) -> int:
    """The one default of ``--threads`` (``bench run``, ``study``, ``doctor``, ``info --peak``, the kit):
    a cell's share of `available_cores` when ``concurrent`` cells run at once (`threads_per_cell`)."""
    return threads_per_cell(None, concurrent, available_cores())


def threads_help(what: str = "CPU threads for every backend alike") -> str:
    """The help text of every ``--threads``, with the default as this machine computes it."""
    return (f"{what} (default: the cores available, less one on a host of 2-{SMALL_HOST_CORES} cores, "
            f"shared between --workers; {default_threads()} on this machine)")


def threads_per_cell(requested: int | None, concurrent: int, cores: int) -> int:
    """``--threads`` for ``concurrent`` cells at once on a host of ``cores`` cores: the default
    shares the cores out (``cores // concurrent``, at least 1; one cell on a host of 2 to
    `SMALL_HOST_CORES` cores gets all but one); an explicit count that cannot give every cell its
    own cores is refused.

    Raises:
        UsageError: ``requested * concurrent > cores``.
    """
    from ..errors import UsageError

    concurrent = max(1, concurrent)
    if requested is None:
        if concurrent == 1 and 2 <= cores <= SMALL_HOST_CORES:
            return cores - 1  # a small host keeps one core for the driver, the OS and neighbours
        return max(1, cores // concurrent)
    if requested * concurrent > cores:
        if concurrent == 1:
            raise UsageError(f"--threads {requested} is more than the {cores} cores this process may use; "
                             f"use --threads {cores} or fewer")
        fit = cores // concurrent
        fix = f"use --threads {fit} or fewer" if fit >= 1 else f"use --workers {cores} or fewer"
        raise UsageError(f"--threads {requested} with --workers {concurrent} needs {requested * concurrent} cores "
                         f"for disjoint core sets and this host has {cores}; {fix}, or fewer --workers")
    return requested
