"""Every shipped task builds from its spec alone, counts its parameters right and trains."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fwbench.backend import BuildRequest
from fwbench.errors import DeviceError
from fwbench.model import analyze, initial_weights
from fwbench.spec import load_task
from fwbench_numpy.backend import NumpyBackend
from numpy_helpers import DATASET_SHAPES, make_task, make_trainer

TASKS = sorted(Path(__file__).resolve().parents[2].joinpath("tasks").glob("*.toml"))


def test_the_shipped_tasks_are_found():
    assert {p.stem for p in TASKS} >= {"mlp_mnist", "cnn_mnist", "cnn_cifar", "resnet_cifar"}


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_shipped_task_builds_counts_and_steps(path):
    task = load_task(path)
    shape = DATASET_SHAPES[task.dataset.name]
    info = analyze(task.model, shape, 10, str(path))
    weights = initial_weights(task.model, info, task.training.seed, task.training.dtype)
    backend = NumpyBackend()
    facts = backend.configure(device="cpu", threads=1)
    assert facts["threads"] == 1 and facts["blas"]
    trainer = backend.build(BuildRequest(task, info, weights, "cpu", 10))
    assert trainer.num_trainable() == info.trainable_count
    assert trainer.compile_info["mode"] == "eager"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *shape)).astype(np.float32)
    batch = trainer.to_device(x, rng.integers(0, 10, 8))
    result = trainer.train_step(batch, task.optimizer.lr)
    assert isinstance(result, tuple) and all(type(v) is float for v in result)
    assert np.isfinite(result[0]) and 0 <= result[1] <= 8
    assert trainer.fetch([result]).shape == (1, 2)
    assert trainer.predict(batch).shape == (8, 10)
    changed = [k for k, v in trainer.get_weights().items() if not np.array_equal(v, weights[k])]
    assert changed  # the step updated something


def test_backend_facts_and_devices():
    backend = NumpyBackend()
    assert backend.name == "numpy" and backend.availability().ok
    assert backend.gpu_available() is False
    with pytest.raises(DeviceError, match="--device cpu"):
        backend.configure(device="gpu", threads=1)


def test_training_learns_a_real_dataset():
    """Digits (1,797 real 8x8 images, shipped with scikit-learn): a small MLP learns it."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    layers = [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"},
              {"type": "dense", "units": 10, "activation": "softmax"}]
    task = make_task(layers, optimizer={"name": "adam", "lr": 0.01}, dtype="float32")
    trainer, _, _ = make_trainer(task, (1, 8, 8), 10)
    test = trainer.to_device(x[1500:], y[1500:])
    before = (trainer.predict(test).argmax(1) == y[1500:]).mean()
    for _ in range(3):
        for i in range(0, 1500, 50):
            trainer.train_step(trainer.to_device(x[i:i + 50], y[i:i + 50]), 0.01)
    after = (trainer.predict(test).argmax(1) == y[1500:]).mean()
    assert before < 0.3 and after > 0.85


def test_steady_state_steps_allocate_almost_nothing():
    """After the first step every big array is a reused workspace buffer: a further step
    allocates only small temporaries (statistics, NumPy's internal buffers)."""
    import tracemalloc

    task = load_task(TASKS[[p.stem for p in TASKS].index("resnet_cifar")])
    trainer, _, _ = make_trainer(task, (3, 32, 32), 10)
    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.standard_normal((16, 3, 32, 32)), rng.integers(0, 10, 16))
    trainer.train_step(batch, 0.01)
    held = trainer.model.workspace_bytes()
    tracemalloc.start()
    try:
        trainer.train_step(batch, 0.01)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert trainer.model.workspace_bytes() == held
    assert peak < min(1 << 20, held // 50), (peak, held)


def test_bad_labels_are_rejected_with_the_range():
    trainer, _, _ = make_trainer(make_task([{"type": "flatten"}, {"type": "dense", "units": 3}]),
                                 (1, 2, 2), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        trainer.to_device(np.zeros((2, 1, 2, 2)), np.array([0, 3]))
