"""The TensorFlow model against the suite's analysis and an independent NumPy forward pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fwbench.conformance.checks import task_input
from fwbench.model import analyze
from fwbench.spec import load_task
from fwbench_tensorflow.model import conv_padding
from tf_helpers import make_task
from tf_reference import CONV, MLP, RESNET, forward, randomize

TASKS = sorted((Path(__file__).parents[2] / "tasks").glob("*.toml"))  # the training tasks


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_parameter_count_matches_the_suite_for_every_shipped_task(build, path):
    task = load_task(path)
    if task.task.family != "train":
        pytest.skip("not a training task")
    shape, _ = task_input(task)  # the dataset's shape, from the registry
    trainer, _ = build(task, shape, 10)
    assert trainer.num_trainable() == analyze(task.model, shape, 10).trainable_count


def test_weights_round_trip_in_canonical_layout(build, rng):
    task = make_task(RESNET)
    trainer, initial = build(task, (2, 8, 8), 3)
    got = trainer.get_weights()
    assert got.keys() == initial.keys()
    for name, value in initial.items():
        assert got[name].dtype == np.float32 and got[name].flags.c_contiguous
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    changed = randomize(initial, rng)
    trainer.set_weights(changed)
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, changed[name], err_msg=name)
    got["0.weight"][...] = 123.0  # a copy, not a view of the variable
    assert trainer.get_weights()["0.weight"].max() != 123.0


def test_set_weights_names_what_is_wrong(build):
    trainer, weights = build(make_task(MLP), (1, 3, 3), 5)
    with pytest.raises(KeyError, match=r"missing \['1.bias'\]"):
        trainer.set_weights({k: v for k, v in weights.items() if k != "1.bias"})
    with pytest.raises(ValueError, match="1.weight"):
        trainer.set_weights({**weights, "1.weight": weights["1.weight"].T})


@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    ((8, 8), 3, 1, 1, "SAME"), ((7, 8), 3, 2, 1, "explicit"), ((7, 9), 3, 2, 1, "SAME"),
    ((8, 8), 5, 1, 1, "explicit"), ((8, 8), 3, 1, 0, "VALID"), ((8, 8), 4, 1, 1, "explicit")])
def test_conv_padding_uses_same_only_where_it_is_symmetric(size, kernel, stride, pad, expected):
    got = conv_padding(size, kernel, stride, pad)
    assert (got if isinstance(got, str) else "explicit") == expected
    if expected == "explicit":
        assert got == [[0, 0], [pad, pad], [pad, pad], [0, 0]]


@pytest.mark.parametrize("layers, shape, dtype, mode", [
    (MLP, (1, 3, 3), "float32", "graph"), (MLP, (2, 3, 3), "float32", "graph"),
    (CONV, (3, 8, 7), "float32", "graph"), (CONV, (3, 14, 11), "float32", True),
    (RESNET, (2, 8, 8), "float32", "graph"), (RESNET, (2, 8, 8), "float64", "graph")],
    ids=["mlp", "mlp-multichannel", "conv-stride2-flatten", "conv-xla-cropped-pool", "resnet",
         "resnet-float64"])
def test_eval_logits_equal_the_numpy_forward(build, rng, layers, shape, dtype, mode):
    task = make_task(layers, dtype=dtype, compile=mode)
    trainer, weights = build(task, shape, 5 if layers is MLP else 3)
    weights = randomize(weights, rng)
    trainer.set_weights(weights)
    x = rng.normal(size=(6, *shape)).astype(dtype)
    batch = trainer.to_device(x, np.zeros(6, np.int64))
    want = forward(task.model.layers, x, weights)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(trainer.predict(batch), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_mode_logits_use_batch_statistics(build, rng, dtype):
    layers = [dict(layer) for layer in RESNET]
    layers[-2] = {"type": "dropout", "rate": 0.0}
    task = make_task(layers, dtype=dtype, compile="graph")  # XLA: see the compile-mode test
    trainer, weights = build(task, (2, 8, 8), 3)
    weights = randomize(weights, rng)
    trainer.set_weights(weights)
    x = rng.normal(size=(6, 2, 8, 8)).astype(dtype)
    logits, _, _ = trainer.loss_and_grads(trainer.to_device(x, np.zeros(6, np.int64)))
    want = forward(task.model.layers, x, weights, training=True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(logits, want, rtol=tol, atol=tol)
    assert not np.allclose(want, forward(task.model.layers, x, weights), atol=1e-3)


def test_to_device_makes_nhwc_tensors_on_the_device(build, rng):
    trainer, _ = build(make_task(CONV), (3, 8, 7), 3)
    x = rng.normal(size=(4, 3, 8, 7))
    batch = trainer.to_device(x, np.arange(4))
    assert batch.x.shape == (4, 8, 7, 3) and batch.x.dtype == tf.float32
    assert batch.y.dtype == tf.int64 and "CPU:0" in batch.x.device
    np.testing.assert_allclose(batch.x.numpy()[1, 2, 3], x[1, :, 2, 3].astype(np.float32))
    with pytest.raises(ValueError, match=r"\(3, 8, 7\)"):
        trainer.to_device(x[:, :, :7], np.arange(4))


def test_invalid_compile_option_names_the_choices(build):
    from fwbench.errors import SpecError

    with pytest.raises(SpecError, match="graph"):
        build(make_task(MLP, compile="turbo"), (1, 3, 3), 5)
