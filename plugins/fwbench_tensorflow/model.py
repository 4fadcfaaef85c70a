"""The model: tf.Variables in TensorFlow's fast layouts and a forward pass of plain ``tf.nn`` ops.

Layouts. Activations are NHWC, weights HWIO, because NHWC is the layout every TensorFlow CPU
kernel (Eigen, oneDNN) and XLA backend handles natively; cuDNN and XLA:GPU pick their own internal
layout. Canonical arrays (NCHW images, OIHW kernels, see `fwbench.layers`) are converted once:
images in `TensorflowTrainer.to_device`, weights in `Network.load` / `Network.export` (and
gradients in `Network.to_canonical`). Nothing is transposed inside a step except:

* ``flatten`` of an ``(H, W, C)`` activation with ``C > 1`` and ``H * W > 1``: it transposes
  NHWC -> NCHW right before the reshape, so features come out C-major like the canonical layout
  and the next dense layer uses the canonical weights unchanged. (Permuting that dense layer's rows
  once at load would save the transpose, but only works when a dense layer follows; the transpose
  is on the smallest activation of a conv net, and skipped when it is the identity.)

Layers follow `fwbench.layers` exactly: symmetric convolution padding (TF's "SAME" only where it
is that same symmetric padding, see `conv_padding`), PyTorch batch-norm momentum with the
unbiased running variance, inverted dropout, residual blocks with a strided 1x1 projection
shortcut, and a final softmax folded into the loss (the network returns logits).

Under XLA two ops are swapped for forms XLA:CPU compiles well (see `BlockMaxPool` and `Dropout`):
together they made the cnn_mnist train step 5.8x faster under XLA on this project's CPU.

A forward pass is functional: `Network.forward` returns the logits and the batch-norm state
updates as ``(variable, new value)`` pairs; the train step assigns them, `loss_and_grads` does not.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from fwbench import layers as L
from fwbench.model import LayerInfo, ModelInfo, ParamInfo, check_weights, shortcut_stride

Tensor = tf.Tensor


# --------------------------------------------------------------------------------------------
# Parameters and their canonical <-> TensorFlow layouts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One canonical array held as a tf.Variable; ``kernel`` marks OIHW (canonical) <-> HWIO."""

    name: str
    variable: tf.Variable
    kernel: bool = False

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        shape = tuple(self.variable.shape)
        return (shape[3], shape[2], shape[0], shape[1]) if self.kernel else shape

    def to_tf(self, array: np.ndarray) -> np.ndarray:
        """Canonical -> TensorFlow layout (OIHW -> HWIO for kernels)."""
        return array.transpose(2, 3, 1, 0) if self.kernel else array

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """TensorFlow -> canonical layout (HWIO -> OIHW for kernels), a contiguous copy."""
        return np.array(array.transpose(3, 2, 0, 1) if self.kernel else array, copy=True, order="C")


@dataclass
class Context:
    """Per-call state: train or eval mode, the dropout seed ``(2,)`` int64, BN updates found."""

    training: bool
    seed: Tensor | None = None
    updates: list[tuple[tf.Variable, Tensor]] = field(default_factory=list)
    #: bf16/fp16 policy: dense and conv2d weights are read in this dtype (the variables stay float32).
    compute_dtype: tf.DType | None = None
    #: dropout keep masks by layer path, bool NHWC (the conformance checks' seam), else drawn
    keep: dict[str, Tensor] | None = None

    def read(self, variable: tf.Variable | None) -> Tensor | None:
        """A weight as the layer computes with it: the variable, or its cast to ``compute_dtype``."""
        if variable is None or self.compute_dtype is None:
            return variable
        return tf.cast(variable, self.compute_dtype)


def activation_fn(name: str, alpha: float = 0.01) -> Callable[[Tensor], Tensor] | None:
    """The activation over the last (channel/feature) axis; None for ``linear``.

    ``leaky_relu`` uses slope 0.01 unless an ``activation`` layer gives ``alpha`` (TF's own
    default, 0.2, is not the spec's). It is written out rather than `tf.nn.leaky_relu`, whose
    ``alpha`` is a float32 attribute: in float64 the slope 0.01 became 0.0099999998 (a relative
    error of 2e-8 that cancellation in a following dense layer blew up to 1e-5 in a gradient).
    """
    if name == "linear":
        return None
    if name == "leaky_relu":
        return lambda x: tf.where(x > 0, x, x * tf.constant(alpha, x.dtype))
    return {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "tanh": tf.tanh,
            "softmax": tf.nn.softmax}[name]


def _apply(fn: Callable[[Tensor], Tensor] | None, x: Tensor) -> Tensor:
    return x if fn is None else fn(x)


