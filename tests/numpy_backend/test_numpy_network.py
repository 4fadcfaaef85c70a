"""Whole networks built from specs: gradients of every parameter against finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench_numpy import layers as L
from numpy_helpers import make_task, make_trainer, numeric_grad, rel_error

#: Every layer type of the spec vocabulary except flatten (in NET_B), dropout at rate 0.
NET_A = [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same", "activation": "leaky_relu"},
    {"type": "batchnorm"},
    {"type": "avgpool", "size": 2, "stride": 1},
    {"type": "residual", "layers": [
        {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same", "use_bias": False},
        {"type": "batchnorm"},
        {"type": "activation", "fn": "tanh"},
        {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1},
    ]},
    {"type": "residual", "activation": "linear", "layers": [
        {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same",
         "activation": "sigmoid"},
    ]},
    {"type": "maxpool", "size": 2, "stride": 1},
    {"type": "dropout", "rate": 0.0},
    {"type": "global_avg_pool"},
    {"type": "dense", "units": 6, "activation": "softmax"},
    {"type": "dense", "units": 5, "activation": "relu"},
    {"type": "activation", "fn": "leaky_relu", "alpha": 0.1},
    {"type": "dense", "units": 3, "activation": "softmax"},
]

NET_B = [
    {"type": "conv2d", "filters": 4, "kernel": 2, "stride": 2, "activation": "tanh"},
    {"type": "maxpool", "size": 2},
    {"type": "flatten"},
    {"type": "batchnorm"},
    {"type": "dropout", "rate": 0.0},
    {"type": "dense", "units": 4, "activation": "sigmoid"},
    {"type": "dense", "units": 3},
    {"type": "activation", "fn": "softmax"},
]


@pytest.mark.parametrize(("layers", "input_shape"), [(NET_A, (2, 7, 7)), (NET_B, (3, 8, 8))],
                         ids=["every-layer-type", "flatten-bn-flat"])
def test_whole_network_gradients(layers, input_shape):
    task = make_task(layers, batch_size=5)
    trainer, info, _ = make_trainer(task, input_shape, 3)
    kinds = {type(layer).__name__ for layer in L.walk(trainer.model.layers)}
    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.standard_normal((5, *input_shape)), rng.integers(0, 3, 5))
    _, loss, grads = trainer.loss_and_grads(batch)
    assert set(grads) == {p.name for p in info.params if p.trainable}

    def loss_only():
        logits = trainer.model.forward(batch.x, training=True)
        return trainer.loss(logits, batch.y, with_grad=False)[0]

    assert loss_only() == pytest.approx(loss, rel=1e-14)
    for name, param in trainer.model.params.items():
        idx, num = numeric_grad(loss_only, param, max_entries=60, rng=rng)
        err = rel_error(grads[name].reshape(-1)[idx], num)
        assert err <= 1e-6, f"{name}: relative error {err}"
    if layers is NET_A:
        assert kinds >= {"Conv2D", "BatchNorm", "AvgPool", "Residual", "MaxPool", "Dropout",
                         "GlobalAvgPool", "Dense", "Activation"}


def test_final_softmax_is_folded_into_the_loss():
    task = make_task(NET_B)
    trainer, _, _ = make_trainer(task, (3, 8, 8), 3)
    last = trainer.model.layers[-1]
    assert isinstance(last, L.Dense)  # the softmax activation layer after it was dropped
    rng = np.random.default_rng(1)
    logits = trainer.predict(rng.standard_normal((4, 3, 8, 8)))
    assert not np.allclose(logits.sum(axis=1), 1.0)  # logits, not probabilities


def test_mid_network_softmax_is_kept():
    task = make_task(NET_A)
    trainer, _, _ = make_trainer(task, (2, 7, 7), 3)
    fns = [layer.fn for layer in L.walk(trainer.model.layers) if isinstance(layer, L.Activation)]
    assert fns.count("softmax") == 1  # the dense-6 softmax stays; the final one is folded
