"""Layers with hand-written forward and backward passes (NumPy only, no autograd).

Conventions shared by every layer here:

* Image activations are ``(C, H, W, N)`` (see `fwbench_numpy.conv` for why); flat activations are
  ``(N, features)``. Parameters keep the canonical layouts of `fwbench.layers`.
* ``forward(x, training)`` keeps what ``backward`` needs; ``backward(dy)`` *overwrites*
  ``self.grads`` (it never accumulates) and returns ``dx``, or None when ``needs_input_grad`` is
  False (the first layers of a model, whose input gradient nobody uses).
* A layer never writes into an array it was given (residual blocks hand the same array to two
  consumers). Outputs and gradients live in the layer's `Workspace` and are overwritten by the
  next call: a caller that keeps a result across steps must copy it.
* ``backward`` is called at most once per ``forward`` (`Conv2D` reuses its column buffer for the
  input gradient).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .conv import col2im, conv_output_size, im2col
from .workspace import Workspace


class Layer:
    """Base class: parameters, their gradients and state by local name (``"weight"``...).

    Args:
        path: the canonical path of the spec layer (``"3"``, ``"4.body.0"``); parameter names are
            ``f"{path}.{local_name}"``.
        dtype: float32 or float64.
    """

    def __init__(self, path: str, dtype: np.dtype | str):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.needs_input_grad = True
        self.ws = Workspace(self.dtype)
        #: 0 as a 0-d array of the layer's dtype: a Python 0 is converted on every ufunc call (~0.3 µs)
        self.zero = np.zeros((), self.dtype)

    def _add_param(self, name: str, shape: tuple[int, ...]) -> None:
        self.params[name] = np.zeros(shape, self.dtype)
        self.grads[name] = np.zeros(shape, self.dtype)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def children(self) -> list[Layer]:
        """Nested layers (residual blocks); empty for plain layers."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


def walk(layers: list[Layer]) -> Iterator[Layer]:
    """Every layer, nested ones included, in forward order."""
    for layer in layers:
        yield layer
        yield from walk(layer.children())


# ------------------------------------------------------------------------------------------------
# Parametric layers
# ------------------------------------------------------------------------------------------------

class Dense(Layer):
    """``y = x @ W + b``. x ``(N, in)``, W ``(in, out)``, b ``(out,)``, y ``(N, out)``.

    Backward: ``dW = x.T @ dy``, ``db = sum_n dy``, ``dx = dy @ W.T``.
    """

    def __init__(self, path: str, n_in: int, units: int, use_bias: bool, dtype):
        super().__init__(path, dtype)
        self.units, self.use_bias = units, use_bias
        self._add_param("weight", (n_in, units))
        if use_bias:
            self._add_param("bias", (units,))
        self._x: np.ndarray | None = None

    def forward(self, x, training):
        self._x = x
        y = self.ws.get("y", (x.shape[0], self.units))
        np.matmul(x, self.params["weight"], out=y)
        if self.use_bias:
            np.add(y, self.params["bias"], out=y)
        return y

    def backward(self, dy):
        x = self._x
        np.matmul(x.T, dy, out=self.grads["weight"])
        if self.use_bias:
            np.sum(dy, axis=0, out=self.grads["bias"])
        if not self.needs_input_grad:
            return None
        dx = self.ws.get("dx", x.shape)
        np.matmul(dy, self.params["weight"].T, out=dx)
        return dx


