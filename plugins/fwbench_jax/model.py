"""The model as pure functions over plain pytrees: ``{canonical name: array}`` dictionaries.

``params`` holds the trainable arrays, ``state`` the BatchNorm running statistics and the
parameters of frozen layers (``model.frozen``: partitioned out of ``params``, so they get no
gradient, no update and no optimizer state); both are keyed by the suite's canonical names (``"1.weight"``, ``"3.body.0.weight"``, ``"3.shortcut.bias"``...).
Convolution kernels and image batches follow the `Layout` chosen at build time; everything else
is in the canonical layout. `Model.apply` is traced once by ``jax.jit``: the Python walk over the
layer specs below runs at trace time only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from fwbench.layers import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Residual,
)
from fwbench.model import LayerInfo, ModelInfo, check_weights, ends_in_softmax, shortcut_stride
from jax import lax

from .layout import Layout

if TYPE_CHECKING:
    from collections.abc import Sequence

Params = dict[str, jax.Array]

#: Matmuls and convolutions in full float32 (no TF32 / bf16 passes on GPU).
PRECISION = lax.Precision.HIGHEST


def split_weights(info: ModelInfo, weights: dict[str, np.ndarray], layout: Layout,
                  dtype: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Canonical weights -> ``(params, state)`` NumPy dicts in ``layout`` and ``dtype``.

    ``params`` are the trainable arrays; ``state`` the BatchNorm statistics and frozen parameters.

    Raises:
        fwbench.errors.WeightsError: a name is missing or unknown, or a shape is wrong.
    """
    check_weights(info, weights)  # the core's one check
    params, state = {}, {}
    for p in info.params:
        array = np.asarray(weights[p.name])
        target = params if p.trainable else state
        target[p.name] = np.ascontiguousarray(layout.param_in(array.astype(dtype)))
    return params, state


def _activate(fn: str, x: jax.Array, axis: int, alpha: float = 0.01) -> jax.Array:
    if fn == "relu":
        return jax.nn.relu(x)
    if fn == "leaky_relu":
        # PyTorch's convention: slope alpha at exactly 0 (jax.nn.leaky_relu uses x >= 0, slope 1),
        # which matters: a zero bias on a ReLU-zeroed input puts values exactly at the kink
        return jnp.where(x > 0, x, x * jnp.asarray(alpha, x.dtype))
    if fn == "sigmoid":
        return jax.nn.sigmoid(x)
    if fn == "tanh":
        return jnp.tanh(x)
    if fn == "softmax":
        return jax.nn.softmax(x, axis=axis)
    return x  # linear



