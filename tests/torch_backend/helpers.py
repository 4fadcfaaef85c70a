"""Build a `TorchTrainer` from a few lines of spec, as the suite would."""

from __future__ import annotations

from typing import Any

import numpy as np
from fwbench.backend import BuildRequest
from fwbench.model import ModelInfo, analyze, initial_weights
from fwbench.spec import task_from_dict
from fwbench_torch.backend import TorchBackend
from fwbench_torch.trainer import TorchTrainer


def make_trainer(
    layers: list[dict[str, Any]],
    input_shape: tuple[int, ...],
    *,
    optimizer: dict[str, Any] | None = None,
    clip: dict[str, Any] | None = None,
    dtype: str = "float32",
    backend: dict[str, Any] | None = None,
    weights: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[TorchTrainer, dict[str, np.ndarray], ModelInfo]:
    """A CPU trainer for ``layers`` on ``input_shape`` inputs, its initial weights, its analysis."""
    raw: dict[str, Any] = {
        "dataset": {"name": "synthetic"},
        "model": {"layers": layers},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "training": {"batch_size": 8, "epochs": 1, "dtype": dtype, "seed": seed},
        "backend": backend or {},
    }
    if clip:
        raw["clip"] = clip
    task = task_from_dict(raw, "<test>")
    info = analyze(task.model, input_shape)
    if weights is None:
        weights = initial_weights(task.model, info, seed, dtype)
    trainer = TorchBackend().build(BuildRequest(task, info, weights, "cpu", info.output_shape[0]))
    return trainer, weights, info


def batch(shape: tuple[int, ...], n: int, classes: int, seed: int = 0, dtype=np.float32):
    """A random batch: x ``(n, *shape)`` standard normal, y ``(n,)`` int64 in ``[0, classes)``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(dtype), rng.integers(0, classes, n).astype(np.int64)


def random_weights(info: ModelInfo, seed: int = 1, dtype=np.float32) -> dict[str, np.ndarray]:
    """Non-trivial values for every array (running variances positive)."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in info.params:
        a = rng.normal(0.0, 0.5, p.shape)
        if p.role == "running_var":
            a = rng.uniform(0.5, 2.0, p.shape)
        out[p.name] = a.astype(dtype)
    return out
