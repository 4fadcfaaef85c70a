"""Freezing (``model.frozen``) in the NumPy backend: frozen parameters never move (no gradient
step, no weight decay, no optimizer state), BatchNorm inside a frozen layer still updates its
running statistics (PyTorch's semantics), the trainable count agrees with `analyze`, and a
frozen prefix of the model is not back-propagated at all."""
from __future__ import annotations

import numpy as np
from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import task_from_dict
from fwbench_numpy.backend import NumpyBackend

LAYERS = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "relu"},
          {"type": "batchnorm"}, {"type": "maxpool", "size": 2}, {"type": "flatten"},
          {"type": "dense", "units": 6, "activation": "relu"}, {"type": "dense", "units": 3}]
SHAPE = (2, 6, 6)


def build(frozen, dtype="float64"):
    raw = {"dataset": {"name": "synthetic"}, "model": {"layers": LAYERS, "frozen": frozen, "init": "he_uniform"},
           "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.1},
           "training": {"batch_size": 8, "epochs": 1, "dtype": dtype}}
    task = task_from_dict(raw, "<test>")
    info = analyze(task.model, SHAPE, 3)
    weights = initial_weights(task.model, info, 0, dtype)
    return NumpyBackend().build(BuildRequest(task, info, weights, "cpu", 3)), info, weights


def test_frozen_layers_do_not_train_but_batchnorm_statistics_update():
    trainer, info, start = build(["conv2d", "1"])  # a layer type and a layer path (the BatchNorm)
    frozen = {p.name for p in info.params if p.frozen}
    assert frozen == {"0.weight", "0.bias", "1.gamma", "1.beta"}
    unfrozen_count = build([])[0].num_trainable()
    assert trainer.num_trainable() == info.trainable_count == unfrozen_count - (4 * 2 * 9 + 4 + 4 + 4)
    assert trainer.model.flat_params.size < build([])[0].model.flat_params.size  # no optimizer state for them

    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.normal(size=(8, *SHAPE)), rng.integers(0, 3, 8))
    grads = trainer.loss_and_grads(batch)[2]
    assert sorted(grads) == sorted(p.name for p in info.params if p.trainable)
    for _ in range(3):
        trainer.train_step(batch, 0.01)
    after = trainer.get_weights()
    for name in frozen:
        np.testing.assert_array_equal(after[name], start[name], err_msg=name)
    for name in ("1.running_mean", "1.running_var", "4.weight", "5.bias"):
        assert not np.allclose(after[name], start[name]), name
    conv = trainer.model.layers[0]
    assert not conv.grads["weight"].any(), "the frozen prefix was back-propagated"
    trainer.set_weights(start)  # frozen arrays load like any other
    np.testing.assert_array_equal(trainer.get_weights()["0.weight"], start["0.weight"])
