"""Shape inference, parameter counts, FLOPs and canonical initial weights for a model spec.

Everything here is analytic NumPy: the suite knows each model's parameters before any backend
builds it, so backends can be checked against it and all start from identical weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import SpecError
from .layers import (
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    MaxPool,
    Residual,
)
from .spec import ModelSpec

Shape = tuple[int, ...]


#: Roles of state arrays (updated by the forward pass, never by the optimizer).
STATE_ROLES = ("running_mean", "running_var")


@dataclass(frozen=True)
class ParamInfo:
    """One named array. ``trainable`` False marks state (BatchNorm running statistics, see
    `is_state`) and parameters of frozen layers (``frozen``, from ``model.frozen``)."""

    name: str
    shape: Shape
    trainable: bool = True
    fan_in: int = 0
    fan_out: int = 0
    role: str = "weight"  # weight | bias | gamma | beta | running_mean | running_var
    frozen: bool = False

    @property
    def is_state(self) -> bool:
        """A running statistic (not a parameter, frozen or not)."""
        return self.role in STATE_ROLES


@dataclass(frozen=True)
class LayerInfo:
    """A layer with its place (``path``), input/output shapes per sample and forward FLOPs."""

    path: str
    layer: Layer
    in_shape: Shape
    out_shape: Shape
    params: tuple[ParamInfo, ...] = ()
    flops: int = 0  # forward, per sample (multiply-add = 2)
    children: tuple[LayerInfo, ...] = field(default=())


@dataclass(frozen=True)
class ModelInfo:
    layers: tuple[LayerInfo, ...]
    input_shape: Shape
    output_shape: Shape

    def walk(self):
        """Every layer, residual children included, in order."""
        def rec(infos):
            for info in infos:
                yield info
                yield from rec(info.children)
        yield from rec(self.layers)

    @property
    def params(self) -> list[ParamInfo]:
        return [p for info in self.walk() for p in info.params]

    @property
    def trainable_count(self) -> int:
        return sum(math.prod(p.shape) for p in self.params if p.trainable)

    @property
    def forward_flops(self) -> int:
        """Forward FLOPs per sample (children are counted through their parents)."""
        return sum(info.flops for info in self.layers)

    @property
    def activation_floats(self) -> int:
        """Floats of every layer output per sample: what backward must keep (a rough lower bound)."""
        return sum(math.prod(info.out_shape) for info in self.walk())


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _need_image(shape: Shape, source: str, key: str, what: str) -> None:
    if len(shape) != 3:
        raise SpecError(source, key, f"{what} needs an image input (C, H, W) but gets {shape}; "
                        "remove the flatten/dense before it or move this layer earlier")


def _infer(layer: Layer, shape: Shape, path: str, source: str, key: str) -> LayerInfo:
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise SpecError(source, key, f"dense needs a flat input but gets {shape}; "
                            "add {type = \"flatten\"} before it")
        (n_in,) = shape
        params = [ParamInfo(f"{path}.weight", (n_in, layer.units), True, n_in, layer.units)]
        if layer.use_bias:
            params.append(ParamInfo(f"{path}.bias", (layer.units,), True, role="bias"))
        return LayerInfo(path, layer, shape, (layer.units,), tuple(params), 2 * n_in * layer.units)
    if isinstance(layer, Conv2D):
        _need_image(shape, source, key, "conv2d")
        c, h, w = shape
        k, s, p = layer.kernel, layer.stride, layer.pad
        if layer.padding == "same" and k % 2 == 0:
            raise SpecError(source, f"{key}.padding", f"'same' padding needs an odd kernel, got {k}; "
                            "use an odd kernel or an integer padding")
        if k > h + 2 * p or k > w + 2 * p:
            raise SpecError(source, f"{key}.kernel", f"kernel {k} is larger than the padded input "
                            f"{h + 2 * p}x{w + 2 * p} at this layer; use a smaller kernel or more padding")
        ho, wo = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        fan_in, fan_out = c * k * k, layer.filters * k * k
        params = [ParamInfo(f"{path}.weight", (layer.filters, c, k, k), True, fan_in, fan_out)]
        if layer.use_bias:
            params.append(ParamInfo(f"{path}.bias", (layer.filters,), True, role="bias"))
        flops = 2 * c * k * k * layer.filters * ho * wo
        return LayerInfo(path, layer, shape, (layer.filters, ho, wo), tuple(params), flops)
    if isinstance(layer, MaxPool):  # AvgPool too
        _need_image(shape, source, key, layer.kind)
        c, h, w = shape
        if layer.size > h or layer.size > w:
            raise SpecError(source, f"{key}.size", f"pool size {layer.size} is larger than the input "
                            f"{h}x{w} at this layer; use a smaller size or remove the layer")
        ho, wo = _conv_out(h, layer.size, layer.step, 0), _conv_out(w, layer.size, layer.step, 0)
        return LayerInfo(path, layer, shape, (c, ho, wo), (), c * ho * wo * layer.size ** 2)
    if isinstance(layer, GlobalAvgPool):
        _need_image(shape, source, key, "global_avg_pool")
        return LayerInfo(path, layer, shape, (shape[0],), (), math.prod(shape))
    if isinstance(layer, Flatten):
        return LayerInfo(path, layer, shape, (math.prod(shape),))
    if isinstance(layer, BatchNorm):
        c = shape[0]
        params = (ParamInfo(f"{path}.gamma", (c,), True, role="gamma"),
                  ParamInfo(f"{path}.beta", (c,), True, role="beta"),
                  ParamInfo(f"{path}.running_mean", (c,), False, role="running_mean"),
                  ParamInfo(f"{path}.running_var", (c,), False, role="running_var"))
        return LayerInfo(path, layer, shape, shape, params, 4 * math.prod(shape))
    if isinstance(layer, Dropout | Activation):
        return LayerInfo(path, layer, shape, shape, (), math.prod(shape))
    if isinstance(layer, Residual):
        children, inner = [], shape
        for i, sub in enumerate(layer.layers):
            info = _infer(sub, inner, f"{path}.body.{i}", source, f"{key}.layers[{i}]")
            children.append(info)
            inner = info.out_shape
        params: tuple[ParamInfo, ...] = ()
        flops = sum(ch.flops for ch in children) + 2 * math.prod(inner)
        if inner != shape:
            if layer.projection == "none" or len(shape) != 3 or len(inner) != 3:
                raise SpecError(source, key, f"residual body maps {shape} to {inner}; the shortcut "
                                "needs equal shapes or projection = \"auto\" on image inputs")
            (c, h, w), (co, ho, wo) = shape, inner
            stride = _shortcut_stride(h, ho)
            if _conv_out(h, 1, stride, 0) != ho or _conv_out(w, 1, stride, 0) != wo:
                raise SpecError(source, key, f"residual shortcut cannot map {shape} to {inner} with a "
                                "strided 1x1 convolution; make the body's stride divide the input size")
            params = (ParamInfo(f"{path}.shortcut.weight", (co, c, 1, 1), True, c, co),
                      ParamInfo(f"{path}.shortcut.bias", (co,), True, role="bias"))
            flops += 2 * c * co * ho * wo
        return LayerInfo(path, layer, shape, inner, params, flops, tuple(children))
    raise SpecError(source, key, f"layer type {layer.kind!r} has no shape rule")  # pragma: no cover


def _shortcut_stride(h_in: int, h_out: int) -> int:
    """``ceil(H_in / H_out)``: the one stride whose 1x1 convolution maps ``H_in`` to ``H_out`` rows
    whenever any does (a stride-2 body maps 15 rows to 8; ``15 // 8`` would be 1)."""
    return max(1, -(-h_in // h_out))


def shortcut_stride(info: LayerInfo) -> int:
    """The stride of a residual block's projection shortcut (1 when there is none)."""
    return _shortcut_stride(info.in_shape[1], info.out_shape[1]) if len(info.in_shape) == 3 else 1


def ends_in_softmax(layer: Layer) -> bool:
    """Whether ``layer``'s last operation is a softmax: a softmax layer, or a dense, conv2d or
    residual block with ``activation = "softmax"``. On the model's last layer that softmax is
    folded into the cross-entropy loss by every backend (`fwbench.layers`, docs/conformance.md)."""
    if isinstance(layer, Activation):
        return layer.fn == "softmax"
    return isinstance(layer, Dense | Conv2D | Residual) and layer.activation == "softmax"


def analyze(model: ModelSpec, input_shape: Shape, num_classes: int | None = None,
            source: str = "<spec>") -> ModelInfo:
    """Infer every layer's shapes and parameters. Raises `SpecError` for impossible models."""
    infos, shape = [], tuple(input_shape)
    for i, layer in enumerate(model.layers):
        info = _infer(layer, shape, str(i), source, f"model.layers[{i}]")
        infos.append(info)
        shape = info.out_shape
    if num_classes is not None and shape != (num_classes,):
        raise SpecError(source, f"model.layers[{len(infos) - 1}]",
                        f"the model outputs {shape} but the dataset has {num_classes} classes; "
                        f"end with a dense layer of {num_classes} units")
    if getattr(model, "frozen", ()):
        infos = _freeze(infos, model.frozen, source)
    return ModelInfo(tuple(infos), tuple(input_shape), shape)


def _freeze(infos: list[LayerInfo], frozen: tuple[str, ...], source: str) -> list[LayerInfo]:
    """Mark the parameters of the layers named by ``model.frozen`` (types or paths) non-trainable."""
    from .layers import LAYER_TYPES

    def walk(items):
        for info in items:
            yield info
            yield from walk(info.children)

    paths = [info.path for info in walk(infos)]
    kinds = {info.layer.kind for info in walk(infos)}
    for i, entry in enumerate(frozen):
        if entry in LAYER_TYPES and entry not in kinds:
            raise SpecError(source, f"model.frozen[{i}]", f"the model has no {entry} layer to freeze; "
                            f"use one of its layer types ({', '.join(sorted(kinds))}) or a path")
        if entry not in LAYER_TYPES and entry not in paths:
            raise SpecError(source, f"model.frozen[{i}]", f"{entry!r} is neither a layer type nor a layer "
                            f"path of this model; use a type ({', '.join(sorted(kinds))}) or a path "
                            f"({', '.join(paths[:6])}{', ...' if len(paths) > 6 else ''})")

    def mark(info: LayerInfo, inherited: bool) -> LayerInfo:
        hit = inherited or info.layer.kind in frozen or info.path in frozen
        params = tuple(replace(p, trainable=False, frozen=True) if hit and not p.is_state else p
                       for p in info.params)
        children = tuple(mark(child, hit) for child in info.children)
        return replace(info, params=params, children=children)

    marked = [mark(info, False) for info in infos]
    if not any(p.trainable for info in walk(marked) for p in info.params):
        raise SpecError(source, "model.frozen", "every parameter of the model is frozen: nothing would "
                        "train; unfreeze at least one layer (e.g. the last dense layer)")
    return marked


def _layer_init(info: LayerInfo, model: ModelSpec) -> str:
    return getattr(info.layer, "init", None) or model.init


def init_array(param: ParamInfo, scheme: str, scale: float, rng: np.random.Generator) -> np.ndarray:
    """He / Xavier (Glorot) / plain normal or uniform, float64; biases and BN start at 0 / 1."""
    if param.role in ("bias", "beta", "running_mean"):
        return np.zeros(param.shape)
    if param.role in ("gamma", "running_var"):
        return np.ones(param.shape)
    fan_in, fan_out = param.fan_in, param.fan_out
    if scheme == "he_normal":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), param.shape)
    if scheme == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
    elif scheme == "xavier_normal":
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), param.shape)
    elif scheme == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
    elif scheme == "normal":
        return rng.normal(0.0, scale, param.shape)
    else:  # uniform
        bound = scale
    return rng.uniform(-bound, bound, param.shape)


