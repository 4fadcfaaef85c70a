"""The JAX model against the suite's analysis and an independent NumPy forward (both layouts)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import load_task
from jax_helpers import build, f64, np_conv, np_pool, relu

TASKS = sorted((Path(__file__).resolve().parents[2] / "tasks").glob("*.toml"))
INPUT_SHAPES = {"mnist": (1, 28, 28), "mnist_5k": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "digits": (1, 8, 8), "cifar10": (3, 32, 32), "synthetic": (3, 32, 32)}
LAYOUTS = ["NHWC", "NCHW"]


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_trainable_count_of_every_shipped_task_matches_the_analysis(path):
    from fwbench_jax.backend import JaxBackend

    task = load_task(path)
    info = analyze(task.model, INPUT_SHAPES[task.dataset.name], 10)
    weights = initial_weights(task.model, info, 0)
    trainer = JaxBackend().build(BuildRequest(task, info, weights, "cpu", 10))
    assert trainer.num_trainable() == info.trainable_count


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weights_round_trip_in_canonical_layout_with_running_stats(layout):
    task = load_task(Path(__file__).resolve().parents[2] / "tasks" / "resnet_cifar.toml",
                     overrides={"backend.layout": layout})
    from fwbench_jax.backend import JaxBackend

    info = analyze(task.model, (3, 32, 32), 10)
    trainer = JaxBackend().build(BuildRequest(task, info, initial_weights(task.model, info, 0), "cpu", 10))
    rng = np.random.default_rng(3)
    new = {p.name: rng.normal(size=p.shape).astype(np.float32) for p in info.params}
    trainer.set_weights(new)
    got = trainer.get_weights()
    assert set(got) == set(new) and any(k.endswith("running_var") for k in got)
    for name, value in new.items():
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    got["0.weight"][...] = 0  # a copy, not a view of the device buffer
    assert np.any(trainer.get_weights()["0.weight"] != 0)


def test_set_weights_names_a_bad_shape():
    trainer, _, _, w = build([{"type": "dense", "units": 3}], (4,))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(3, 4\)"):
        trainer.set_weights({**w, "0.weight": np.zeros((3, 4), np.float32)})


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mlp_logits_match_numpy(layout):
    layers = [{"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"},
              {"type": "dense", "units": 5, "activation": "softmax"}]
    trainer, _, _, w = build(layers, (2, 3, 3), num_classes=5, backend={"layout": layout})
    x = np.random.default_rng(0).normal(size=(6, 2, 3, 3)).astype(np.float32)
    w = f64(w)
    expect = relu(x.reshape(6, -1) @ w["1.weight"] + w["1.bias"]) @ w["2.weight"] + w["2.bias"]
    got = trainer.predict(trainer.to_device(x, np.zeros(6, np.int64)))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)  # logits: softmax left out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_net_with_padding_stride_pool_and_flatten_matches_numpy(layout):
    layers = [
        {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1, "activation": "relu"},
        {"type": "conv2d", "filters": 5, "kernel": 3, "padding": 2, "activation": "tanh"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3},
    ]
    trainer, _, info, w = build(layers, (3, 9, 9), backend={"layout": layout}, init="he_normal")
    assert info.layers[2].out_shape == (5, 3, 3)
    x = np.random.default_rng(1).normal(size=(2, 3, 9, 9)).astype(np.float32)
    w = f64(w)
    h = relu(np_conv(x, w["0.weight"], w["0.bias"], 2, 1))
    h = np.tanh(np_conv(h, w["1.weight"], w["1.bias"], 1, 2))
    h = np_pool(h, 2, np.max).reshape(2, -1)  # C-major flatten
    expect = h @ w["4.weight"] + w["4.bias"]
    got = trainer.predict(trainer.to_device(x, np.zeros(2, np.int64)))
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_avgpool_global_pool_and_activations_match_numpy(layout):
    layers = [
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "leaky_relu"},
        {"type": "avgpool", "size": 2},
        {"type": "activation", "fn": "sigmoid"},
        {"type": "global_avg_pool"},
        {"type": "dense", "units": 3},
        {"type": "activation", "fn": "softmax"},
    ]
    trainer, _, _, w = build(layers, (2, 6, 6), backend={"layout": layout})
    x = np.random.default_rng(2).normal(size=(3, 2, 6, 6)).astype(np.float32)
    w = f64(w)
    h = np_conv(x, w["0.weight"], w["0.bias"], 1, 1)
    h = np.where(h > 0, h, 0.01 * h)
    h = 1 / (1 + np.exp(-np_pool(h, 2, np.mean)))
    expect = h.mean(axis=(2, 3)) @ w["4.weight"] + w["4.bias"]
    got = trainer.predict(trainer.to_device(x, np.zeros(3, np.int64)))
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_residual_block_with_projection_matches_numpy(layout):
    block = {"type": "residual", "layers": [
        {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same", "activation": "relu"},
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
    ]}
    identity = {"type": "residual", "activation": "tanh",
                "layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}]}
    layers = [block, identity, {"type": "flatten"}, {"type": "dense", "units": 3}]
    trainer, _, _, w = build(layers, (3, 8, 8), backend={"layout": layout}, init="he_normal")
    assert "0.shortcut.weight" in w and w["0.shortcut.weight"].shape == (4, 3, 1, 1)
    assert "1.shortcut.weight" not in w
    x = np.random.default_rng(4).normal(size=(2, 3, 8, 8)).astype(np.float32)
    w = f64(w)
    body = relu(np_conv(x, w["0.body.0.weight"], w["0.body.0.bias"], 2, 1))
    body = np_conv(body, w["0.body.1.weight"], w["0.body.1.bias"], 1, 1)
    h = relu(body + np_conv(x, w["0.shortcut.weight"], w["0.shortcut.bias"], 2, 0))
    h = np.tanh(np_conv(h, w["1.body.0.weight"], w["1.body.0.bias"], 1, 1) + h)
    expect = h.reshape(2, -1) @ w["3.weight"] + w["3.bias"]
    got = trainer.predict(trainer.to_device(x, np.zeros(2, np.int64)))
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batchnorm_predict_uses_running_stats_and_train_step_updates_them(layout):
    layers = [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
              {"type": "batchnorm", "momentum": 0.3, "eps": 1e-3},
              {"type": "flatten"}, {"type": "dense", "units": 3}]
    trainer, _, _, w = build(layers, (2, 4, 4), backend={"layout": layout},
                                optimizer={"name": "sgd", "lr": 0.1})
    rng = np.random.default_rng(5)
    start = {**w, "1.running_mean": rng.normal(size=3).astype(np.float32),
             "1.running_var": rng.uniform(0.5, 2.0, 3).astype(np.float32),
             "1.gamma": rng.uniform(0.5, 2.0, 3).astype(np.float32),
             "1.beta": rng.normal(size=3).astype(np.float32)}
    trainer.set_weights(start)
    x = rng.normal(2.0, 3.0, size=(5, 2, 4, 4)).astype(np.float32)
    w = f64(start)
    conv = np_conv(x, w["0.weight"], w["0.bias"], 1, 1)

    def head(normed):
        return normed.reshape(5, -1) @ w["3.weight"] + w["3.bias"]

    def bn(mean, var):
        return ((conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3)
                * w["1.gamma"][None, :, None, None] + w["1.beta"][None, :, None, None])

    batch = trainer.to_device(x, np.zeros(5, np.int64))
    eval_logits = head(bn(w["1.running_mean"], w["1.running_var"]))
    np.testing.assert_allclose(trainer.predict(batch), eval_logits, rtol=1e-4, atol=1e-4)
    train_logits = head(bn(conv.mean(axis=(0, 2, 3)), conv.var(axis=(0, 2, 3))))  # biased
    np.testing.assert_allclose(trainer.loss_and_grads(batch)[0], train_logits, rtol=1e-4, atol=1e-4)

    trainer.sync(trainer.train_step(batch, 0.0))  # lr 0: only the running statistics move
    got = trainer.get_weights()
    n = 5 * 4 * 4
    np.testing.assert_allclose(got["1.running_mean"],
                               0.7 * w["1.running_mean"] + 0.3 * conv.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got["1.running_var"],  # unbiased batch variance
                               0.7 * w["1.running_var"] + 0.3 * conv.var(axis=(0, 2, 3)) * n / (n - 1),
                               rtol=1e-5)
    np.testing.assert_array_equal(got["0.weight"], start["0.weight"])


def test_dropout_is_inverted_in_training_and_identity_at_eval():
    import jax
    from fwbench_jax.layout import Layout
    from fwbench_jax.model import Model
    from jax_helpers import make_task

    task = make_task([{"type": "dropout", "rate": 0.25}])
    model = Model(analyze(task.model, (4000,)), Layout("NHWC"))
    x = np.random.default_rng(6).uniform(1.0, 2.0, size=(2, 4000)).astype(np.float32)
    out, _ = model.apply({}, {}, x, train=False)
    np.testing.assert_array_equal(out, x)
    a = np.asarray(model.apply({}, {}, x, train=True, key=jax.random.key(0))[0])
    b = np.asarray(model.apply({}, {}, x, train=True, key=jax.random.key(1))[0])
    kept = a != 0
    np.testing.assert_allclose(a[kept], x[kept] / 0.75, rtol=1e-6)
    assert 0.72 < kept.mean() < 0.78
    assert np.any((a != 0) != (b != 0))  # a different key, a different mask
    with pytest.raises(ValueError, match="PRNG key"):
        model.apply({}, {}, x, train=True)
