"""Train-step, conv-pass and small-training cells, built exactly as `bench run` builds them."""
from __future__ import annotations

import os

import numpy as np
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.plugins import get_registry
from fwbench.spec import load_task

BACKENDS = [b for b in os.environ.get("FWBENCH_ASV_BACKENDS", "numpy,torch,tensorflow,jax").split(",") if b]
TASKS = ["mlp_mnist", "cnn_mnist"]
SHAPES = {"mlp_mnist": (1, 28, 28), "cnn_mnist": (1, 28, 28)}
BATCH = 128
THREADS = int(os.environ.get("FWBENCH_ASV_THREADS", "1"))


def backend_or_skip(name: str):
    registry = get_registry()
    if name not in registry.backends or not registry.backends[name].availability().ok:
        raise NotImplementedError(f"backend {name} is not available here")
    backend = registry.backends[name]
    backend.configure(device="cpu", threads=THREADS)
    return backend


def build_trainer(backend_name: str, task_name: str, batch_size: int = BATCH, **spec_overrides):
    """A trainer for ``task_name`` (dropout and all) plus one device batch of synthetic data."""
    backend = backend_or_skip(backend_name)
    task = load_task(get_registry().get_task_file(task_name), {"training.batch_size": batch_size, **spec_overrides})
    info = analyze(task.model, SHAPES[task_name], 10, task.source)
    weights = initial_weights(task.model, info, task.training.seed, task.training.dtype)
    trainer = backend.build(BuildRequest(task, info, weights, "cpu", 10))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *SHAPES[task_name])).astype(np.float32)
    y = rng.integers(0, 10, batch_size)
    return trainer, trainer.to_device(x, y), task


def train_offline(backend_name: str, task_name: str = "mlp_mnist", epochs: int = 3) -> dict:
    """A short real training run on the offline `digits` set, through the suite's own loop."""
    from fwbench.datasets.pipeline import prepare
    from fwbench.training import train

    backend = backend_or_skip(backend_name)
    registry = get_registry()
    task = load_task(registry.get_task_file(task_name), {"training.epochs": epochs, "dataset.name": "digits"})
    dataset = registry.get_dataset("digits")
    data = prepare(dataset.load(None), dataset, task.dataset, task.training.seed, task.training.dtype)
    info = analyze(task.model, data.input_shape, dataset.num_classes, task.source)
    weights = initial_weights(task.model, info, task.training.seed, task.training.dtype)
    trainer = backend.build(BuildRequest(task, info, weights, "cpu", dataset.num_classes))
    return train(task, trainer, data, info).metrics