def initial_weights(model: ModelSpec, info: ModelInfo, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Canonical initial weights (layout in `fwbench.layers`), identical for every backend."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer_info in info.walk():
        scheme = _layer_init(layer_info, model)
        for param in layer_info.params:
            # a shortcut projection is initialised like its block's convolutions: He normal
            use = "he_normal" if ".shortcut." in param.name else scheme
            weights[param.name] = init_array(param, use, model.init_scale, rng).astype(dtype)
    return weights


def check_weights(info: ModelInfo, weights: dict[str, np.ndarray]) -> None:
    """Check canonical ``weights`` against ``info``'s parameter table, before any backend loads them.

    Every parameter and state array of `ModelInfo.params` must be given, with its canonical shape
    (``dense.weight`` ``(in, out)``, ``conv2d.weight`` OIHW...), and nothing else. The core calls
    this before ``build`` and ``set_weights``; a backend's ``set_weights`` may call it too.

    Raises:
        WeightsError: the names that are missing or unknown, or the first wrong shape.
    """
    from .errors import WeightsError

    known = {p.name: p for p in info.params}
    missing = [name for name in known if name not in weights]
    unknown = [name for name in weights if name not in known]
    if missing or unknown:
        raise WeightsError(f"weights do not match the model: missing {missing}, unknown {unknown}; pass "
                           "exactly the arrays of get_weights() or fwbench.model.initial_weights()")
    for name, p in known.items():
        shape = tuple(np.shape(weights[name]))
        if shape != tuple(p.shape):
            raise WeightsError(f"weight {name!r} has shape {shape}, expected {tuple(p.shape)} "
                               "(canonical layout, see fwbench.layers)")
