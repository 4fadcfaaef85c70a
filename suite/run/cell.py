"""A cell: one (backend, task, device, overrides) combination of a run, and its ids.

The unit every executor runs (`fwbench.run.executor`), the driver schedules (`fwbench.run.local`)
and a record names (``cell_id``).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..records.results import safe_name


@dataclass(frozen=True)
class Cell:
    """One (backend, task, device, overrides) combination of a run."""

    run_id: str
    backend: str
    task: str
    task_path: str
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    threads: int = 1
    timeout_s: float = 3600.0
    data_dir: str | None = None
    memory_limit_mb: int | None = None
    peak_flops: float | None = None  # the machine's measured peak (FLOP/s), see fwbench.micro.peak
    peak_info: dict[str, Any] = field(default_factory=dict)  # its details (bandwidth, per backend)
    save_weights: str | None = None  # a folder: the cell writes <folder>/<cell_id>.npz (fwbench.records.checkpoints)
    repeats: int = 1  # fresh processes per cell (`bench run --repeat`), interleaved across cells
    repeat: int = 1  # which of them this is (1-based); the cell_id is the same for all

    @property
    def cell_id(self) -> str:
        parts = [self.backend, self.task, self.device]
        parts += [f"{k}={v}" for k, v in sorted(self.overrides.items()) if k != "dataset.shape"]
        return safe_name("__".join(str(p) for p in parts))

    @property
    def label(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        label = f"{self.backend} · {self.task} · {self.device}" + (f" · {extra}" if extra else "")
        return label + (f" (repeat {self.repeat}/{self.repeats})" if self.repeats > 1 else "")

    @property
    def log_name(self) -> str:
        return self.cell_id + (f".r{self.repeat}" if self.repeats > 1 else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cell_id": self.cell_id}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