# --------------------------------------------------------------------------------------------
# Layers: NHWC in, NHWC (or (N, features)) out
# --------------------------------------------------------------------------------------------

class Dense:
    """``(N, in) @ (in, out) + b``; MatMul + BiasAdd (+ Relu) is one fused kernel in TF graphs."""

    def __init__(self, weight: tf.Variable, bias: tf.Variable | None, act):
        self.weight, self.bias, self.act = weight, bias, act

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        y = tf.matmul(x, ctx.read(self.weight))
        if self.bias is not None:
            y = tf.nn.bias_add(y, ctx.read(self.bias))
        return _apply(self.act, y)


def conv_padding(size: tuple[int, int], kernel: int, stride: int, pad: int) -> str | list:
    """TF ``padding`` for a symmetric ``pad`` on an input of spatial ``size`` ``(H, W)``.

    "VALID" for 0; "SAME" where TF's rule pads exactly ``pad`` on both sides (odd kernel with
    stride 1, for instance): without XLA the CPU kernels run it natively, while explicit padding
    cost ~15% more CPU time in a 3x3 conv train step here (XLA treats both alike); else explicit
    ``[[0, 0], [pad, pad], [pad, pad], [0, 0]]``. TF's "SAME" puts the odd pixel after, so it is
    never used where it would differ (e.g. stride 2 on an even size).
    """
    if pad == 0:
        return "VALID"
    for n in size:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        if (total // 2, total - total // 2) != (pad, pad):
            return [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    return "SAME"


class Conv2D:
    """NHWC convolution with an HWIO kernel and symmetric padding (see `conv_padding`)."""

    def __init__(self, weight: tf.Variable, bias: tf.Variable | None, stride: int,
                 padding: str | list, act):
        self.weight, self.bias, self.stride, self.act = weight, bias, stride, act
        self.padding = padding

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        y = tf.nn.conv2d(x, ctx.read(self.weight), strides=self.stride, padding=self.padding)
        if self.bias is not None:
            y = tf.nn.bias_add(y, ctx.read(self.bias))
        return _apply(self.act, y)


class Pool:
    """Max or average pooling without padding (canonical output size = TF's "VALID")."""

    def __init__(self, layer: L.MaxPool):
        self.op = tf.nn.avg_pool2d if isinstance(layer, L.AvgPool) else tf.nn.max_pool2d
        self.size, self.stride = layer.size, layer.step

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        return self.op(x, self.size, self.stride, "VALID")


class BlockMaxPool:
    """Non-overlapping max pooling (size = stride) as crop + reshape + ``reduce_max``, for XLA.

    XLA:CPU lowers `tf.nn.max_pool2d`'s gradient (select-and-scatter) to slow loops: 18 ms
    against 3 ms for this form on a (64, 28, 28, 32) batch here (without XLA the pooling op is the
    faster one, so only XLA uses this). Same values; the gradient differs only where a window has
    several equal maxima (split between them instead of routed to one), which in practice happens
    only where the layer before has zero derivative (ReLU zeros, saturated sigmoid/tanh).
    """

    def __init__(self, size: int, in_shape: tuple[int, int, int]):
        c, h, w = in_shape
        self.size, self.c, self.ho, self.wo = size, c, h // size, w // size

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        s = self.size
        x = x[:, : self.ho * s, : self.wo * s, :]
        x = tf.reshape(x, [-1, self.ho, s, self.wo, s, self.c])
        return tf.reduce_max(x, axis=[2, 4])


class GlobalAvgPool:
    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        return tf.reduce_mean(x, axis=[1, 2])


class Flatten:
    """``(N, H, W, C)`` -> ``(N, C*H*W)`` in canonical C-major order; flat inputs pass through."""

    def __init__(self, in_shape: tuple[int, ...]):
        self.features = int(np.prod(in_shape))
        # Only the order of dimensions larger than 1 matters: no transpose when C or H*W is 1.
        self.transpose = len(in_shape) == 3 and in_shape[0] > 1 and in_shape[1] * in_shape[2] > 1
        self.image = len(in_shape) == 3

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        if not self.image:
            return x
        if self.transpose:
            x = tf.transpose(x, [0, 3, 1, 2])
        return tf.reshape(x, [-1, self.features])


class BatchNorm:
    """Batch norm over the last axis (channels of NHWC, features of ``(N, F)``).

    Train: normalise with the biased batch variance; ``running = (1 - m) * running + m * batch``
    with the unbiased batch variance (PyTorch). float32 images use the fused kernel
    (``FusedBatchNormV3``, whose ``exponential_avg_factor`` is exactly this update, with the
    unbiased variance, on CPU, GPU and XLA); float64 and ``(N, F)`` inputs the same maths in
    plain ops. The raw op is called with the spec's epsilon: `tf.compat.v1.nn.fused_batch_norm`
    would raise it to 1.001e-5.
    """

    def __init__(self, layer: L.BatchNorm, gamma, beta, running_mean, running_var):
        self.momentum, self.eps = layer.momentum, layer.eps
        self.gamma, self.beta = gamma, beta
        self.running_mean, self.running_var = running_mean, running_var

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        if x.shape.rank == 4 and x.dtype in (tf.float32, tf.float16, tf.bfloat16):
            return self._fused(x, ctx)
        if x.dtype != self.gamma.dtype:  # a low-precision input: normalise in float32, round back
            return tf.cast(self(tf.cast(x, self.gamma.dtype), ctx), x.dtype)
        if ctx.training:
            axes = list(range(x.shape.rank - 1))
            mean, var = tf.nn.moments(x, axes)
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            ctx.updates += [
                (self.running_mean, (1 - self.momentum) * self.running_mean + self.momentum * mean),
                (self.running_var, (1 - self.momentum) * self.running_var
                 + self.momentum * var * n / (n - 1)),
            ]
        else:
            mean, var = self.running_mean, self.running_var
        return tf.nn.batch_normalization(x, mean, var, self.beta, self.gamma, self.eps)

    def _fused(self, x: Tensor, ctx: Context) -> Tensor:
        y, mean, var, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma, offset=self.beta, mean=self.running_mean,
            variance=self.running_var, epsilon=self.eps, data_format="NHWC",
            exponential_avg_factor=self.momentum if ctx.training else 1.0,
            is_training=ctx.training)
        if ctx.training:  # mean/var are the updated running statistics
            ctx.updates += [(self.running_mean, mean), (self.running_var, var)]
        return y


class Dropout:
    """Inverted dropout from a stateless RNG: seed = fold_in(step seed, this layer's index).

    The Philox generator is named explicitly: under XLA:CPU the default ("auto_select") picks
    ThreeFry, which took 70 ms against 2 ms for Philox to mask a (64, 3136) batch here.
    XLA and TF kernels draw different masks from the same seed. ``ctx.keep`` (the conformance
    checks' seam, `fwbench_tensorflow.trainer.TensorFlowTrainer.use_dropout_masks`) replaces the
    drawn mask by a given one (bool, NHWC), found by this layer's ``path``.
    """

    def __init__(self, rate: float, index: int, path: str = ""):
        self.rate, self.index, self.path = rate, index, path

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        if not ctx.training or self.rate == 0.0:
            return x
        if ctx.keep is not None:
            return tf.where(ctx.keep[self.path], x / tf.constant(1.0 - self.rate, x.dtype), tf.zeros_like(x))
        if ctx.seed is None:
            raise ValueError("a training-mode forward with dropout needs a seed tensor")
        seed = tf.random.experimental.stateless_fold_in(ctx.seed, self.index)
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed=seed, rng_alg="philox")


