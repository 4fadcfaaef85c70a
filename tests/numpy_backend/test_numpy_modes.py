"""Train versus eval behaviour: dropout, batch norm (running statistics), predict."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench_numpy import layers as L
from numpy_helpers import make_task, make_trainer


def test_dropout_train_masks_and_scales_eval_is_identity():
    rate = 0.3
    layer = L.Dropout("0", rate, np.random.default_rng(0), np.float32)
    x = np.random.default_rng(1).uniform(1, 2, (100, 200)).astype(np.float32)
    y = layer.forward(x, training=True).copy()
    dropped = y == 0
    assert abs(dropped.mean() - rate) < 0.02
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)
    dy = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(dy) == 0, dropped)  # same mask in backward
    again = layer.forward(x, training=True)
    assert not np.array_equal(again == 0, dropped)  # a fresh mask each step
    assert layer.forward(x, training=False) is x


def test_batchnorm_running_statistics_follow_pytorch_conventions():
    layer = L.BatchNorm("0", 1, 0.1, 1e-5, np.float64)
    x = np.array([[1.0], [2.0], [3.0], [4.0]])  # (N, F): mean 2.5, biased var 1.25, unbiased 5/3
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2.5) / np.sqrt(1.25 + 1e-5), rtol=1e-12)
    assert layer.state["running_mean"][0] == pytest.approx(0.9 * 0 + 0.1 * 2.5, rel=1e-12)
    assert layer.state["running_var"][0] == pytest.approx(0.9 * 1 + 0.1 * 5 / 3, rel=1e-12)
    y_eval = layer.forward(x, training=False)
    want = (x[:, 0] - 0.25) / np.sqrt(0.9 + 0.1 * 5 / 3 + 1e-5)
    np.testing.assert_allclose(y_eval[:, 0], want, rtol=1e-12)
    before = layer.state["running_mean"].copy()
    layer.forward(x, training=False)
    np.testing.assert_array_equal(layer.state["running_mean"], before)  # eval never updates


def test_batchnorm_image_statistics_are_per_channel():
    layer = L.BatchNorm("0", 2, 0.5, 1e-5, np.float64)
    layer.params["gamma"][...] = [2.0, 1.0]
    layer.params["beta"][...] = [0.0, 3.0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3, 4)) * np.array([1.0, 5.0])[:, None, None, None] + 7
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y[0].mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(y[1].mean(), 3.0, atol=1e-12)
    np.testing.assert_allclose(y[0].std(), 2.0, rtol=1e-4)
    m = 3 * 3 * 4
    np.testing.assert_allclose(layer.state["running_var"],
                               0.5 + 0.5 * x.reshape(2, -1).var(axis=1) * m / (m - 1), rtol=1e-12)


LAYERS = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
    {"type": "batchnorm"},
    {"type": "activation", "fn": "relu"},
    {"type": "flatten"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


def test_predict_is_eval_mode_and_deterministic():
    trainer, _, _ = make_trainer(make_task(LAYERS, dtype="float32"), (2, 5, 5), 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2, 5, 5)).astype(np.float32)
    batch = trainer.to_device(x, rng.integers(0, 3, 8))
    state = {k: v.copy() for k, v in trainer.model.state.items()}
    first, second = trainer.predict(batch), trainer.predict(batch)
    np.testing.assert_array_equal(first, second)
    a, _, _ = trainer.loss_and_grads(batch)
    b, _, _ = trainer.loss_and_grads(batch)
    assert not np.allclose(a, b)  # dropout draws new masks in train mode
    assert not np.allclose(a, first)
    for k, v in state.items():  # neither predict nor loss_and_grads touched the running stats
        np.testing.assert_array_equal(trainer.model.state[k], v)
    trainer.train_step(batch, 0.0)  # lr 0: only the running statistics move
    assert not np.allclose(trainer.model.state["1.running_mean"], state["1.running_mean"])
    np.testing.assert_array_equal(trainer.predict(x), trainer.predict(batch))  # raw x accepted


def test_predict_in_chunks_equals_one_pass():
    trainer, _, _ = make_trainer(make_task(LAYERS), (2, 5, 5), 3)
    rng = np.random.default_rng(1)
    batch = trainer.to_device(rng.standard_normal((10, 2, 5, 5)), rng.integers(0, 3, 10))
    whole = trainer.predict(batch)
    trainer.eval_chunk = 3  # 3 + 3 + 3 + 1
    np.testing.assert_allclose(trainer.predict(batch), whole, rtol=1e-13, atol=1e-13)


def test_changing_batch_sizes_reuse_nothing_stale():
    """A smaller last batch (new buffer shapes) then the full size again: results equal a fresh
    trainer's, so no buffer (e.g. a padded border) keeps stale content."""
    task = make_task([*LAYERS[:4], {"type": "dense", "units": 3}])
    used, _, _ = make_trainer(task, (2, 5, 5), 3)
    rng = np.random.default_rng(2)
    big = used.to_device(rng.standard_normal((8, 2, 5, 5)), rng.integers(0, 3, 8))
    small = used.to_device(rng.standard_normal((5, 2, 5, 5)) * 3, rng.integers(0, 3, 5))
    used.loss_and_grads(big)
    for batch in (small, big):
        fresh, _, _ = make_trainer(task, (2, 5, 5), 3)
        logits, loss, grads = used.loss_and_grads(batch)
        want_logits, want_loss, want_grads = fresh.loss_and_grads(batch)
        np.testing.assert_array_equal(logits, want_logits)
        assert loss == want_loss
        for name, g in grads.items():
            np.testing.assert_array_equal(g, want_grads[name])
