"""Build the layer objects of a task's model from its spec and keep their parameters together.

`NumpyModel` turns the suite's `ModelInfo` (shapes and canonical parameter names, from
`fwbench.model.analyze`) into `fwbench_numpy.layers` objects:

* a ``dense``/``conv2d`` with an ``activation`` becomes the layer plus an `Activation` (same path);
* the final softmax (a layer or an activation of the last layer) is dropped: the model returns
  logits and the loss applies a fused softmax cross-entropy;
* ``residual`` blocks get their body, the 1x1 projection shortcut when shapes differ, and the
  block activation;
* every trainable array lives in one flat buffer (``flat_params``) and every gradient in another
  (``flat_grads``); layers hold reshaped views into them. The optimizer and gradient clipping
  then work on two arrays, whatever the number of layers.
* parameters of frozen layers (``model.frozen``) live outside the flat buffers (``frozen``): the
  optimizer, weight decay and clipping never see them, and a frozen prefix of the model is not
  back-propagated at all. Their BatchNorm running statistics still update in train mode.
"""
from __future__ import annotations

import math

import numpy as np
from fwbench import layers as spec_layers
from fwbench.model import LayerInfo, ModelInfo, check_weights, shortcut_stride

from . import layers as L

#: Parameters start at multiples of this many elements in the flat buffers (64-byte alignment).
_ALIGN = 16


def _activation(path: str, fn: str, dtype, alpha: float = 0.01) -> list[L.Layer]:
    return [] if fn == "linear" else [L.Activation(path, fn, dtype, alpha)]


def build_layer(info: LayerInfo, dtype, rng: np.random.Generator) -> list[L.Layer]:
    """The NumPy layers for one spec layer (a fused activation becomes a second layer)."""
    spec, path = info.layer, info.path
    if isinstance(spec, spec_layers.Dense):
        dense = L.Dense(path, info.in_shape[0], spec.units, spec.use_bias, dtype)
        return [dense, *_activation(path, spec.activation, dtype)]
    if isinstance(spec, spec_layers.Conv2D):
        conv = L.Conv2D(path, info.in_shape[0], spec.filters, spec.kernel, spec.stride, spec.pad,
                        spec.use_bias, dtype)
        return [conv, *_activation(path, spec.activation, dtype)]
    if isinstance(spec, spec_layers.AvgPool):  # before MaxPool: AvgPool subclasses it
        return [L.AvgPool(path, spec.size, spec.step, dtype)]
    if isinstance(spec, spec_layers.MaxPool):
        return [L.MaxPool(path, spec.size, spec.step, dtype)]
    if isinstance(spec, spec_layers.GlobalAvgPool):
        return [L.GlobalAvgPool(path, dtype)]
    if isinstance(spec, spec_layers.Flatten):
        return [L.Flatten(path, dtype)]
    if isinstance(spec, spec_layers.BatchNorm):
        return [L.BatchNorm(path, info.in_shape[0], spec.momentum, spec.eps, dtype)]
    if isinstance(spec, spec_layers.Dropout):
        return [L.Dropout(path, spec.rate, rng, dtype)]
    if isinstance(spec, spec_layers.Activation):
        return _activation(path, spec.fn, dtype, spec.alpha)
    if isinstance(spec, spec_layers.Residual):
        body = [layer for child in info.children for layer in build_layer(child, dtype, rng)]
        shortcut = None
        if info.params:  # the projection: 1x1 conv with bias, C_in -> C_out
            shortcut = L.Conv2D(f"{path}.shortcut", info.in_shape[0], info.out_shape[0], 1,
                                shortcut_stride(info), 0, True, dtype)
        act = _activation(path, spec.activation, dtype)
        return [L.Residual(path, body, shortcut, act[0] if act else None, dtype)]
    raise ValueError(f"the numpy backend has no layer for spec type {spec.kind!r} at {path}; "
                     "add a class to fwbench_numpy.layers and a case to build_layer")