class Conv2D(Layer):
    """2-D convolution as one GEMM on the im2col matrix.

    x ``(C, H, W, N)``, weight ``(F, C, k, k)`` (OIHW), y ``(F, Ho, Wo, N)``.

    Forward: ``cols = im2col(x)`` ``(C*k*k, Ho*Wo*N)``; ``y = W2 @ cols + b`` with
    ``W2 = weight.reshape(F, C*k*k)``. Backward: ``dW2 = dy2 @ cols.T`` (computed as its
    transpose ``cols @ dy2.T``), ``db = sum dy2`` over columns, ``dcols = W2.T @ dy2`` (written
    into the column buffer, no longer needed), ``dx = col2im(dcols)``. A 1x1, stride-1, unpadded
    convolution uses ``x`` itself as the column matrix.
    """

    def __init__(self, path: str, in_channels: int, filters: int, kernel: int, stride: int,
                 pad: int, use_bias: bool, dtype):
        super().__init__(path, dtype)
        self.filters, self.kernel, self.stride, self.pad = filters, kernel, stride, pad
        self.use_bias = use_bias
        self._add_param("weight", (filters, in_channels, kernel, kernel))
        if use_bias:
            self._add_param("bias", (filters,))
        self._pointwise = kernel == 1 and stride == 1 and pad == 0
        self._cols: np.ndarray | None = None
        self._x_shape: tuple[int, ...] = ()

    def forward(self, x, training):
        c, h, w, n = x.shape
        k, s, p = self.kernel, self.stride, self.pad
        ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
        if self._pointwise:
            cols = x.reshape(c, h * w * n)
        else:
            buf = self.ws.get("cols", (c * k * k, ho * wo * n))
            padded = self.ws.get("padded", (c, h + 2 * p, w + 2 * p, n), zero=True) if p else None
            cols = im2col(x, k, s, p, buf, padded)
        self._cols, self._x_shape = cols, x.shape
        y = self.ws.get("y", (self.filters, ho, wo, n))
        y2 = y.reshape(self.filters, -1)
        np.matmul(self.params["weight"].reshape(self.filters, -1), cols, out=y2)
        if self.use_bias:
            np.add(y2, self.params["bias"][:, None], out=y2)
        return y

    def backward(self, dy):
        cols = self._cols
        if cols is None:
            raise RuntimeError(f"{self}: backward needs a forward first (and runs once per forward)")
        self._cols = None
        f = self.filters
        dy2 = dy.reshape(f, -1)
        w2 = self.params["weight"].reshape(f, -1)
        # dW2^T = cols @ dy2^T: (C*k*k, M) @ (M, F); the transposed output is a free view.
        np.matmul(cols, dy2.T, out=self.grads["weight"].reshape(f, -1).T)
        if self.use_bias:
            np.sum(dy2, axis=1, out=self.grads["bias"])
        if not self.needs_input_grad:
            return None
        dx = self.ws.get("dx", self._x_shape)
        if self._pointwise:
            np.matmul(w2.T, dy2, out=dx.reshape(dx.shape[0], -1))
            return dx
        np.matmul(w2.T, dy2, out=cols)  # dcols overwrites the column buffer
        return col2im(cols, self._x_shape, self.kernel, self.stride, self.pad, dx)


