"""The task's model as a Keras functional model, and the map between its variables and the
suite's canonical weights (`fwbench.layers`).

Keras runs channels-last, as a Keras user's model does: image batches are NHWC, convolution
kernels HWIO (converted at `set_weights` / `get_weights`, never per step). ``flatten`` of an NHWC
tensor orders features (row, column, channel) where the canonical order is (channel, row,
column). When a dense layer follows (through dropout/activation only), its rows are permuted at
load and back at read instead of transposing activations every step, which gives the same
function; otherwise (a model that ends in ``flatten``, ``flatten -> batchnorm``) the features
are transposed to the canonical order (`_Builder.canonical_order`).

Padding: Keras' ``"same"`` is symmetric only at stride 1 (at stride 2 it pads bottom/right only),
so a strided or explicitly padded convolution is ``ZeroPadding2D(p)`` + ``padding="valid"``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
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
from fwbench.model import LayerInfo, ModelInfo, ends_in_softmax, shortcut_stride


class _Unset(keras.initializers.Initializer):
    """A dense or conv2d kernel before the canonical weights are set (`KerasTrainer` sets every bound
    variable right after the build): host zeros. Keras' default draw (Glorot) runs random ops that
    the JAX engine compiles one by one for every new shape, for values that are thrown away."""

    def __call__(self, shape, dtype=None):
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or "float32"))


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _conv_in(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _conv_out(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)  # HWIO -> OIHW


@dataclass
class Binding:
    """One canonical array and the Keras variable that holds it (with the layout conversions)."""

    name: str
    variable: keras.Variable
    to_keras: Callable[[np.ndarray], np.ndarray] = _identity
    to_canonical: Callable[[np.ndarray], np.ndarray] = _identity


def _flatten_perm(shape: tuple[int, ...]) -> np.ndarray:
    """Row ``i`` of the Keras (H, W, C)-flattened input is canonical (C, H, W) row ``perm[i]``."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def _dense_rows(perm: np.ndarray):
    inverse = np.argsort(perm)
    return (lambda a: a[perm]), (lambda a: a[inverse])


@dataclass
class KerasModel:
    """The built ``keras.Model`` (logits out) and its canonical bindings."""

    model: keras.Model
    bindings: list[Binding] = field(default_factory=list)


def _name(kind: str, path: str) -> str:
    """A Keras layer name from a canonical path (torch refuses dots in parameter names)."""
    return f"{kind}_{path.replace('.', '_')}"