def _fold_final_softmax(layers: list[L.Layer]) -> list[L.Layer]:
    """Drop the last softmax: the loss is a fused softmax cross-entropy on logits."""
    last = layers[-1] if layers else None
    if isinstance(last, L.Activation) and last.fn == "softmax":
        return layers[:-1]
    if isinstance(last, L.Residual) and last.activation is not None and last.activation.fn == "softmax":
        last.activation = None
    return layers


def _has_params(layer: L.Layer, frozen: frozenset[str] = frozenset()) -> bool:
    """Whether ``layer`` (or a layer inside it) has a parameter that trains."""
    return any(f"{sub.path}.{name}" not in frozen for sub in L.walk([layer]) for name in sub.params)


def _mark_input_grads(layers: list[L.Layer], needed: bool, frozen: frozenset[str] = frozenset()) -> bool:
    """Set ``needs_input_grad``: False until the first layer with trainable parameters (their
    input gradients feed nothing). Returns whether the layer after these needs its input gradient."""
    for layer in layers:
        layer.needs_input_grad = needed
        if isinstance(layer, L.Residual):
            _mark_input_grads(layer.body, needed, frozen)
            if layer.shortcut is not None:
                layer.shortcut.needs_input_grad = needed
            if layer.activation is not None:  # feeds body and shortcut: always needed
                layer.activation.needs_input_grad = True
        needed = needed or _has_params(layer, frozen)
    return needed