class BatchNorm(Layer):
    """Batch normalisation over every axis but the channel one.

    Channels are axis 0 of an image ``(C, H, W, N)`` and axis 1 of a flat ``(N, F)`` batch; ``m``
    is the number of values per channel. Training::

        mu = mean(x); var = mean((x - mu)^2)                      (biased, used to normalise)
        xhat = (x - mu) / sqrt(var + eps); y = gamma * xhat + beta
        running_mean = (1 - momentum) * running_mean + momentum * mu
        running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)   (unbiased)

    Eval: the same with the running statistics. Backward (training)::

        dbeta = sum(dy); dgamma = sum(dy * xhat)
        dx = gamma / sqrt(var + eps) * (dy - dbeta / m - xhat * dgamma / m)
    """

    def __init__(self, path: str, channels: int, momentum: float, eps: float, dtype):
        super().__init__(path, dtype)
        self.momentum, self.eps = momentum, eps
        self._add_param("gamma", (channels,))
        self._add_param("beta", (channels,))
        self.params["gamma"].fill(1.0)
        self.state["running_mean"] = np.zeros(channels, self.dtype)
        self.state["running_var"] = np.ones(channels, self.dtype)
        self._invstd: np.ndarray | None = None
        self._xhat: np.ndarray | None = None
        self._training = False
        #: Conformance's rounding probe: batch statistics summed one value after another (as a
        #: framework's reduction may) instead of NumPy's pairwise sums.
        self.sequential_sums = False

    def _mean(self, a: np.ndarray, axis: int) -> np.ndarray:
        """``a.mean(axis, keepdims=True)``, summed sequentially under the rounding probe."""
        if not self.sequential_sums:
            return a.mean(axis=axis, keepdims=True)
        total = np.add.accumulate(a, axis=axis, dtype=a.dtype).take([-1], axis=axis)
        return total / a.dtype.type(a.shape[axis])

    @staticmethod
    def _channels_first(x: np.ndarray) -> tuple[np.ndarray, int, tuple[int, ...]]:
        """A 2-D view with channels on rows or columns, the reduction axis, the stats' shape."""
        if x.ndim == 4:  # (C, H, W, N) -> (C, H*W*N): reduce along rows' contents
            return x.reshape(x.shape[0], -1), 1, (x.shape[0], 1)
        return x, 0, (1, x.shape[1])  # (N, F): reduce over the batch axis

    def forward(self, x, training):
        x2, axis, bshape = self._channels_first(x)
        m = x2.shape[axis]
        gamma = self.params["gamma"].reshape(bshape)
        beta = self.params["beta"].reshape(bshape)
        xhat = self.ws.get("xhat", x2.shape)
        y = self.ws.get("y", x.shape)
        y2 = y.reshape(x2.shape)
        if training:
            mu = self._mean(x2, axis)
            np.subtract(x2, mu, out=xhat)
            np.multiply(xhat, xhat, out=y2)  # y2 as scratch for the squares
            var = self._mean(y2, axis)
            rm, rv = self.state["running_mean"], self.state["running_var"]
            mom = self.momentum
            rm *= 1 - mom
            rm += mom * mu.reshape(-1)
            unbiased = var.reshape(-1) * (m / (m - 1) if m > 1 else 1.0)
            rv *= 1 - mom
            rv += mom * unbiased
        else:
            np.subtract(x2, self.state["running_mean"].reshape(bshape), out=xhat)
            var = self.state["running_var"].reshape(bshape)
        invstd = 1.0 / np.sqrt(var + self.eps)
        np.multiply(xhat, invstd, out=xhat)
        np.multiply(xhat, gamma, out=y2)
        np.add(y2, beta, out=y2)
        self._invstd, self._xhat, self._training = invstd, xhat, training
        return y

    def backward(self, dy):
        dy2, axis, bshape = self._channels_first(dy)
        m = dy2.shape[axis]
        xhat, invstd = self._xhat, self._invstd
        dx = self.ws.get("dx", dy.shape)
        dx2 = dx.reshape(dy2.shape)
        np.multiply(dy2, xhat, out=dx2)  # dx2 as scratch
        dgamma = dx2.sum(axis=axis)
        dbeta = dy2.sum(axis=axis)
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        if not self.needs_input_grad:
            return None
        scale = self.params["gamma"].reshape(bshape) * invstd
        if self._training:
            np.multiply(xhat, (dgamma / m).reshape(bshape), out=dx2)
            np.subtract(dy2, dx2, out=dx2)
            np.subtract(dx2, (dbeta / m).reshape(bshape), out=dx2)
            np.multiply(dx2, scale, out=dx2)
        else:  # running statistics are constants
            np.multiply(dy2, scale, out=dx2)
        return dx


# ------------------------------------------------------------------------------------------------
# Parameter-free layers
# ------------------------------------------------------------------------------------------------