class _Builder:
    def __init__(self, info: ModelInfo, dtype: str, exact: bool, seed: int):
        self.info, self.dtype, self.exact, self.seed = info, dtype, exact, seed
        self.bindings: list[Binding] = []
        self.pending_perm: np.ndarray | None = None  # a flatten waiting for its dense layer
        self.pending_shape: tuple[int, ...] = ()  # ... and its canonical (C, H, W) input shape
        self.frozen_layers: list[keras.layers.Layer] = []

    def activation(self, fn: str, x, alpha: float = 0.01):
        if fn == "linear":
            return x
        if fn == "leaky_relu":
            if self.exact:
                from .layers import ExactLeakyReLU

                return ExactLeakyReLU(negative_slope=alpha, dtype=self.dtype)(x)
            return keras.layers.LeakyReLU(negative_slope=alpha, dtype=self.dtype)(x)
        return keras.layers.Activation(fn, dtype=self.dtype)(x)

    def canonical_order(self, x):
        """A flatten not followed by a dense layer: reorder its (H, W, C)-ordered features to the
        canonical (C, H, W) order (a transpose), ``(N, C*H*W) -> (N, C*H*W)``."""
        c, h, w = self.pending_shape
        x = keras.layers.Reshape((h, w, c), dtype=self.dtype)(x)
        x = keras.layers.Permute((3, 1, 2), dtype=self.dtype)(x)
        self.pending_perm = None
        return keras.layers.Reshape((c * h * w,), dtype=self.dtype)(x)

    def bind(self, layer: keras.layers.Layer, li: LayerInfo, names: dict[str, str], to_k=_identity, to_c=_identity):
        """Bind ``layer``'s variables (by attribute) to ``li``'s canonical parameter names."""
        canonical = {p.name.rsplit(".", 1)[1]: p for p in li.params if ".shortcut." not in p.name}
        frozen = any(p.frozen for p in canonical.values())
        for role, attr in names.items():
            if role in canonical:
                conv = (to_k, to_c) if role == "weight" else (_identity, _identity)
                self.bindings.append(Binding(canonical[role].name, getattr(layer, attr), *conv))
        if frozen:
            self.frozen_layers.append(layer)

    def layer(self, li: LayerInfo, x, logits: bool = False):
        layer = li.layer
        if logits and ends_in_softmax(layer):
            if isinstance(layer, Activation):
                return x
            act = "linear"
        else:
            act = getattr(layer, "activation", "linear")
        if isinstance(layer, Dense):
            k = keras.layers.Dense(layer.units, use_bias=layer.use_bias, dtype=self.dtype, name=_name("dense", li.path),
                                   kernel_initializer=_Unset(), bias_initializer=_Unset())
            x = k(x)
            to_k = to_c = _identity
            if self.pending_perm is not None:
                to_k, to_c = _dense_rows(self.pending_perm)
                self.pending_perm = None
            self.bind(k, li, {"weight": "kernel", "bias": "bias"}, to_k, to_c)
            return self.activation(act, x)
        if self.pending_perm is not None and not isinstance(layer, Dropout | Activation):
            x = self.canonical_order(x)
        if isinstance(layer, Conv2D):
            pad = layer.pad
            symmetric_same = layer.stride == 1 and pad == (layer.kernel - 1) // 2 and pad > 0
            if pad and not symmetric_same:
                x = keras.layers.ZeroPadding2D(pad, dtype=self.dtype)(x)
            k = keras.layers.Conv2D(layer.filters, layer.kernel, strides=layer.stride,
                                    padding="same" if symmetric_same else "valid",
                                    use_bias=layer.use_bias, dtype=self.dtype, name=_name("conv", li.path),
                                    kernel_initializer=_Unset(), bias_initializer=_Unset())
            x = k(x)
            self.bind(k, li, {"weight": "kernel", "bias": "bias"}, _conv_in, _conv_out)
            return self.activation(act, x)
        if isinstance(layer, AvgPool):
            return keras.layers.AveragePooling2D(layer.size, layer.step, dtype=self.dtype)(x)
        if isinstance(layer, MaxPool):
            return keras.layers.MaxPooling2D(layer.size, layer.step, dtype=self.dtype)(x)
        if isinstance(layer, GlobalAvgPool):
            return keras.layers.GlobalAveragePooling2D(dtype=self.dtype)(x)
        if isinstance(layer, Flatten):
            if len(li.in_shape) == 3:
                self.pending_perm = _flatten_perm(li.in_shape)
                self.pending_shape = li.in_shape
            return keras.layers.Flatten(dtype=self.dtype)(x)
        if isinstance(layer, BatchNorm):
            if self.exact:
                from .layers import ExactBatchNorm as cls
            else:
                cls = keras.layers.BatchNormalization
            k = cls(momentum=1.0 - layer.momentum, epsilon=layer.eps, dtype=self.dtype, name=_name("bn", li.path))
            x = k(x)
            self.bind(k, li, {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean",
                              "running_var": "moving_variance"})
            return x
        if isinstance(layer, Dropout):
            return keras.layers.Dropout(layer.rate, seed=self.seed, dtype=self.dtype)(x) if layer.rate else x
        if isinstance(layer, Activation):
            return self.activation(layer.fn, x, layer.alpha)
        if isinstance(layer, Residual):
            body = x
            for child in li.children:
                body = self.layer(child, body)
            shortcut = x
            names = {p.name for p in li.params}
            if f"{li.path}.shortcut.weight" in names:
                k = keras.layers.Conv2D(li.out_shape[0], 1, strides=shortcut_stride(li), dtype=self.dtype,
                                        name=_name("shortcut", li.path), kernel_initializer=_Unset(),
                                        bias_initializer=_Unset())
                shortcut = k(x)
                frozen = any(p.frozen for p in li.params)
                self.bindings += [Binding(f"{li.path}.shortcut.weight", k.kernel, _conv_in, _conv_out),
                                  Binding(f"{li.path}.shortcut.bias", k.bias)]
                if frozen:
                    self.frozen_layers.append(k)
            x = keras.layers.Add(dtype=self.dtype)([body, shortcut])
            return self.activation(act, x)
        raise NotImplementedError(f"the keras backend has no rule for layer type {layer.kind!r}")


def _ends_in_tagged_activation(info: ModelInfo) -> bool:
    """Whether the model's output is a sigmoid or an unfolded softmax (dropout after it returns
    the same tensor), which Keras' TensorFlow backend tags with ``_keras_logits``."""
    for li in reversed(info.layers):
        if isinstance(li.layer, Dropout):
            continue
        fn = li.layer.fn if isinstance(li.layer, Activation) else getattr(li.layer, "activation", None)
        return fn in ("sigmoid", "softmax")
    return False


def build_model(info: ModelInfo, dtype: str, *, exact: bool, seed: int) -> KerasModel:
    """The functional model for ``info`` (logits out, final softmax folded into the loss).

    ``dtype`` is every layer's dtype policy: ``"float32"``, ``"float64"`` or a mixed one
    (``"mixed_bfloat16"``: float32 variables and input, bfloat16 compute)."""
    shape = info.input_shape
    keras_shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)
    builder = _Builder(info, dtype, exact, seed)
    inputs = keras.Input(shape=keras_shape, dtype=keras.DTypePolicy(dtype).variable_dtype)
    x = inputs
    last = len(info.layers) - 1
    for i, li in enumerate(info.layers):
        x = builder.layer(li, x, logits=(i == last))
    if builder.pending_perm is not None:  # the model ends in a flatten (or dropout/activation after it)
        x = builder.canonical_order(x)
    if _ends_in_tagged_activation(info):  # not what Keras' TF loss should see as logits
        from .layers import Logits

        x = Logits(dtype=dtype)(x)
    model = keras.Model(inputs, x, name="fwbench")
    for layer in builder.frozen_layers:
        layer.trainable = False
    return KerasModel(model, builder.bindings)


def images_in(x: np.ndarray) -> np.ndarray:
    """Canonical ``(N, C, H, W)`` -> Keras' ``(N, H, W, C)`` (flat batches unchanged)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x
