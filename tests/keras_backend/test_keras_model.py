"""The Keras model: canonical weights in and out, parameter counts, exact vs native mode. Runs
on the engine Keras is loaded with in this test process (KERAS_BACKEND, default tensorflow)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.plugins import get_registry
from fwbench.spec import load_task
from fwbench_keras.backend import KerasBackend

SHAPES = {"mlp_mnist": (1, 28, 28), "cnn_mnist": (1, 28, 28), "resnet_cifar": (3, 32, 32)}


@pytest.fixture(scope="module")
def backend():
    if "keras" in sys.modules:
        engine = sys.modules["keras"].backend.backend()
    else:
        engine = os.environ.get("KERAS_BACKEND", "tensorflow")
    bound = KerasBackend().for_options({"engine": engine})
    bound.configure(device="cpu", threads=1)
    return bound


def _build(backend, name, **options):
    task = load_task(get_registry().get_task_file(name))
    if options:
        import dataclasses

        task = dataclasses.replace(task, backend=options)
        backend = backend.for_options({**options, "engine": backend.options.engine})
    info = analyze(task.model, SHAPES[name], 10)
    weights = initial_weights(task.model, info, seed=3)
    return backend.build(BuildRequest(task, info, weights, "cpu", 10)), info, weights


@pytest.mark.parametrize("name", list(SHAPES))
def test_canonical_weights_round_trip_and_parameter_count(backend, name):
    trainer, info, weights = _build(backend, name)
    out = trainer.get_weights()
    assert set(out) == set(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(out[key], value, err_msg=key)  # flatten rows, OIHW kernels
    assert trainer.num_trainable() == info.trainable_count


def test_mlp_has_the_keras_example_parameter_count(backend):
    trainer, _, _ = _build(backend, "mlp_mnist")
    assert trainer.num_trainable() == 101_770


def test_native_mode_records_the_conventions_that_differ(backend):
    exact, _, _ = _build(backend, "resnet_cifar")
    native, _, _ = _build(backend, "resnet_cifar", mode="native")
    assert exact.compile_info["differs"] == []
    differs = " ".join(native.compile_info["differs"])
    assert "batchnorm" in differs and "clip norm" in differs and "weight_decay" in differs
    assert native.compile_info["conventions"] == "native"


def test_missing_weight_is_named(backend):
    trainer, _, weights = _build(backend, "mlp_mnist")
    weights.pop("1.bias")
    with pytest.raises(ValueError, match="1.bias"):
        trainer.set_weights(weights)


def test_tensorflow_remapper_workaround_is_scoped_to_leaky_relu_after_a_residual_sum():
    from fwbench.spec import task_from_dict
    from fwbench_keras.conventions import tensorflow_remapper_fault

    def task(*layers):
        return task_from_dict({"task": {"name": "t"}, "dataset": {"name": "digits"},
                               "model": {"layers": [*layers, {"type": "flatten"}, {"type": "dense", "units": 10}]},
                               "optimizer": {"name": "sgd", "lr": 0.1},
                               "training": {"batch_size": 8, "epochs": 1}}, "<test>")

    body = [{"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"}]
    leaky = task({"type": "residual", "activation": "leaky_relu", "layers": body})
    after = task({"type": "residual", "activation": "linear", "layers": body},
                 {"type": "activation", "fn": "leaky_relu"})
    relu = task({"type": "residual", "activation": "relu", "layers": body})
    assert "remapper" in tensorflow_remapper_fault(leaky, "native")
    assert tensorflow_remapper_fault(after, "native")
    assert tensorflow_remapper_fault(relu, "native") is None
    assert tensorflow_remapper_fault(leaky, "exact") is None  # ExactLeakyReLU: no LeakyRelu op to fuse
