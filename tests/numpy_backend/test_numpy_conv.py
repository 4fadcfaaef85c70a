"""The fast im2col convolution against the naive loop oracle, and im2col/col2im as adjoints."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from fwbench_numpy.conv import col2im, conv2d_naive, conv2d_naive_backward, conv_output_size, im2col
from fwbench_numpy.layers import Conv2D
from numpy_helpers import internal_to_nchw, nchw_to_internal

GRID = [
    (shape, kernel, stride, pad)
    for shape, kernel, stride, pad in itertools.product(
        [(2, 3, 7, 7), (3, 2, 8, 5)], [1, 2, 3, 5], [1, 2, 3], [0, 1, 2])
    if kernel <= min(shape[2:]) + 2 * pad
]


def _conv_layer(c, f, k, s, p, w, b, dtype):
    layer = Conv2D("0", c, f, k, s, p, True, dtype)
    layer.params["weight"][...] = w
    layer.params["bias"][...] = b
    return layer


@pytest.mark.parametrize(("shape", "kernel", "stride", "pad"), GRID)
def test_fast_conv_matches_naive_oracle(shape, kernel, stride, pad):
    rng = np.random.default_rng(hash((shape, kernel, stride, pad)) % 2**32)
    n, c, h, w = shape
    f = 4
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((f, c, kernel, kernel))
    bias = rng.standard_normal(f)
    layer = _conv_layer(c, f, kernel, stride, pad, weight, bias, np.float64)

    y = internal_to_nchw(layer.forward(nchw_to_internal(x), training=True))
    expected = conv2d_naive(x, weight, bias, stride, pad)
    assert y.shape == (n, f, conv_output_size(h, kernel, stride, pad),
                       conv_output_size(w, kernel, stride, pad))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    dy = rng.standard_normal(y.shape)
    dx = internal_to_nchw(layer.backward(nchw_to_internal(dy)))
    dx_ref, dw_ref, db_ref = conv2d_naive_backward(x, weight, dy, stride, pad)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], db_ref, rtol=1e-12, atol=1e-12)


def test_fast_conv_float32_close_to_oracle_and_buffers_reused():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    layer = _conv_layer(3, 5, 3, 2, 1, weight, bias, np.float32)
    first = layer.forward(nchw_to_internal(x), training=True)
    assert first.dtype == np.float32
    np.testing.assert_allclose(internal_to_nchw(first), conv2d_naive(x, weight, bias, 2, 1),
                               rtol=1e-4, atol=1e-5)
    cols_id = id(layer.ws.get("cols", layer._cols.shape))
    second = layer.forward(nchw_to_internal(x), training=True)
    assert second is first  # the output buffer is reused between steps
    assert id(layer.ws.get("cols", layer._cols.shape)) == cols_id


def test_backward_twice_without_forward_is_an_error():
    layer = _conv_layer(1, 1, 3, 1, 1, np.ones((1, 1, 3, 3)), np.zeros(1), np.float64)
    y = layer.forward(np.ones((1, 4, 4, 2)), training=True)
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="forward first"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize(("kernel", "stride", "pad"), [(3, 1, 1), (3, 2, 1), (2, 2, 0), (4, 3, 2), (1, 2, 0)])
def test_col2im_is_the_adjoint_of_im2col(kernel, stride, pad):
    """<im2col(x), c> == <x, col2im(c)> for every x, c: col2im sums exactly the right windows."""
    rng = np.random.default_rng(2)
    c, h, w, n = 2, 7, 6, 3
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    x = rng.standard_normal((c, h, w, n))
    cols_in = rng.standard_normal((c * kernel * kernel, ho * wo * n))
    buf = np.empty_like(cols_in)
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad, n))
    cols = im2col(x, kernel, stride, pad, buf, padded)
    folded = col2im(cols_in, x.shape, kernel, stride, pad, np.full(x.shape, np.nan))
    assert np.isfinite(folded).all()  # every pixel written, even those no window reaches
    np.testing.assert_allclose(np.vdot(cols, cols_in), np.vdot(x, folded), rtol=1e-12)