class Dropout(Layer):
    """Inverted dropout: training ``y = x * mask / (1 - rate)``, mask ~ Bernoulli(1 - rate);
    identity at eval. ``rng`` (a `numpy.random.Generator`) draws the masks and may be replaced;
    ``keep`` (bool, canonical layout ``(N, *sample)``), when set, is the mask instead (the
    conformance checks' seam, `fwbench_numpy.trainer.NumpyTrainer.use_dropout_masks`)."""

    def __init__(self, path: str, rate: float, rng: np.random.Generator, dtype):
        super().__init__(path, dtype)
        self.rate, self.rng = rate, rng
        self.keep: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def forward(self, x, training):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        mask = self.ws.get("mask", x.shape)
        keep = self.ws.get("keep", x.shape, dtype=bool)
        if self.keep is not None:  # images here are (C, H, W, N)
            keep[...] = self.keep.transpose(1, 2, 3, 0) if x.ndim == 4 else self.keep
        else:
            self.rng.random(out=mask, dtype=self.dtype)
            np.greater_equal(mask, self.rate, out=keep)
        np.multiply(keep, 1.0 / (1.0 - self.rate), out=mask)  # the scaled mask
        y = self.ws.get("y", x.shape)
        np.multiply(x, mask, out=y)
        self._mask = mask
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        if self._mask is None:
            return dy
        dx = self.ws.get("dx", dy.shape)
        np.multiply(dy, self._mask, out=dx)
        return dx


class Activation(Layer):
    """Element-wise activations, and softmax over the feature/channel axis.

    relu ``max(x, 0)``; leaky_relu ``x if x > 0 else alpha*x``; sigmoid ``1/(1+e^-x)``;
    tanh; softmax ``e^(x - max) / sum``; linear is the identity. Backward uses the saved output
    (relu, sigmoid, tanh, softmax) or input (leaky_relu).
    """

    FUNCTIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "linear")

    def __init__(self, path: str, fn: str, dtype, alpha: float = 0.01):
        super().__init__(path, dtype)
        if fn not in self.FUNCTIONS:
            raise ValueError(f"unknown activation {fn!r}; expected one of: {', '.join(self.FUNCTIONS)}")
        self.fn, self.alpha = fn, alpha
        self._saved: np.ndarray | None = None
        #: Conformance's kink watch: when not None, relu and leaky_relu keep here the smallest
        #: non-zero |input| they have seen (`NumpyTrainer.kink_margin`).
        self.kink_margin: float | None = None

    def _softmax_axis(self, x: np.ndarray) -> int:
        return 0 if x.ndim == 4 else 1  # channels of (C, H, W, N), features of (N, F)

    def forward(self, x, training):
        if self.fn == "linear":
            return x
        if self.kink_margin is not None and self.fn in ("relu", "leaky_relu"):
            off = np.abs(x[x != 0])
            self.kink_margin = min(self.kink_margin, float(off.min(initial=np.inf)))
        y = self.ws.get("y", x.shape)
        fn = self.fn
        if fn == "relu":
            np.maximum(x, self.zero, out=y)
        elif fn == "leaky_relu":
            np.multiply(x, self.alpha, out=y)
            if self.alpha <= 1:  # x > alpha*x exactly where x > 0
                np.maximum(x, y, out=y)
            else:
                np.minimum(x, y, out=y)
            self._saved = x
            return y
        elif fn == "sigmoid":  # 1 / (1 + e^-x); e^-x = inf for x < -88 (float32) gives exactly 0
            with np.errstate(over="ignore"):
                np.negative(x, out=y)
                np.exp(y, out=y)
            np.add(y, 1, out=y)
            np.divide(1, y, out=y)
        elif fn == "tanh":
            np.tanh(x, out=y)
        else:  # softmax
            axis = self._softmax_axis(x)
            np.subtract(x, x.max(axis=axis, keepdims=True), out=y)
            np.exp(y, out=y)
            np.divide(y, y.sum(axis=axis, keepdims=True), out=y)
        self._saved = y
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        if self.fn == "linear":
            return dy
        saved, fn = self._saved, self.fn
        dx = self.ws.get("dx", dy.shape)
        if fn == "relu":
            mask = self.ws.get("mask", dy.shape, dtype=bool)
            np.greater(saved, 0, out=mask)
            np.multiply(dy, mask, out=dx)
        elif fn == "leaky_relu":  # slope alpha + (1 - alpha) [x > 0]
            mask = self.ws.get("mask", dy.shape, dtype=bool)
            np.greater(saved, 0, out=mask)
            np.multiply(mask, 1 - self.alpha, out=dx)
            np.add(dx, self.alpha, out=dx)
            np.multiply(dx, dy, out=dx)
        elif fn == "sigmoid":  # y (1 - y)
            np.subtract(1, saved, out=dx)
            np.multiply(dx, saved, out=dx)
            np.multiply(dx, dy, out=dx)
        elif fn == "tanh":  # 1 - y^2
            np.multiply(saved, saved, out=dx)
            np.subtract(1, dx, out=dx)
            np.multiply(dx, dy, out=dx)
        else:  # softmax: y * (dy - sum(dy * y))
            axis = self._softmax_axis(dy)
            np.multiply(dy, saved, out=dx)
            dot = dx.sum(axis=axis, keepdims=True)
            np.subtract(dy, dot, out=dx)
            np.multiply(dx, saved, out=dx)
        return dx