@dataclass(frozen=True)
class Model:
    """Forward pass of an analysed model spec (`fwbench.model.analyze`) in one layout.

    The final softmax (a last ``activation = "softmax"`` or softmax layer) is left out: `apply`
    returns logits and the loss applies a fused, stable softmax cross-entropy.
    """

    info: ModelInfo
    layout: Layout
    #: Matmul/convolution precision: HIGHEST (full float32) unless the task's policy is tf32.
    matmul_precision: Any = PRECISION
    _dropout_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        dropouts = [li.path for li in self.info.walk() if isinstance(li.layer, Dropout)]
        object.__setattr__(self, "_dropout_index", {path: i for i, path in enumerate(dropouts)})

    @property
    def has_dropout(self) -> bool:
        return bool(self._dropout_index)

    def apply(self, params: Params, state: Params, x: jax.Array, *, train: bool,
              key: jax.Array | None = None) -> tuple[jax.Array, Params]:
        """Logits ``(N, classes)`` and the new BatchNorm state.

        Args:
            params: trainable arrays by canonical name (kernels in ``self.layout``).
            state: BatchNorm running statistics and frozen parameters by canonical name.
            x: a batch in ``self.layout`` (images ``(N, H, W, C)`` for NHWC) or ``(N, features)``.
            train: batch statistics, running-stat updates and dropout when True.
            key: a PRNG key, needed when training a model with dropout; or the keep masks
                themselves, bool ``{path: (N, *sample in self.layout)}`` (the conformance checks'
                seam, `fwbench_jax.trainer.JaxTrainer.use_dropout_masks`).
        """
        if train and self.has_dropout and key is None:
            raise ValueError("training a model with dropout needs a PRNG key; pass key=...")
        updates: dict[str, jax.Array] = {}
        ctx = _Context({**state, **params}, state, updates, train, key)  # frozen params live in state
        last = len(self.info.layers) - 1
        for i, li in enumerate(self.info.layers):
            x = self._layer(li, x, ctx, logits=(i == last))
        return x, {**state, **updates}

    # -- layers ------------------------------------------------------------------------------
    def _channel_axis(self, x: jax.Array) -> int:
        return self.layout.channel_axis if x.ndim == 4 else x.ndim - 1

    def _layer(self, li: LayerInfo, x: jax.Array, ctx: _Context, logits: bool = False) -> jax.Array:
        layer, path, p = li.layer, li.path, ctx.params
        if logits and ends_in_softmax(layer):  # folded into the loss
            if isinstance(layer, Activation):
                return x
            activation = "linear"
        else:
            activation = getattr(layer, "activation", "linear")
        if isinstance(layer, Dense):
            x = jnp.matmul(x, p[f"{path}.weight"], precision=self.matmul_precision)
            if layer.use_bias:
                x = x + p[f"{path}.bias"]
            return _activate(activation, x, -1)
        if isinstance(layer, Conv2D):
            x = self._conv(x, p[f"{path}.weight"], layer.stride, layer.pad)
            if layer.use_bias:
                x = x + self._per_channel(p[f"{path}.bias"], x)
            return _activate(activation, x, self._channel_axis(x))
        if isinstance(layer, AvgPool):  # before MaxPool: AvgPool subclasses it
            window, step = self.layout.window(layer.size), self.layout.window(layer.step)
            total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, window, step, "VALID")
            return total / (layer.size * layer.size)
        if isinstance(layer, MaxPool):
            window, step = self.layout.window(layer.size), self.layout.window(layer.step)
            return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, step, "VALID")
        if isinstance(layer, GlobalAvgPool):
            return jnp.mean(x, axis=self.layout.spatial_axes)
        if isinstance(layer, Flatten):
            if x.ndim == 4:  # canonical C-major order whatever the layout
                x = self.layout.images_out(x)
            return x.reshape(x.shape[0], -1)
        if isinstance(layer, BatchNorm):
            return self._batchnorm(li, x, ctx)
        if isinstance(layer, Dropout):
            if not ctx.train or layer.rate == 0.0:
                return x
            keep = 1.0 - layer.rate
            if isinstance(ctx.key, dict):  # masks handed in
                mask = ctx.key[path]
            else:
                mask = jax.random.bernoulli(jax.random.fold_in(ctx.key, self._dropout_index[path]),
                                            keep, x.shape)
            return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))
        if isinstance(layer, Activation):
            return _activate(layer.fn, x, self._channel_axis(x), layer.alpha)
        if isinstance(layer, Residual):
            body = x
            for child in li.children:
                body = self._layer(child, body, ctx)
            shortcut = x
            if f"{path}.shortcut.weight" in p:
                shortcut = self._conv(x, p[f"{path}.shortcut.weight"], shortcut_stride(li), 0)
                shortcut = shortcut + self._per_channel(p[f"{path}.shortcut.bias"], shortcut)
            return _activate(activation, body + shortcut, self._channel_axis(body))
        raise NotImplementedError(f"the JAX backend has no rule for layer type {layer.kind!r}")

    def _conv(self, x: jax.Array, w: jax.Array, stride: int, pad: int) -> jax.Array:
        return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=self.layout.conv_dimension_numbers,
                                        precision=self.matmul_precision)

    def _per_channel(self, v: jax.Array, x: jax.Array) -> jax.Array:
        """Reshape a ``(C,)`` vector to broadcast along the channel axis of ``x``."""
        shape = [1] * x.ndim
        shape[self._channel_axis(x)] = v.shape[0]
        return v.reshape(shape)

    def _batchnorm(self, li: LayerInfo, x: jax.Array, ctx: _Context) -> jax.Array:
        """PyTorch semantics: biased batch variance to normalise, unbiased one for running_var.

        A low-precision ``x`` (bf16/fp16 policy) is normalised in float32 and the output rounded back."""
        layer, path = li.layer, li.path
        compute_dtype, x = x.dtype, x.astype(jnp.promote_types(x.dtype, jnp.float32))
        channel = self._channel_axis(x)
        axes = tuple(a for a in range(x.ndim) if a != channel)
        if ctx.train:
            mean = jnp.mean(x, axis=axes)
            var = jnp.var(x, axis=axes)
            n = x.size // x.shape[channel]
            m = layer.momentum
            ctx.updates[f"{path}.running_mean"] = (
                (1 - m) * ctx.state[f"{path}.running_mean"] + m * lax.stop_gradient(mean))
            ctx.updates[f"{path}.running_var"] = (
                (1 - m) * ctx.state[f"{path}.running_var"]
                + m * lax.stop_gradient(var) * (n / max(n - 1, 1)))
        else:
            mean, var = ctx.state[f"{path}.running_mean"], ctx.state[f"{path}.running_var"]
        scale = ctx.params[f"{path}.gamma"] * lax.rsqrt(var + layer.eps)
        shift = ctx.params[f"{path}.beta"] - mean * scale
        return (x * self._per_channel(scale, x) + self._per_channel(shift, x)).astype(compute_dtype)


@dataclass
class _Context:
    """What one forward pass threads through the layers."""

    params: Params
    state: Params
    updates: dict[str, Any]
    train: bool
    key: jax.Array | dict[str, jax.Array] | None


def count_params(params: Params | Sequence[jax.Array]) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))