class Activation:
    def __init__(self, act):
        self.act = act

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        return _apply(self.act, x)


class Residual:
    """``act(body(x) + shortcut(x))``; the shortcut is None (identity) or a strided 1x1 conv."""

    def __init__(self, body: list, shortcut: Conv2D | None, act):
        self.body, self.shortcut, self.act = body, shortcut, act

    def __call__(self, x: Tensor, ctx: Context) -> Tensor:
        y = x
        for layer in self.body:
            y = layer(y, ctx)
        skip = x if self.shortcut is None else self.shortcut(x, ctx)
        return _apply(self.act, y + skip)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

class Network:
    """The layers of a `ModelInfo` with their variables, created on the current device.

    Args:
        info: the suite's analysis of the model spec (shapes, canonical parameter names).
        weights: canonical initial weights by name (see `fwbench.model.initial_weights`).
        dtype: ``tf.float32`` or ``tf.float64``.
        xla: the forward pass will be compiled by XLA: use the ops that are fast there
            (`BlockMaxPool`).
    """

    def __init__(self, info: ModelInfo, weights: dict[str, np.ndarray], dtype: tf.DType,
                 xla: bool = False):
        self.info, self.dtype, self.xla = info, dtype, xla
        self.params: dict[str, Param] = {}
        self._dropouts = 0
        last = len(info.layers) - 1
        self.layers = [self._build(li, fold_softmax=i == last) for i, li in enumerate(info.layers)]
        self.params = {p.name: self.params[p.name] for p in info.params}  # the suite's order
        self.trainable_variables: list[tf.Variable] = [
            p.variable for p in self.params.values() if p.variable.trainable]
        self.trainable_names = [p.name for p in self.params.values() if p.variable.trainable]
        self.load(weights)

    # -- building -------------------------------------------------------------------------------
    def _variable(self, param: ParamInfo, kernel: bool = False) -> tf.Variable:
        shape = param.shape
        if kernel:
            o, i, kh, kw = shape
            shape = (kh, kw, i, o)
        var = tf.Variable(tf.zeros(shape, self.dtype), trainable=param.trainable, name=param.name)
        self.params[param.name] = Param(param.name, var, kernel)
        return var

    def _weight_and_bias(self, li: LayerInfo, kernel: bool):
        by_role = {p.role: p for p in li.params}
        weight = self._variable(by_role["weight"], kernel)
        bias = self._variable(by_role["bias"]) if "bias" in by_role else None
        return weight, bias

    def _build(self, li: LayerInfo, fold_softmax: bool = False):
        layer = li.layer
        act_name = getattr(layer, "activation", None)
        if fold_softmax and act_name == "softmax":
            act_name = "linear"  # the loss applies the softmax
        act = activation_fn(act_name) if act_name else None
        if isinstance(layer, L.Dense):
            return Dense(*self._weight_and_bias(li, kernel=False), act)
        if isinstance(layer, L.Conv2D):
            padding = conv_padding(li.in_shape[1:], layer.kernel, layer.stride, layer.pad)
            return Conv2D(*self._weight_and_bias(li, kernel=True), layer.stride, padding, act)
        if type(layer) is L.MaxPool and self.xla and layer.size == layer.step:
            return BlockMaxPool(layer.size, li.in_shape)
        if isinstance(layer, L.MaxPool):  # AvgPool too
            return Pool(layer)
        if isinstance(layer, L.GlobalAvgPool):
            return GlobalAvgPool()
        if isinstance(layer, L.Flatten):
            return Flatten(li.in_shape)
        if isinstance(layer, L.BatchNorm):
            variables = [self._variable(p) for p in li.params]  # gamma, beta, mean, var
            return BatchNorm(layer, *variables)
        if isinstance(layer, L.Dropout):
            self._dropouts += 1
            return Dropout(layer.rate, self._dropouts, li.path)
        if isinstance(layer, L.Activation):
            fn = "linear" if fold_softmax and layer.fn == "softmax" else layer.fn
            return Activation(activation_fn(fn, layer.alpha))
        if isinstance(layer, L.Residual):
            body = [self._build(child) for child in li.children]
            shortcut = None
            if li.params:
                weight, bias = self._weight_and_bias(li, kernel=True)
                shortcut = Conv2D(weight, bias, shortcut_stride(li), "VALID", None)
            return Residual(body, shortcut, act)
        raise NotImplementedError(f"the tensorflow backend has no layer {layer.kind!r}; "
                                  "add it to fwbench_tensorflow/model.py")

    # -- running --------------------------------------------------------------------------------
    def forward(self, x: Tensor, *, training: bool, seed: Tensor | None = None,
                compute_dtype: tf.DType | None = None,
                keep: dict[str, Tensor] | None = None) -> tuple[Tensor, list[tuple[tf.Variable, Tensor]]]:
        """Logits ``(N, classes)`` of NHWC ``x`` and the BN state updates (train mode only).

        ``compute_dtype`` (bf16/fp16 policy): ``x`` and the dense/conv2d weights are cast to it;
        the logits come back in float32. ``keep``: dropout masks by layer path (see `Dropout`)."""
        ctx = Context(training, seed, compute_dtype=compute_dtype, keep=keep)
        if compute_dtype is not None:
            x = tf.cast(x, compute_dtype)
        for layer in self.layers:
            x = layer(x, ctx)
        return (x if compute_dtype is None else tf.cast(x, self.dtype)), ctx.updates

    # -- canonical weights ----------------------------------------------------------------------
    def load(self, weights: dict[str, np.ndarray]) -> None:
        """Assign canonical arrays (every parameter and state array, exactly these names)."""
        check_weights(self.info, weights)  # the core's one check (WeightsError)
        for name, param in self.params.items():
            array = np.asarray(weights[name])
            param.variable.assign(param.to_tf(array).astype(self.dtype.as_numpy_dtype))

    def export(self) -> dict[str, np.ndarray]:
        """Every parameter and state array by canonical name, canonical layout, NumPy copies."""
        return {name: p.to_canonical(p.variable.numpy()) for name, p in self.params.items()}

    def to_canonical(self, name: str, array: np.ndarray) -> np.ndarray:
        """A TensorFlow-layout array of parameter ``name`` (e.g. its gradient) in canonical layout."""
        return self.params[name].to_canonical(array)