class _Pool(Layer):
    """Shared window bookkeeping of max and average pooling (no padding, floor output size)."""

    def __init__(self, path: str, size: int, stride: int, dtype):
        super().__init__(path, dtype)
        self.size, self.stride = size, stride
        self._x_shape: tuple[int, ...] = ()

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        return conv_output_size(h, self.size, self.stride, 0), conv_output_size(w, self.size, self.stride, 0)

    def _reduce_windows(self, x: np.ndarray, combine) -> np.ndarray:
        """``combine`` (a ufunc: maximum, add) over the ``size^2`` window offsets, into ``y``."""
        c, h, w, n = x.shape
        ho, wo = self._out_hw(h, w)
        y = self.ws.get("y", (c, ho, wo, n))
        for o, window in self._windows(x, ho, wo):
            if o == 0:
                np.copyto(y, window)
            else:
                combine(y, window, out=y)
        return y

    def _windows(self, a: np.ndarray, ho: int, wo: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(offset index, strided slice (C, Ho, Wo, N))`` for every kernel offset of ``a``."""
        s = self.stride
        for i in range(self.size):
            for j in range(self.size):
                yield i * self.size + j, a[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]

    def _covers_disjointly(self, h: int, w: int, ho: int, wo: int) -> bool:
        """Windows neither overlap nor leave pixels out (then backward can assign, not add)."""
        return self.stride == self.size and ho * self.size == h and wo * self.size == w


class MaxPool(_Pool):
    """Max over ``size x size`` windows. x ``(C, H, W, N)`` -> ``(C, Ho, Wo, N)``.

    Forward: ``y = max`` over the ``size^2`` strided slices of ``x`` (one ``np.maximum`` each).
    Backward: each window's gradient goes to the first position (row-major) that equals the
    maximum, as in PyTorch; ties (frequent after a ReLU) are resolved with a "taken" mask.
    """

    def forward(self, x, training):
        y = self._reduce_windows(x, np.maximum)
        self._x, self._y = x, y
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        x, y = self._x, self._y
        _, h, w, _ = x.shape
        ho, wo = dy.shape[1], dy.shape[2]
        hit = self.ws.get("hit", dy.shape, dtype=bool)
        taken = self.ws.get("taken", dy.shape, dtype=bool)
        dx = self.ws.get("dx", x.shape)
        disjoint = self._covers_disjointly(h, w, ho, wo)
        if not disjoint:
            dx.fill(0)
            part = self.ws.get("part", dy.shape)
        last = self.size ** 2 - 1
        for (o, xw), (_, dxw) in zip(self._windows(x, ho, wo), self._windows(dx, ho, wo)):
            np.equal(xw, y, out=hit)
            if o == 0:
                np.copyto(taken, hit)
            else:
                np.greater(hit, taken, out=hit)  # hit and not taken by an earlier offset
                if o != last:
                    np.logical_or(taken, hit, out=taken)
            if disjoint:
                np.multiply(dy, hit, out=dxw)
            else:
                np.multiply(dy, hit, out=part)
                np.add(dxw, part, out=dxw)
        return dx


class AvgPool(_Pool):
    """Mean over ``size x size`` windows (divisor ``size^2``). x ``(C, H, W, N)``.

    Backward adds ``dy / size^2`` to every pixel of each window.
    """

    def forward(self, x, training):
        y = self._reduce_windows(x, np.add)
        np.multiply(y, 1.0 / self.size ** 2, out=y)
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        _, h, w, _ = self._x_shape
        ho, wo = dy.shape[1], dy.shape[2]
        share = self.ws.get("share", dy.shape)
        np.multiply(dy, 1.0 / self.size ** 2, out=share)
        dx = self.ws.get("dx", self._x_shape)
        disjoint = self._covers_disjointly(h, w, ho, wo)
        if not disjoint:
            dx.fill(0)
        for _, window in self._windows(dx, ho, wo):
            if disjoint:
                np.copyto(window, share)
            else:
                np.add(window, share, out=window)
        return dx


class GlobalAvgPool(Layer):
    """Mean over height and width: ``(C, H, W, N)`` -> flat ``(N, C)``."""

    def forward(self, x, training):
        c, h, w, n = x.shape
        self._x_shape = x.shape
        y = self.ws.get("y", (n, c))
        np.copyto(y, x.reshape(c, h * w, n).mean(axis=1).T)
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        _, h, w, _ = self._x_shape
        dx = self.ws.get("dx", self._x_shape)
        np.multiply(dy.T[:, None, None, :], 1.0 / (h * w), out=dx)
        return dx


class Flatten(Layer):
    """``(C, H, W, N)`` -> ``(N, C*H*W)``, C-major per sample (the canonical flatten order).

    A flat input passes through unchanged (a model that starts with flatten receives its batch
    already flat from `NumpyModel.to_internal`, so the leading flatten costs nothing).
    """

    def forward(self, x, training):
        self._x_shape = x.shape
        if x.ndim == 2:
            return x
        n = x.shape[3]
        y = self.ws.get("y", (n, x.size // n))
        np.copyto(y.reshape(n, *x.shape[:3]), x.transpose(3, 0, 1, 2))
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        if len(self._x_shape) == 2:
            return dy
        c, h, w, n = self._x_shape
        dx = self.ws.get("dx", self._x_shape)
        np.copyto(dx, dy.reshape(n, c, h, w).transpose(1, 2, 3, 0))
        return dx


class Residual(Layer):
    """``out = activation(body(x) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 `Conv2D` with bias and stride ``ceil(H_in / H_out)`` (its
    parameters are ``<path>.shortcut.weight/bias``). Backward: ``dz = activation'(dy)``;
    ``dx = body.backward(dz) + shortcut.backward(dz)``.
    """

    def __init__(self, path: str, body: list[Layer], shortcut: Conv2D | None,
                 activation: Activation | None, dtype):
        super().__init__(path, dtype)
        self.body, self.shortcut, self.activation = body, shortcut, activation

    def children(self) -> list[Layer]:
        extra = [x for x in (self.shortcut, self.activation) if x is not None]
        return [*self.body, *extra]

    def forward(self, x, training):
        h = x
        for layer in self.body:
            h = layer.forward(h, training)
        s = self.shortcut.forward(x, training) if self.shortcut is not None else x
        z = self.ws.get("z", h.shape)
        np.add(h, s, out=z)
        return self.activation.forward(z, training) if self.activation is not None else z

    def backward(self, dy):
        dz = self.activation.backward(dy) if self.activation is not None else dy
        dh = dz
        for layer in reversed(self.body):
            dh = layer.backward(dh)
            if dh is None:
                break
        ds = self.shortcut.backward(dz) if self.shortcut is not None else dz
        if not self.needs_input_grad:
            return None
        dx = self.ws.get("dx", ds.shape)
        np.add(dh, ds, out=dx)
        return dx
