"""The torch model against the suite's analysis and independent NumPy forwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fwbench.backend import BuildRequest
from fwbench.model import analyze, initial_weights
from fwbench.spec import load_task
from fwbench_torch.backend import TorchBackend

from . import reference as ref
from .helpers import batch, make_trainer, random_weights

TASKS = sorted((Path(__file__).parents[2] / "tasks").glob("*.toml"))
INPUT_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
F32 = {"rtol": 1e-5, "atol": 1e-5}


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_shipped_task_parameter_count_matches_analysis(path):
    task = load_task(path)
    info = analyze(task.model, INPUT_SHAPES[task.dataset.name], 10)
    weights = initial_weights(task.model, info, 0)
    trainer = TorchBackend().build(BuildRequest(task, info, weights, "cpu", 10))
    assert trainer.num_trainable() == info.trainable_count
    assert set(trainer.get_weights()) == {p.name for p in info.params}


def test_weights_round_trip_through_set_and_get():
    task = load_task(Path(__file__).parents[2] / "tasks" / "resnet_cifar.toml")
    info = analyze(task.model, (3, 32, 32), 10)
    trainer = TorchBackend().build(
        BuildRequest(task, info, initial_weights(task.model, info, 0), "cpu", 10)
    )
    weights = random_weights(info)
    trainer.set_weights(weights)
    got = trainer.get_weights()
    assert set(got) == set(weights)
    for name, array in weights.items():
        assert got[name].shape == array.shape and got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    # copies, not views: changing what get_weights returned leaves the model alone
    got["8.weight"][:] = 0.0
    np.testing.assert_array_equal(trainer.get_weights()["8.weight"], weights["8.weight"])


def test_set_weights_names_missing_and_wrong_shapes():
    trainer, weights, _ = make_trainer([{"type": "dense", "units": 3}], (4,))
    with pytest.raises(KeyError, match=r"missing.*0\.bias"):
        trainer.set_weights({"0.weight": weights["0.weight"]})
    with pytest.raises(ValueError, match=r"0\.weight"):
        trainer.set_weights({**weights, "0.weight": weights["0.weight"].T})


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "leaky_relu"])
def test_mlp_logits_match_numpy(act):
    layers = [
        {"type": "flatten"},
        {"type": "dense", "units": 7, "activation": act},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]  # folded into the loss
    trainer, w, _ = make_trainer(layers, (2, 3, 2))
    x, y = batch((2, 3, 2), 5, 3)
    h = ref.dense(x.reshape(5, -1).astype(np.float64), w["1.weight"], w["1.bias"])
    h = {
        "relu": ref.relu,
        "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "leaky_relu": lambda v: np.where(v > 0, v, 0.01 * v),
    }[act](h)
    expected = ref.dense(h, w["2.weight"], w["2.bias"])
    np.testing.assert_allclose(trainer.predict(trainer.to_device(x, y)), expected, **F32)


def test_conv_net_with_padding_and_stride_matches_numpy():
    layers = [
        {
            "type": "conv2d",
            "filters": 4,
            "kernel": 3,
            "stride": 2,
            "padding": 1,
            "activation": "relu",
        },
        {"type": "conv2d", "filters": 5, "kernel": 3, "padding": "same"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3},
    ]
    trainer, w, info = make_trainer(layers, (2, 9, 9))
    assert info.layers[0].out_shape == (4, 5, 5)
    x, y = batch((2, 9, 9), 3, 3)
    a = ref.relu(ref.conv2d(x.astype(np.float64), w["0.weight"], w["0.bias"], 2, 1))
    a = ref.maxpool(ref.conv2d(a, w["1.weight"], w["1.bias"], 1, 1), 2)
    expected = ref.dense(a.reshape(3, -1), w["4.weight"], w["4.bias"])
    np.testing.assert_allclose(trainer.predict(trainer.to_device(x, y)), expected, **F32)


def test_residual_block_with_projection_and_batchnorm_matches_numpy():
    layers = [
        {
            "type": "residual",
            "layers": [
                {
                    "type": "conv2d",
                    "filters": 6,
                    "kernel": 3,
                    "stride": 2,
                    "padding": "same",
                    "use_bias": False,
                },
                {"type": "batchnorm", "eps": 1e-3},
                {"type": "activation", "fn": "relu"},
                {"type": "conv2d", "filters": 6, "kernel": 3, "padding": "same"},
            ],
        },
        {"type": "global_avg_pool"},
        {"type": "dense", "units": 3},
    ]
    trainer, _, info = make_trainer(layers, (3, 8, 8))
    w = {k: v.astype(np.float64) for k, v in random_weights(info).items()}
    assert w["0.shortcut.weight"].shape == (6, 3, 1, 1)
    trainer.set_weights({k: v.astype(np.float32) for k, v in w.items()})
    x, y = batch((3, 8, 8), 4, 3)
    x64 = x.astype(np.float64)
    body = ref.conv2d(x64, w["0.body.0.weight"], None, 2, 1)
    body = ref.batchnorm_eval(
        body,
        w["0.body.1.gamma"],
        w["0.body.1.beta"],
        w["0.body.1.running_mean"],
        w["0.body.1.running_var"],
        1e-3,
    )
    body = ref.conv2d(ref.relu(body), w["0.body.3.weight"], w["0.body.3.bias"], 1, 1)
    skip = ref.conv2d(x64, w["0.shortcut.weight"], w["0.shortcut.bias"], 2, 0)
    pooled = ref.relu(body + skip).mean(axis=(2, 3))
    expected = ref.dense(pooled, w["2.weight"], w["2.bias"])
    np.testing.assert_allclose(trainer.predict(trainer.to_device(x, y)), expected, **F32)


def test_identity_residual_has_no_shortcut():
    layers = [
        {"type": "residual", "layers": [{"type": "dense", "units": 4, "activation": "tanh"}]},
        {"type": "dense", "units": 2},
    ]
    trainer, w, _ = make_trainer(layers, (4,))
    assert not any(".shortcut." in k for k in trainer.get_weights())
    x, y = batch((4,), 3, 2)
    h = ref.relu(
        np.tanh(ref.dense(x.astype(np.float64), w["0.body.0.weight"], w["0.body.0.bias"])) + x
    )
    np.testing.assert_allclose(
        trainer.predict(trainer.to_device(x, y)), ref.dense(h, w["1.weight"], w["1.bias"]), **F32
    )


def test_predict_is_eval_mode_and_the_next_training_call_is_train_mode():
    layers = [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dropout", "rate": 0.5},
        {"type": "batchnorm"},
        {"type": "dense", "units": 3},
    ]
    trainer, _, info = make_trainer(layers, (5,))
    w = random_weights(info)
    trainer.set_weights(w)
    x, y = batch((5,), 8, 3)
    b = trainer.to_device(x, y)
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    h = ref.relu(ref.dense(x.astype(np.float64), w64["0.weight"], w64["0.bias"]))  # no dropout
    h = ref.batchnorm_eval(
        h, w64["2.gamma"], w64["2.beta"], w64["2.running_mean"], w64["2.running_var"], 1e-5
    )
    np.testing.assert_allclose(
        trainer.predict(b), ref.dense(h, w64["3.weight"], w64["3.bias"]), **F32
    )
    # predict leaves eval mode on (switching walks every module: not per call); the next
    # training call switches back
    train_logits, _, _ = trainer.loss_and_grads(b)  # train mode: dropout and batch statistics
    assert trainer.model.training
    assert not np.allclose(train_logits, trainer.predict(b), atol=1e-3)
    trainer.sync(trainer.train_step(b, 0.0))
    assert trainer.model.training


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)], ids=["flat", "image"])
def test_train_step_updates_batchnorm_running_stats(shape):
    layers = [
        {"type": "batchnorm", "momentum": 0.2},
        {"type": "flatten"},
        {"type": "dense", "units": 3},
    ]
    trainer, _, _ = make_trainer(layers, shape)
    x, y = batch(shape, 6, 3)
    x = x * 2.0 + 1.5
    axes = (0,) if len(shape) == 1 else (0, 2, 3)
    n = np.prod([x.shape[a] for a in axes])
    mean = x.astype(np.float64).mean(axis=axes)
    var_unbiased = x.astype(np.float64).var(axis=axes) * n / (n - 1)
    trainer.train_step(trainer.to_device(x, y), 0.1)
    got = trainer.get_weights()
    np.testing.assert_allclose(got["0.running_mean"], 0.2 * mean, **F32)
    np.testing.assert_allclose(got["0.running_var"], 0.8 + 0.2 * var_unbiased, **F32)
    assert "0.num_batches_tracked" not in got


def test_loss_and_grads_leaves_state_alone():
    layers = [{"type": "batchnorm"}, {"type": "dense", "units": 3}]
    trainer, w, _ = make_trainer(layers, (4,))
    x, y = batch((4,), 6, 3)
    trainer.loss_and_grads(trainer.to_device(x + 3.0, y))
    for name, array in trainer.get_weights().items():
        np.testing.assert_array_equal(array, w[name], err_msg=name)
    assert all(p.grad is None for p in trainer.model.parameters())
