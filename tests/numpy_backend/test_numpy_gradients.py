"""Finite-difference gradient checks (float64, relative error <= 1e-6) of every layer and the loss."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench_numpy import layers as L
from fwbench_numpy.losses import SoftmaxCrossEntropy
from numpy_helpers import check_layer_gradients, numeric_grad, rel_error

F64 = np.float64


def _image(c=3, h=6, w=6, n=4, seed=0):
    """A random activation in the internal (C, H, W, N) layout."""
    return np.random.default_rng(seed).standard_normal((c, h, w, n))


def _randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for arr in layer.params.values():
        arr[...] = rng.standard_normal(arr.shape)
    return layer


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense(use_bias):
    layer = _randomize(L.Dense("0", 5, 4, use_bias, F64))
    errors = check_layer_gradients(layer, np.random.default_rng(0).standard_normal((3, 5)))
    assert set(errors) == {"x", "weight"} | ({"bias"} if use_bias else set())


@pytest.mark.parametrize(("kernel", "stride", "pad"),
                         [(3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 3, 2), (1, 1, 0), (1, 2, 0), (4, 1, 0)])
def test_conv2d_strided_and_padded(kernel, stride, pad):
    layer = _randomize(L.Conv2D("0", 3, 4, kernel, stride, pad, True, F64))
    errors = check_layer_gradients(layer, _image(h=7, w=6))
    assert set(errors) == {"x", "weight", "bias"}


def test_conv2d_without_input_gradient_still_fills_weight_gradients():
    layer = _randomize(L.Conv2D("0", 3, 2, 3, 1, 1, False, F64))
    layer.needs_input_grad = False
    errors = check_layer_gradients(layer, _image())
    assert set(errors) == {"weight"}


@pytest.mark.parametrize("cls", [L.MaxPool, L.AvgPool])
@pytest.mark.parametrize(("size", "stride", "h"), [(2, 2, 6), (2, 2, 7), (3, 2, 7), (3, 1, 5), (2, 3, 8)])
def test_pooling(cls, size, stride, h):
    check_layer_gradients(cls("0", size, stride, F64), _image(h=h, w=h + 1))


def test_global_avg_pool_and_flatten():
    check_layer_gradients(L.GlobalAvgPool("0", F64), _image())
    check_layer_gradients(L.Flatten("0", F64), _image())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (6, 4)], ids=["image", "flat"])
def test_batchnorm(training, shape):
    channels = shape[0] if len(shape) == 4 else shape[1]
    layer = _randomize(L.BatchNorm("0", channels, 0.1, 1e-5, F64))
    layer.state["running_mean"][...] = np.linspace(-1, 1, channels)
    layer.state["running_var"][...] = np.linspace(0.5, 2, channels)
    x = np.random.default_rng(3).standard_normal(shape) * 2 + 1
    errors = check_layer_gradients(layer, x, training=training)
    assert set(errors) == {"x", "gamma", "beta"}


@pytest.mark.parametrize("fn", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "linear"])
@pytest.mark.parametrize("shape", [(3, 4, 4, 2), (5, 6)], ids=["image", "flat"])
def test_activations(fn, shape):
    x = np.random.default_rng(4).standard_normal(shape) * 3
    check_layer_gradients(L.Activation("0", fn, F64, alpha=0.2), x)


def test_sigmoid_is_stable_for_large_inputs():
    layer = L.Activation("0", "sigmoid", F64)
    with np.errstate(over="raise"):
        y = layer.forward(np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]]), training=True)
    np.testing.assert_allclose(y[0], [0.0, 1 / (1 + np.exp(30)), 0.5, 1 / (1 + np.exp(-30)), 1.0])


def test_dropout_with_a_fixed_mask():
    layer = L.Dropout("0", 0.4, np.random.default_rng(0), F64)

    def reseed():  # the same mask for every forward of the check
        layer.rng = np.random.default_rng(7)

    check_layer_gradients(layer, _image(), before_forward=reseed)


def _block(projection: bool):
    """conv-bn-relu-conv-bn body (+ 1x1 stride-2 projection), relu after the sum."""
    stride, out_c = (2, 5) if projection else (1, 3)
    body = [L.Conv2D("0.body.0", 3, out_c, 3, stride, 1, False, F64),
            L.BatchNorm("0.body.1", out_c, 0.1, 1e-5, F64),
            L.Activation("0.body.2", "relu", F64),
            L.Conv2D("0.body.3", out_c, out_c, 3, 1, 1, False, F64),  # a bias before BN has grad 0
            L.BatchNorm("0.body.4", out_c, 0.1, 1e-5, F64)]
    shortcut = L.Conv2D("0.shortcut", 3, out_c, 1, stride, 0, True, F64) if projection else None
    block = L.Residual("0", body, shortcut, L.Activation("0", "relu", F64), F64)
    for i, sub in enumerate(L.walk([block])):
        _randomize(sub, seed=10 + i)
    return block


@pytest.mark.parametrize("projection", [False, True], ids=["identity", "projection"])
def test_residual_block(projection):
    block = _block(projection)
    x = _image(h=6, w=6)
    check_layer_gradients(block, x)
    # every parameter of the block, nested ones included, against finite differences
    rng = np.random.default_rng(5)
    r = rng.standard_normal(block.forward(x, True).shape)
    block.backward(r.copy())
    analytic = {(sub.path, k): g.copy() for sub in L.walk([block]) for k, g in sub.grads.items()}
    assert len(analytic) == (8 if projection else 6)

    def scalar():
        return float(np.sum(block.forward(x, True) * r))

    for sub in L.walk([block]):
        for name, arr in sub.params.items():
            idx, num = numeric_grad(scalar, arr)
            err = rel_error(analytic[(sub.path, name)].reshape(-1)[idx], num)
            assert err <= 1e-6, f"{sub.path}.{name}: {err}"


def test_softmax_cross_entropy():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss_fn = SoftmaxCrossEntropy(F64)
    _, _, grad = loss_fn(logits, labels)
    grad = grad.copy()
    idx, num = numeric_grad(lambda: loss_fn(logits, labels, with_grad=False)[0], logits)
    assert rel_error(grad.reshape(-1)[idx], num) <= 1e-6


def test_softmax_cross_entropy_values_are_stable():
    loss_fn = SoftmaxCrossEntropy(F64)
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, correct, grad = loss_fn(logits, np.array([0, 2]))
    # sample 0: log-sum-exp = 1000 (exactly), true logit 1000 -> 0; sample 1: log 3
    assert loss == pytest.approx(np.log(3) / 2, rel=1e-12)
    assert correct == 1  # argmax of the tied row is class 0, not the label 2
    np.testing.assert_allclose(grad, [[0, 0, 0], [1 / 6, 1 / 6, -1 / 3]], atol=1e-15)
