"""Freezing (``model.frozen``) in the JAX backend: frozen arrays are partitioned out of the
differentiated params (no gradient, no optax state, no decay), BatchNorm statistics still update
in train mode, and the numbers match the NumPy reference after three Adam steps with decay."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench_jax.backend import JaxBackend
from fwbench_numpy.backend import NumpyBackend
from jax_helpers import make_task

LAYERS = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "relu"},
          {"type": "batchnorm"}, {"type": "maxpool", "size": 2}, {"type": "flatten"},
          {"type": "dense", "units": 6, "activation": "relu"}, {"type": "dense", "units": 3}]
SHAPE = (2, 6, 6)


def build(backend, frozen):
    import dataclasses

    task = make_task(LAYERS, optimizer={"name": "adam", "lr": 0.01, "weight_decay": 0.1}, dtype="float64")
    task = dataclasses.replace(task, model=dataclasses.replace(task.model, frozen=tuple(frozen)))
    info = analyze(task.model, SHAPE, 3)
    weights = initial_weights(task.model, info, 0, "float64")
    return backend.build(BuildRequest(task, info, weights, "cpu", 3)), info, weights


def run(trainer):
    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.normal(size=(8, *SHAPE)), rng.integers(0, 3, 8))
    grads = trainer.loss_and_grads(batch)[2]
    for _ in range(3):
        trainer.sync(trainer.train_step(batch, 0.01))
    return grads, trainer.get_weights()


def test_frozen_layers_do_not_train_and_match_the_numpy_reference():
    trainer, info, start = build(JaxBackend(), ["conv2d", "1"])
    frozen = {p.name for p in info.params if p.frozen}
    assert trainer.num_trainable() == info.trainable_count == build(JaxBackend(), [])[0].num_trainable() - 84
    assert sorted(trainer._state.params) == sorted(p.name for p in info.params if p.trainable)
    grads, after = run(trainer)
    assert sorted(grads) == sorted(trainer._state.params)
    for name in frozen:
        np.testing.assert_array_equal(after[name], start[name], err_msg=name)
    assert not np.allclose(after["1.running_var"], start["1.running_var"])
    _, want = run(build(NumpyBackend(), ["conv2d", "1"])[0])
    for name, value in want.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-6, atol=1e-9, err_msg=name)
