"""The Flax backend: lazy imports, options, canonical weights in and out, frozen layers."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from fwbench.backend import BuildRequest
from fwbench.errors import SpecError
from fwbench.model import analyze, initial_weights
from fwbench.plugins import get_registry
from fwbench.spec import load_task
from fwbench_flax.backend import FlaxBackend

SHAPES = {"mlp_mnist": (1, 28, 28), "cnn_mnist": (1, 28, 28), "resnet_cifar": (3, 32, 32)}


def test_importing_the_plugin_imports_no_framework():
    code = ("import sys, fwbench_flax, fwbench_flax.backend\n"
            "from fwbench.registry import Registry\n"
            "r = Registry(); fwbench_flax.fwbench_register_backends(r); b = r.backends['flax']\n"
            "b.availability(); b.version(); b.identity(); b.for_options({'mode': 'native'})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'jax', 'optax')))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_bad_mode_is_refused():
    with pytest.raises(SpecError, match="backend.mode"):
        FlaxBackend().for_options({"mode": "fast"}, "tasks/mlp_mnist.toml")


@pytest.fixture(scope="module")
def backend():
    b = FlaxBackend()
    b.configure(device="cpu", threads=1)
    return b


def _build(backend, name, **changes):
    task = load_task(get_registry().get_task_file(name))
    if changes:
        task = dataclasses.replace(task, model=dataclasses.replace(task.model, **changes))
    info = analyze(task.model, SHAPES[name], 10)
    weights = initial_weights(task.model, info, seed=3)
    return backend.build(BuildRequest(task, info, weights, "cpu", 10)), info, weights


@pytest.mark.parametrize("name", list(SHAPES))
def test_canonical_weights_round_trip_and_parameter_count(backend, name):
    trainer, info, weights = _build(backend, name)
    out = trainer.get_weights()
    assert set(out) == set(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)
    assert trainer.num_trainable() == info.trainable_count


def test_frozen_layer_gets_no_gradient_and_no_update(backend):
    trainer, info, weights = _build(backend, "cnn_mnist", frozen=("conv2d",))
    assert trainer.num_trainable() == info.trainable_count < sum(w.size for w in weights.values())
    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.normal(size=(8, 1, 28, 28)), rng.integers(0, 10, 8))
    _, _, grads = trainer.loss_and_grads(batch)
    assert "0.weight" not in grads and "6.weight" in grads
    trainer.sync(trainer.train_step(batch, 0.01))
    after = trainer.get_weights()
    np.testing.assert_array_equal(after["0.weight"], weights["0.weight"])
    assert not np.array_equal(after["6.weight"], weights["6.weight"])
