"""Gradients, optimizer rules, clipping, BN state, dropout, tracing and training with TensorFlow."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tf_helpers import make_task
from tf_reference import CONV, RESNET, forward, randomize, softmax_xent

LINEAR = [{"type": "dense", "units": 3}]
OPTIMIZERS = ["sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw"]


def blobs(rng, n, shape, classes=3, spread=0.5):
    """Gaussian blobs: learnable data of any sample shape."""
    centers = rng.normal(size=(classes, int(np.prod(shape))))
    y = rng.integers(0, classes, n)
    x = centers[y] + spread * rng.normal(size=(n, centers.shape[1]))
    return x.reshape(n, *shape).astype(np.float32), y.astype(np.int64)


def test_mlp_gradients_equal_numpy_backprop(build, rng):
    layers = [{"type": "flatten"}, {"type": "dense", "units": 7, "activation": "relu"},
              {"type": "dense", "units": 4, "activation": "softmax"}]
    trainer, _ = build(make_task(layers), (2, 3, 3), 4)
    w = randomize(trainer.get_weights(), rng)
    trainer.set_weights(w)
    x, y = rng.normal(size=(10, 2, 3, 3)).astype(np.float32), rng.integers(0, 4, 10)
    logits, loss, grads = trainer.loss_and_grads(trainer.to_device(x, y))

    flat = x.reshape(10, -1).astype(np.float64)
    pre = flat @ w["1.weight"] + w["1.bias"]
    hidden = np.maximum(pre, 0)
    want_logits = hidden @ w["2.weight"] + w["2.bias"]
    want_loss, d_logits = softmax_xent(want_logits, y)
    d_pre = (d_logits @ w["2.weight"].T) * (pre > 0)
    want = {"2.weight": hidden.T @ d_logits, "2.bias": d_logits.sum(0),
            "1.weight": flat.T @ d_pre, "1.bias": d_pre.sum(0)}

    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert grads.keys() == want.keys()
    for name, g in want.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-4, atol=1e-6, err_msg=name)


def test_conv_bn_residual_gradients_match_finite_differences(build, rng):
    layers = [dict(layer) for layer in RESNET]
    layers[-2] = {"type": "dropout", "rate": 0.0}
    trainer, _ = build(make_task(layers, dtype="float64", compile="graph"), (2, 6, 6), 3)
    w = randomize(trainer.get_weights(), rng)
    trainer.set_weights(w)
    batch = trainer.to_device(rng.normal(size=(5, 2, 6, 6)), rng.integers(0, 3, 5))
    _, _, grads = trainer.loss_and_grads(batch)
    # every trainable array: conv HWIO<->OIHW layouts, BN gamma/beta, residual shortcut
    assert {"3.shortcut.weight", "3.body.1.gamma", "0.weight", "8.weight"} <= grads.keys()
    eps = 1e-6
    for name, g in grads.items():
        for index in {tuple(rng.integers(0, n) for n in g.shape) for _ in range(3)}:
            losses = []
            for sign in (1, -1):
                moved = {k: v.copy() for k, v in w.items()}
                moved[name][index] += sign * eps
                trainer.set_weights(moved)
                losses.append(trainer.loss_and_grads(batch)[1])
            assert g[index] == pytest.approx((losses[0] - losses[1]) / (2 * eps), rel=1e-5,
                                             abs=1e-8), (name, index)


def numpy_update(name, p, g, state, lr, t, spec):
    """The `OptimizerSpec` rules, written out once more in NumPy (float64)."""
    wd = spec["weight_decay"]
    if name != "adamw":
        g = g + wd * p
    if name == "sgd":
        return p - lr * g
    if name in ("momentum", "nesterov"):
        state["b"] = spec["momentum"] * state.get("b", 0.0) + g
        return p - lr * (g + spec["momentum"] * state["b"] if name == "nesterov" else state["b"])
    if name == "rmsprop":
        state["v"] = spec["alpha"] * state.get("v", 0.0) + (1 - spec["alpha"]) * g ** 2
        return p - lr * g / (np.sqrt(state["v"]) + spec["eps"])
    if name == "adagrad":
        state["s"] = state.get("s", spec["initial_accumulator"]) + g ** 2
        return p - lr * g / (np.sqrt(state["s"]) + spec["eps"])
    b1, b2 = spec["beta1"], spec["beta2"]
    if name == "adamw":
        p = p * (1 - lr * wd)
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g ** 2
    return p - lr * (state["m"] / (1 - b1 ** t)) / (np.sqrt(state["v"] / (1 - b2 ** t)) + spec["eps"])


def linear_grads(w, x, y):
    _, d = softmax_xent(x @ w["0.weight"] + w["0.bias"], y)
    return {"0.weight": x.T @ d, "0.bias": d.sum(0)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_two_optimizer_steps_follow_the_documented_rule(build, rng, name):
    spec = {"name": name, "lr": 0.1, "weight_decay": 0.05, "momentum": 0.8, "beta1": 0.8,
            "beta2": 0.9, "alpha": 0.9, "eps": 1e-3, "initial_accumulator": 0.1}
    trainer, w0 = build(make_task(LINEAR, optimizer=spec), (4,), 3)
    w = {k: v.astype(np.float64) for k, v in w0.items()}
    state = {k: {} for k in w}
    for t, lr in ((1, 0.1), (2, 0.03)):  # a new learning rate at step 2
        x, y = rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, 8)
        grads = linear_grads(w, x.astype(np.float64), y)
        w = {k: numpy_update(name, w[k], grads[k], state[k], lr, t, spec) for k in w}
        trainer.train_step(trainer.to_device(x, y), lr)
    got = trainer.get_weights()
    for k in w:
        assert not np.allclose(got[k], w0[k])
        np.testing.assert_allclose(got[k], w[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("kind, limit", [("norm", 0.05), ("value", 0.02)])
def test_clipping_acts_on_raw_gradients_before_weight_decay(build, rng, kind, limit):
    task = make_task(LINEAR, optimizer={"name": "sgd", "lr": 0.5, "weight_decay": 0.1},
                     clip={"kind": kind, "max": limit}, dtype="float64")  # sees 1e-6 / norm
    trainer, w0 = build(task, (4,), 3)
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    g = linear_grads(w0, x, y)
    if kind == "norm":
        norm = np.sqrt(sum((v ** 2).sum() for v in g.values()))
        assert norm > limit  # the clip is active
        clipped = {k: v * limit / (norm + 1e-6) for k, v in g.items()}  # PyTorch's rule
    else:
        assert (np.abs(g["0.weight"]) > limit).any() and (np.abs(g["0.weight"]) < limit).any()
        clipped = {k: np.clip(v, -limit, limit) for k, v in g.items()}
    trainer.train_step(trainer.to_device(x, y), 0.5)
    got = trainer.get_weights()
    for k in w0:
        np.testing.assert_allclose(got[k], w0[k] - 0.5 * (clipped[k] + 0.1 * w0[k]),
                                   rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("layers, dtype", [
    ([{"type": "batchnorm", "momentum": 0.3}, {"type": "flatten"}, {"type": "dense", "units": 3}],
     "float32"),
    ([{"type": "batchnorm", "momentum": 0.3}, {"type": "flatten"}, {"type": "dense", "units": 3}],
     "float64"),
    ([{"type": "flatten"}, {"type": "batchnorm", "momentum": 0.3}, {"type": "dense", "units": 3}],
     "float32")], ids=["image-fused", "image-float64", "features"])
def test_train_step_updates_running_stats_and_predict_uses_them(build, rng, layers, dtype):
    trainer, w = build(make_task(layers, dtype=dtype, compile="graph"), (2, 3, 3), 3)
    w = randomize(w, rng)
    trainer.set_weights(w)
    x = (rng.normal(size=(6, 2, 3, 3)) * 2 + 1).astype(dtype)
    trainer.train_step(trainer.to_device(x, rng.integers(0, 3, 6)), 0.1)
    path = "0" if layers[0]["type"] == "batchnorm" else "1"
    data = x if path == "0" else x.reshape(6, -1)
    axes = (0, 2, 3) if path == "0" else (0,)
    got = trainer.get_weights()
    np.testing.assert_allclose(got[f"{path}.running_mean"],
                               0.7 * w[f"{path}.running_mean"] + 0.3 * data.mean(axes), rtol=1e-5)
    np.testing.assert_allclose(got[f"{path}.running_var"],
                               0.7 * w[f"{path}.running_var"] + 0.3 * data.var(axes, ddof=1),
                               rtol=1e-5)
    specs = make_task(layers).model.layers
    batch = trainer.to_device(x, np.zeros(6, np.int64))
    np.testing.assert_allclose(trainer.predict(batch), forward(specs, x, got), rtol=1e-5, atol=1e-5)
    assert not np.allclose(trainer.predict(batch), forward(specs, x, got, training=True), atol=1e-3)


def test_dropout_is_inverted_in_training_and_off_in_predict(build, rng):
    layers = [{"type": "dropout", "rate": 0.25}, {"type": "dense", "units": 64, "use_bias": False}]
    trainer, _ = build(make_task(layers), (64,), 64)
    trainer.set_weights({"1.weight": np.eye(64, dtype=np.float32)})
    x = rng.uniform(1, 2, size=(32, 64)).astype(np.float32)
    batch = trainer.to_device(x, np.zeros(32, np.int64))
    np.testing.assert_array_equal(trainer.predict(batch), x)
    logits = trainer.loss_and_grads(batch)[0]
    kept = logits != 0
    np.testing.assert_allclose(logits[kept], x[kept] / 0.75, rtol=1e-6)
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_array_equal(trainer.loss_and_grads(batch)[0], logits)  # same step: same mask
    trainer.train_step(batch, 0.0)
    assert (trainer.loss_and_grads(batch)[0] != 0).tolist() != kept.tolist()  # next step: new mask


@pytest.mark.parametrize("mode", [True, "graph"])
def test_new_learning_rates_and_eval_sizes_do_not_retrace(build, rng, mode):
    layers = [{"type": "flatten"}, {"type": "dense", "units": 3}]
    trainer, _ = build(make_task(layers, compile=mode), (3, 2, 2), 3)
    x, y = blobs(rng, 8, (3, 2, 2))
    batch = trainer.to_device(x, y)
    for lr in (0.1, 0.05, 0.01, 0.003):
        trainer.train_step(batch, lr)
    trainer.predict(batch)
    trainer.predict(trainer.to_device(x[:3], y[:3]))
    assert trainer.tracing_counts() == {"train": 1, "predict": 1, "loss_and_grads": 0}
    assert trainer.compile_info["mode"] == {True: "xla", "graph": "graph"}[mode]


def test_compile_modes_agree(build, rng):
    layers = [dict(layer) for layer in RESNET]
    layers[-2] = {"type": "dropout", "rate": 0.0}
    x, y = blobs(rng, 8, (2, 8, 8))
    results = {}
    for mode in (True, "graph", False):
        task = make_task(layers, compile=mode, clip={"kind": "norm", "max": 0.5},
                         optimizer={"name": "momentum", "lr": 0.1, "weight_decay": 1e-3})
        trainer, w = build(task, (2, 8, 8), 3)
        batch = trainer.to_device(x, y)
        loss = [trainer.fetch([trainer.train_step(batch, 0.1)])[0, 0] for _ in range(2)]
        results[trainer.compile_info["mode"]] = (loss, trainer.get_weights())
    (loss, ref) = results.pop("eager")
    for mode, (other_loss, weights) in results.items():
        np.testing.assert_allclose(other_loss, loss, rtol=1e-5, err_msg=mode)
        for k in ref:
            np.testing.assert_allclose(weights[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=f"{mode} {k}")
    assert not np.allclose(ref["0.weight"], w["0.weight"])


def test_xla_block_max_pool_has_the_pooling_op_values_and_gradients(build, rng):
    """Under XLA max pooling is crop + reshape + reduce_max; it must match tf.nn.max_pool2d."""
    x, y = rng.normal(size=(6, 3, 14, 11)).astype(np.float32), rng.integers(0, 3, 6)
    out = {}
    for mode in (True, "graph"):
        trainer, w = build(make_task(CONV, compile=mode), (3, 14, 11), 3)
        trainer.set_weights(randomize(w, np.random.default_rng(7)))
        out[mode] = trainer.loss_and_grads(trainer.to_device(x, y))
    (xla_logits, xla_loss, xla_grads), (logits, loss, grads) = out[True], out["graph"]
    np.testing.assert_allclose(xla_logits, logits, rtol=1e-5, atol=1e-6)
    assert xla_loss == pytest.approx(loss, rel=1e-6)
    for k, g in grads.items():
        assert np.abs(g).max() > 0
        np.testing.assert_allclose(xla_grads[k], g, rtol=1e-4, atol=1e-6, err_msg=k)


def test_fetch_and_sync_return_loss_and_correct_before_the_update(build, rng):
    layers = [{"type": "flatten"}, {"type": "dense", "units": 3}]
    trainer, _ = build(make_task(layers), (1, 2, 2), 3)
    x, y = blobs(rng, 16, (1, 2, 2))
    batch = trainer.to_device(x, y)
    logits, loss, _ = trainer.loss_and_grads(batch)
    handles = [trainer.train_step(batch, 0.5) for _ in range(3)]
    trainer.sync(handles[-1])
    trainer.sync()
    got = trainer.fetch(handles)
    assert got.shape == (3, 2) and got.dtype == np.float64
    assert got[0, 0] == pytest.approx(loss, rel=1e-6)
    assert got[0, 1] == (logits.argmax(1) == y).sum()
    assert got[2, 0] < got[0, 0]
    assert trainer.fetch([]).shape == (0, 2)
    assert trainer.peak_device_memory() is None


@pytest.mark.parametrize("layers, optimizer, shape", [
    ([{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"},
      {"type": "dense", "units": 3, "activation": "softmax"}], {"name": "adam", "lr": 0.01},
     (1, 6, 6)),
    ([{"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "use_bias": False},
      {"type": "batchnorm"}, {"type": "activation", "fn": "relu"}, {"type": "maxpool", "size": 2},
      {"type": "flatten"}, {"type": "dropout", "rate": 0.2},
      {"type": "dense", "units": 3, "activation": "softmax"}],
     {"name": "nesterov", "lr": 0.05, "weight_decay": 1e-4}, (2, 6, 6))], ids=["mlp", "conv-bn"])
def test_loss_falls_over_30_steps(build, rng, layers, optimizer, shape):
    trainer, _ = build(make_task(layers, optimizer=optimizer), shape, 3)
    x, y = blobs(rng, 32, shape, spread=1.0)
    batch = trainer.to_device(x, y)
    losses = trainer.fetch([trainer.train_step(batch, optimizer["lr"]) for _ in range(30)])[:, 0]
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.5 * losses[0]
    assert (trainer.predict(batch).argmax(1) == y).mean() > 0.8