class NumpyModel:
    """The layers of one task's model, its flat parameter storage and the input conversion.

    Args:
        info: `fwbench.model.analyze` of the task's model (shapes and canonical names).
        dtype: float32 or float64.
        seed: seeds the dropout masks.
    """

    def __init__(self, info: ModelInfo, dtype: np.dtype | str = "float32", seed: int = 0):
        self.info = info
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        #: Conformance's rounding probe: when set, every top-level layer's output and input gradient
        #: moves by one ulp (a random sign per element), as another framework's rounding may.
        self.rounding_probe: np.random.Generator | None = None
        built = [layer for li in info.layers for layer in build_layer(li, self.dtype, self.rng)]
        self.layers = _fold_final_softmax(built)
        _mark_input_grads(self.layers, False, frozenset(p.name for p in info.params if p.frozen))
        first = info.layers[0].layer
        flat_first = isinstance(first, spec_layers.Flatten | spec_layers.Dense)
        #: "flat": batches become (N, features); "image": (C, H, W, N).
        self.input_layout = "flat" if len(info.input_shape) != 3 or flat_first else "image"
        self._pack()

    # -- parameters ------------------------------------------------------------------------------
    def _pack(self) -> None:
        """Move every trainable array and its gradient into two flat, aligned buffers."""
        owners = {f"{layer.path}.{name}": (layer, name)
                  for layer in L.walk(self.layers) for name in layer.params}
        order = [p.name for p in self.info.params if p.trainable]
        frozen = [p.name for p in self.info.params if p.frozen]
        state = {f"{layer.path}.{name}": arr
                 for layer in L.walk(self.layers) for name, arr in layer.state.items()}
        expected_state = {p.name for p in self.info.params if p.is_state}
        if set(owners) != set(order) | set(frozen) or set(state) != expected_state:
            raise RuntimeError(  # a bug in build_layer, not in the spec
                f"numpy model parameters {sorted(owners) + sorted(state)} do not match the spec's "
                f"{sorted(order) + sorted(frozen) + sorted(expected_state)}")
        #: Parameters of frozen layers: their own arrays, outside the optimizer's flat buffers.
        self.frozen: dict[str, np.ndarray] = {name: owners[name][0].params[owners[name][1]]
                                              for name in frozen}
        offsets, total = {}, 0
        for name in order:
            layer, local = owners[name]
            offsets[name] = total
            total += -(-layer.params[local].size // _ALIGN) * _ALIGN  # rounded up to _ALIGN
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for name in order:
            layer, local = owners[name]
            shape, start = layer.params[local].shape, offsets[name]
            stop = start + math.prod(shape)
            view = self.flat_params[start:stop].reshape(shape)
            view[...] = layer.params[local]
            layer.params[local] = self.params[name] = view
            layer.grads[local] = self.grads[name] = self.flat_grads[start:stop].reshape(shape)
        self.state: dict[str, np.ndarray] = {p.name: state[p.name] for p in self.info.params
                                             if p.is_state}

    def _array(self, p) -> np.ndarray:
        """The live array of canonical parameter ``p`` (a `ParamInfo`)."""
        if p.trainable:
            return self.params[p.name]
        return self.frozen[p.name] if p.frozen else self.state[p.name]

    def num_trainable(self) -> int:
        """Trainable parameters, counted from the arrays themselves (alignment gaps excluded)."""
        return sum(a.size for a in self.params.values())

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and state array, canonical names, layouts and order."""
        return {p.name: self._array(p).copy() for p in self.info.params}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy canonical weights into the model (cast to its dtype). Every name must be given."""
        check_weights(self.info, weights)  # the core's one check (WeightsError)
        for p in self.info.params:
            np.copyto(self._array(p), np.asarray(weights[p.name]), casting="unsafe")

    # -- computation -----------------------------------------------------------------------------
    def to_internal(self, x: np.ndarray) -> np.ndarray:
        """Canonical batch ``(N, C, H, W)`` (or ``(N, features)``) -> the internal layout, in the
        model's dtype: ``(C, H, W, N)`` for image models, ``(N, features)`` for flat ones."""
        x = np.asarray(x)
        expected = self.info.input_shape
        if math.prod(x.shape[1:]) != math.prod(expected) or x.ndim < 2:
            raise ValueError(f"batch has sample shape {x.shape[1:]}, the model expects {expected}; "
                             "check the task's dataset")
        n = x.shape[0]
        if self.input_layout == "flat":
            return np.ascontiguousarray(x.reshape(n, -1), dtype=self.dtype)
        x = x.reshape(n, *expected)
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0), dtype=self.dtype)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Logits ``(N, classes)`` from an internal-layout batch (a reused buffer: copy to keep)."""
        for layer in self.layers:
            x = self._probed(layer.forward(x, training))
        return x

    def _probed(self, a: np.ndarray) -> np.ndarray:
        """``a`` (any shape), one ulp off with a random sign per element under the rounding probe."""
        if self.rounding_probe is None:
            return a
        return a * (1 + np.finfo(a.dtype).eps * self.rounding_probe.choice(np.array([-1, 1], a.dtype), a.shape))

    def backward(self, dlogits: np.ndarray) -> None:
        """Fill ``self.grads`` (i.e. ``flat_grads``) from the loss gradient w.r.t. the logits."""
        d = dlogits
        for layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:
                break
            d = self._probed(d)

    def batch_size_of(self, x: np.ndarray) -> int:
        """Number of samples in an internal-layout batch."""
        return x.shape[0] if self.input_layout == "flat" else x.shape[-1]

    def slice_batch(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of an internal-layout batch, contiguous."""
        if self.input_layout == "flat":
            return x[start:stop]
        return np.ascontiguousarray(x[..., start:stop])

    def workspace_bytes(self) -> int:
        """Bytes held in reusable buffers by all layers."""
        return sum(layer.ws.nbytes() for layer in L.walk(self.layers))

    def bytes_per_sample(self) -> int:
        """Rough forward memory per sample (activations and im2col columns), for eval chunking."""
        floats = self.info.activation_floats * 2
        for li in self.info.walk():
            if isinstance(li.layer, spec_layers.Conv2D):
                k = li.layer.kernel
                floats += li.in_shape[0] * k * k * li.out_shape[1] * li.out_shape[2]
        return floats * self.dtype.itemsize
