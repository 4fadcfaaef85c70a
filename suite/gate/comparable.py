"""Like with like: the settings two paired cells must share for their numbers to be compared.

The cell key (backend, task, device, dataset, overrides) pairs the cells; this checks what the key
does not hold but the speed depends on: the batch size, the dtype, the threads, the CPU model, the
device actually used (the GPU's name) and the model's parameter count. A pair that differs gets an
``env changed`` row that fails the gate unless ``--allow-env-change`` (docs/statistics.md).
"""
from __future__ import annotations

from typing import Any


def _get(record: dict, *path: str) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _gpu(record: dict) -> Any:
    gpu = _get(record, "env", "gpu")
    if isinstance(gpu, list):
        return [g.get("name") if isinstance(g, dict) else g for g in gpu] or None
    return gpu.get("name") if isinstance(gpu, dict) else gpu


#: (what, how to read it from a record)
FACTS = (
    ("batch size", lambda r: _get(r, "config", "training", "batch_size")),
    ("dtype", lambda r: _get(r, "env", "dtype") or _get(r, "config", "training", "dtype")),
    ("threads", lambda r: _get(r, "env", "threads")),
    ("CPU model", lambda r: _get(r, "env", "cpu", "model")),
    ("device", lambda r: r.get("device")),
    ("GPU", _gpu),
    ("parameters", lambda r: r.get("params")),
)


def differences(base: dict, new: dict) -> list[str]:
    """``["threads 1 → 2", ...]``: the facts known on both sides that differ (unknown ones are not
    guessed)."""
    out = []
    for what, read in FACTS:
        b, n = read(base), read(new)
        if b is not None and n is not None and b != n:
            out.append(f"{what} {b} → {n}")
    return out
