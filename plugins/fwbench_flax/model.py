"""The task's model as Flax NNX modules (NHWC, as Flax users write it) and the map between its
variables and the canonical weights (`fwbench.layers`).

Conv kernels are HWIO in Flax (OIHW canonical), converted at load and read. ``flatten`` of an
NHWC activation orders features (row, column, channel); when a dense layer follows it (through
dropout/activation only), that layer's input rows are permuted at load (and back at read)
instead of a transpose per step; otherwise the flatten transposes to the canonical (C, H, W)
order itself. Frozen layers
(``model.frozen``) hold their parameters as `Frozen` variables, not ``nnx.Param``, so gradients
and the optimizer (``wrt=nnx.Param``) skip them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
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
from fwbench.model import LayerInfo, ModelInfo, ends_in_softmax, shortcut_stride


class Frozen(nnx.Variable):
    """A parameter of a frozen layer: no gradient, no optimizer state."""


def _identity(a):
    return a


@dataclass
class Binding:
    """A canonical array and the NNX variable that holds it."""

    name: str
    variable: nnx.Variable
    to_flax: Callable = _identity
    to_canonical: Callable = _identity


def _conv_in(a):
    return a.transpose(2, 3, 1, 0)


def _conv_out(a):
    return a.transpose(3, 2, 0, 1)


def _flatten_perm(shape: tuple[int, ...]) -> np.ndarray:
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


class ExactBatchNorm(nnx.Module):
    """BatchNorm with the suite's rules (PyTorch's momentum, unbiased running variance), NHWC
    or ``(N, F)``; ``use_running_average`` is flipped by ``model.eval()`` / ``model.train()``."""

    def __init__(self, features: int, momentum: float, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones((features,), dtype))
        self.bias = nnx.Param(jnp.zeros((features,), dtype))
        self.mean = nnx.BatchStat(jnp.zeros((features,), dtype))
        self.var = nnx.BatchStat(jnp.ones((features,), dtype))
        self.momentum, self.eps = momentum, eps
        self.use_running_average = False

    def __call__(self, x):
        """A low-precision ``x`` (bf16/fp16 policy) is normalised in float32 and rounded back."""
        compute_dtype, x = x.dtype, x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
            n = x.size // x.shape[-1]
            m = self.momentum
            self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
            self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
        scale = self.scale[...] * jax.lax.rsqrt(var + self.eps)
        return (x * scale + (self.bias[...] - mean * scale)).astype(compute_dtype)


def _activate(fn: str, x, alpha: float = 0.01):
    if fn == "relu":
        return jax.nn.relu(x)
    if fn == "leaky_relu":  # slope alpha at exactly 0 (jax.nn.leaky_relu takes 1 there), alpha in x's dtype
        return jnp.where(x > 0, x, x * jnp.asarray(alpha, x.dtype))
    if fn == "sigmoid":
        return jax.nn.sigmoid(x)
    if fn == "tanh":
        return jnp.tanh(x)
    if fn == "softmax":
        return jax.nn.softmax(x, axis=-1)
    return x



class Block(nnx.Module):
    """One spec layer: a module (or none) plus what to do around it."""

    def __init__(self, kind: str, module=None, activation: str = "linear", alpha: float = 0.01,
                 size: int = 0, step: int = 0, body=None, shortcut=None):
        self.kind, self.module, self.activation, self.alpha = kind, module, activation, alpha
        self.size, self.step = size, step
        self.canonical = False  # flatten: transpose to (C, H, W) order first (no dense after it)
        self.body = nnx.List(body) if body is not None else None
        self.shortcut = shortcut

    def __call__(self, x):
        kind = self.kind
        if kind in ("dense", "conv2d", "batchnorm", "dropout"):
            x = self.module(x)
        elif kind == "maxpool":
            x = nnx.max_pool(x, (self.size, self.size), (self.step, self.step))
        elif kind == "avgpool":
            x = nnx.avg_pool(x, (self.size, self.size), (self.step, self.step))
        elif kind == "global_avg_pool":
            x = jnp.mean(x, axis=(1, 2))
        elif kind == "flatten":
            if self.canonical and x.ndim == 4:  # NHWC -> NCHW: (C, H, W) order, the canonical one
                x = jnp.transpose(x, (0, 3, 1, 2))
            x = x.reshape(x.shape[0], -1)
        elif kind == "residual":
            body = x
            for block in self.body:
                body = block(body)
            x = body + (self.shortcut(x) if self.shortcut is not None else x)
        return _activate(self.activation, x, self.alpha)


class Network(nnx.Module):
    """The whole model: logits out (a final softmax is folded into the loss)."""

    def __init__(self, blocks: list[Block]):
        self.blocks = nnx.List(blocks)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _unset(key, shape, dtype=np.float32):
    """A dense or conv2d parameter before the canonical weights are set (`FlaxTrainer` sets every
    bound parameter right after the build): zeros put on the device. Flax's own initializers draw
    with a jitted random op, one XLA compile per new shape, for values that are thrown away."""
    del key
    return jax.device_put(np.zeros(shape, dtype))


#: the initializers of every dense and conv2d module the builder makes
_PLACEHOLDER_INIT = {"kernel_init": _unset, "bias_init": _unset}


class _Builder:
    def __init__(self, dtype, exact: bool, seed: int, compute_dtype=None):
        self.dtype, self.exact = dtype, exact
        #: dense and conv2d layers compute in this dtype (bf16/fp16 policy); parameters stay ``dtype``
        self.compute = compute_dtype or dtype
        self.rngs = nnx.Rngs(params=seed, dropout=seed)
        self.bindings: list[Binding] = []
        self.pending_perm: np.ndarray | None = None
        self.pending_flatten: Block | None = None  # the flatten whose order a dense may absorb

    def settle_flatten(self) -> None:
        """The flatten waiting for a dense layer gets none: it transposes to (C, H, W) itself."""
        if self.pending_flatten is not None:
            self.pending_flatten.canonical = True
        self.pending_perm, self.pending_flatten = None, None

    def _bind(self, module, li: LayerInfo, names: dict[str, str], to_f=_identity, to_c=_identity):
        for p in li.params:
            if ".shortcut." in p.name:
                continue
            role = p.name.rsplit(".", 1)[1]
            attr = names[role]
            if p.frozen:  # out of nnx.Param: no gradient, no optimizer state
                setattr(module, attr, Frozen(getattr(module, attr).get_value()))
            conv = (to_f, to_c) if role == "weight" else (_identity, _identity)
            self.bindings.append(Binding(p.name, getattr(module, attr), *conv))

    def block(self, li: LayerInfo, logits: bool = False) -> Block:
        layer = li.layer
        act = getattr(layer, "activation", "linear")
        if logits and ends_in_softmax(layer):
            act = "linear"
        if isinstance(layer, Dense):
            m = nnx.Linear(li.in_shape[0], layer.units, use_bias=layer.use_bias, dtype=self.compute,
                           param_dtype=self.dtype, rngs=self.rngs, **_PLACEHOLDER_INIT)
            to_f = to_c = _identity
            if self.pending_perm is not None:
                perm, inverse = self.pending_perm, np.argsort(self.pending_perm)
                to_f, to_c = (lambda a, p=perm: a[p]), (lambda a, i=inverse: a[i])
                self.pending_perm, self.pending_flatten = None, None
            self._bind(m, li, {"weight": "kernel", "bias": "bias"}, to_f, to_c)
            return Block("dense", m, act)
        if self.pending_perm is not None and not isinstance(layer, Dropout | Activation):
            self.settle_flatten()
        if isinstance(layer, Conv2D):
            p = layer.pad
            m = nnx.Conv(li.in_shape[0], layer.filters, (layer.kernel, layer.kernel), layer.stride,
                         padding=((p, p), (p, p)), use_bias=layer.use_bias, dtype=self.compute,
                         param_dtype=self.dtype, rngs=self.rngs, **_PLACEHOLDER_INIT)
            self._bind(m, li, {"weight": "kernel", "bias": "bias"}, _conv_in, _conv_out)
            return Block("conv2d", m, act)
        if isinstance(layer, AvgPool):
            return Block("avgpool", size=layer.size, step=layer.step)
        if isinstance(layer, MaxPool):
            return Block("maxpool", size=layer.size, step=layer.step)
        if isinstance(layer, GlobalAvgPool):
            return Block("global_avg_pool")
        if isinstance(layer, Flatten):
            block = Block("flatten")
            if len(li.in_shape) == 3:
                self.pending_perm, self.pending_flatten = _flatten_perm(li.in_shape), block
            return block
        if isinstance(layer, BatchNorm):
            c = li.in_shape[0]
            if self.exact:
                m = ExactBatchNorm(c, layer.momentum, layer.eps, self.dtype)
            else:  # Flax's momentum is the weight of the running value: 1 - the spec's
                m = nnx.BatchNorm(c, momentum=1.0 - layer.momentum, epsilon=layer.eps, dtype=self.dtype,
                                  param_dtype=self.dtype, rngs=self.rngs)
            self._bind(m, li, {"gamma": "scale", "beta": "bias", "running_mean": "mean", "running_var": "var"})
            return Block("batchnorm", m)
        if isinstance(layer, Dropout):
            return Block("dropout", nnx.Dropout(layer.rate, rngs=self.rngs))
        if isinstance(layer, Activation):
            fn = "linear" if logits and layer.fn == "softmax" else layer.fn
            return Block("activation", activation=fn, alpha=layer.alpha)
        if isinstance(layer, Residual):
            body = [self.block(child) for child in li.children]
            shortcut = None
            if any(p.name == f"{li.path}.shortcut.weight" for p in li.params):
                shortcut = nnx.Conv(li.in_shape[0], li.out_shape[0], (1, 1), shortcut_stride(li),
                                    padding="VALID", dtype=self.compute, param_dtype=self.dtype, rngs=self.rngs,
                                    **_PLACEHOLDER_INIT)
                frozen = any(p.frozen for p in li.params)
                if frozen:
                    shortcut.kernel = Frozen(shortcut.kernel.get_value())
                    shortcut.bias = Frozen(shortcut.bias.get_value())
                self.bindings += [Binding(f"{li.path}.shortcut.weight", shortcut.kernel, _conv_in, _conv_out),
                                  Binding(f"{li.path}.shortcut.bias", shortcut.bias)]
            return Block("residual", activation=act, body=body, shortcut=shortcut)
        raise NotImplementedError(f"the flax backend has no rule for layer type {layer.kind!r}")


def build_model(info: ModelInfo, dtype, *, exact: bool, seed: int,
                compute_dtype=None) -> tuple[Network, list[Binding]]:
    """The NNX network and its canonical bindings; ``compute_dtype``: the dense/conv2d compute
    dtype of a bf16/fp16 policy (parameters stay ``dtype``)."""
    builder = _Builder(dtype, exact, seed, compute_dtype)
    last = len(info.layers) - 1
    blocks = [builder.block(li, logits=(i == last)) for i, li in enumerate(info.layers)]
    builder.settle_flatten()  # a model that ends in flatten (or dropout/activation after it)
    return Network(blocks), builder.bindings
