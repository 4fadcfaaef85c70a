"""Build an ``nn.Module`` from a task's layer specs, and map its tensors to canonical names.

The module tree mirrors the spec, so PyTorch's own parameter names *are* the canonical paths:
layer ``i`` is child ``"i"`` of an ``nn.Sequential``; a residual block has children ``body``
(another ``nn.Sequential``) and ``shortcut`` (the 1x1 projection, when there is one). Two things
differ from the canonical layout (see `fwbench.layers`) and are handled by `CanonicalMap`:

* ``dense.weight`` is ``(in, out)`` canonically but ``(out, in)`` in ``nn.Linear``;
* ``batchnorm.gamma`` / ``beta`` are ``weight`` / ``bias`` in ``nn.BatchNorm*``.

NCHW is PyTorch's native layout, so convolution weights (OIHW) load unchanged. A final softmax
before the cross-entropy loss is dropped here: the module returns logits and the trainer uses the
fused, stable ``F.cross_entropy``. This module imports torch at the top; only the plugin's
``__init__`` must stay torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from fwbench.layers import (
    Activation,
    AvgPool,
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
from fwbench.model import LayerInfo, ModelInfo, check_weights, shortcut_stride
from torch import nn

Fn = Callable[[torch.Tensor], torch.Tensor]


def activation_fn(name: str, alpha: float = 0.01) -> Fn | None:
    """The element-wise function for an activation name; None for ``"linear"`` (identity)."""
    if name == "linear":
        return None
    if name == "relu":
        return F.relu
    if name == "leaky_relu":
        return lambda x: F.leaky_relu(x, alpha)
    if name == "sigmoid":
        return torch.sigmoid
    if name == "tanh":
        return torch.tanh
    if name == "softmax":
        return lambda x: torch.softmax(x, dim=1)
    raise ValueError(f"unknown activation {name!r}")  # the spec validator rejects it first


class LinearAct(nn.Linear):
    """``nn.Linear`` followed by an activation; keeps ``weight``/``bias`` as direct children so the
    state-dict names stay canonical. ``(N, in) -> (N, out)``."""

    def __init__(self, n_in: int, n_out: int, bias: bool, act: Fn | None):
        super().__init__(n_in, n_out, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return y if self.act is None else self.act(y)


class Conv2dAct(nn.Conv2d):
    """``nn.Conv2d`` (symmetric zero padding) followed by an activation.
    ``(N, C, H, W) -> (N, filters, H_out, W_out)``."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, pad: int, bias: bool, act: Fn | None
    ):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=pad, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x, self.weight, self.bias)
        return y if self.act is None else self.act(y)


class ActivationLayer(nn.Module):
    """A stand-alone ``activation`` layer (shape-preserving)."""

    def __init__(self, fn: Fn | None, name: str):
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.fn is None else self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class GlobalAvgPool2d(nn.Module):
    """``(N, C, H, W) -> (N, C)``: the mean over the spatial axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class ResidualBlock(nn.Module):
    """``out = act(body(x) + shortcut(x))``; shortcut = identity or a strided 1x1 conv with bias."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Conv2d | None, act: Fn | None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = self.body(x) + skip
        return y if self.act is None else self.act(y)


class MaskableDropout(nn.Dropout):
    """``nn.Dropout``; with ``keep`` set (a bool tensor ``(N, *sample)``: the conformance checks'
    seam, `fwbench_torch.trainer.TorchTrainer.use_dropout_masks`) that mask instead of a drawn one."""

    keep: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep is None or not self.training or self.p == 0.0:
            return super().forward(x)
        return torch.where(self.keep, x / (1.0 - self.p), torch.zeros((), dtype=x.dtype, device=x.device))


def _build_layer(info: LayerInfo, fold_softmax: bool) -> nn.Module:
    layer: Layer = info.layer
    if isinstance(layer, Dense | Conv2D):
        act_name = "linear" if fold_softmax and layer.activation == "softmax" else layer.activation
        act = activation_fn(act_name)
        if isinstance(layer, Dense):
            return LinearAct(info.in_shape[0], layer.units, layer.use_bias, act)
        return Conv2dAct(
            info.in_shape[0],
            layer.filters,
            layer.kernel,
            layer.stride,
            layer.pad,
            layer.use_bias,
            act,
        )
    if isinstance(layer, AvgPool):  # before MaxPool: AvgPool subclasses it in the spec
        return nn.AvgPool2d(layer.size, layer.step)
    if isinstance(layer, MaxPool):
        return nn.MaxPool2d(layer.size, layer.step)
    if isinstance(layer, GlobalAvgPool):
        return GlobalAvgPool2d()
    if isinstance(layer, Flatten):
        return nn.Flatten(start_dim=1)  # C-major, the canonical order
    if isinstance(layer, BatchNorm):
        cls = nn.BatchNorm2d if len(info.in_shape) == 3 else nn.BatchNorm1d
        return cls(info.in_shape[0], eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, Dropout):
        return MaskableDropout(layer.rate)
    if isinstance(layer, Activation):
        name = "linear" if fold_softmax and layer.fn == "softmax" else layer.fn
        return ActivationLayer(activation_fn(name, layer.alpha), name)
    if isinstance(layer, Residual):
        body = nn.Sequential(*(_build_layer(child, False) for child in info.children))
        shortcut = None
        if info.out_shape != info.in_shape:
            shortcut = nn.Conv2d(
                info.in_shape[0], info.out_shape[0], 1, stride=shortcut_stride(info), bias=True
            )
        act_name = "linear" if fold_softmax and layer.activation == "softmax" else layer.activation
        return ResidualBlock(body, shortcut, activation_fn(act_name))
    raise ValueError(f"the torch backend has no implementation of layer type {layer.kind!r}")


def build_module(info: ModelInfo, fold_softmax: bool = True) -> nn.Sequential:
    """The model as an ``nn.Sequential`` whose child ``i`` is spec layer ``i``; outputs logits.

    Args:
        info: the suite's analysis of the spec (shapes per layer).
        fold_softmax: drop a softmax on the last layer (it lives in the cross-entropy loss).
    """
    last = len(info.layers) - 1
    return nn.Sequential(
        *(_build_layer(li, fold_softmax and i == last) for i, li in enumerate(info.layers))
    )


@dataclass(frozen=True)
class Entry:
    """One canonical array: its torch tensor and whether the layouts differ by a transpose."""

    name: str
    tensor: torch.Tensor
    transpose: bool
    trainable: bool
    frozen: bool = False


class CanonicalMap:
    """Canonical name <-> torch parameter/buffer, with the layout conversions.

    Raises:
        RuntimeError: the module and the analysis disagree (a bug in this backend).
    """

    def __init__(self, module: nn.Module, info: ModelInfo):
        self.info = info
        tensors = dict(module.named_parameters())
        tensors.update(
            (n, b) for n, b in module.named_buffers() if not n.endswith("num_batches_tracked")
        )
        self.entries: list[Entry] = []
        for layer_info in info.walk():
            for p in layer_info.params:
                prefix, _, leaf = p.name.rpartition(".")
                torch_leaf = {"gamma": "weight", "beta": "bias"}.get(p.role, leaf)
                torch_name = f"{prefix}.{torch_leaf}"
                if torch_name not in tensors:
                    raise RuntimeError(
                        f"the torch model has no tensor {torch_name!r} for {p.name}; "
                        "the torch model builder and fwbench.model disagree"
                    )
                tensor = tensors.pop(torch_name)
                transpose = isinstance(layer_info.layer, Dense) and p.role == "weight"
                expected = p.shape[::-1] if transpose else p.shape
                if tuple(tensor.shape) != tuple(expected):
                    raise RuntimeError(
                        f"torch tensor for {p.name} has shape {tuple(tensor.shape)}, "
                        f"expected {expected}: the torch model builder is out of date"
                    )
                self.entries.append(Entry(p.name, tensor, transpose, p.trainable, p.frozen))
        if tensors:
            raise RuntimeError(
                f"torch tensors without a canonical name: {sorted(tensors)}; "
                "the torch model builder and fwbench.model disagree"
            )
        self.by_name = {e.name: e for e in self.entries}

    def get(self) -> dict[str, np.ndarray]:
        """Every array as a NumPy copy in canonical layout."""
        out = {}
        for e in self.entries:
            t = e.tensor.detach()
            out[e.name] = np.ascontiguousarray((t.T if e.transpose else t).cpu().numpy()).copy()
        return out

    @torch.no_grad()
    def set(self, weights: dict[str, np.ndarray]) -> None:
        """Copy canonical arrays into the module (dtype/device converted; shapes checked).

        Raises:
            fwbench.errors.WeightsError: a name is missing or unknown, or a shape is wrong.
        """
        check_weights(self.info, weights)  # the core's one check
        for name, array in weights.items():
            e = self.by_name[name]
            src = torch.as_tensor(np.asarray(array))
            src = src.T if e.transpose else src
            if tuple(src.shape) != tuple(e.tensor.shape):
                layout = tuple(array.shape)
                raise ValueError(
                    f"weight {name!r} has shape {layout}; expected "
                    f"{tuple(e.tensor.shape)[::-1] if e.transpose else tuple(e.tensor.shape)}"
                )
            e.tensor.copy_(src)

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the trainable arrays, canonical layout (zeros where no grad was made)."""
        out = {}
        for e in self.entries:
            if not e.trainable:
                continue
            g = e.tensor.grad
            g = torch.zeros_like(e.tensor) if g is None else g.detach()
            out[e.name] = np.ascontiguousarray((g.T if e.transpose else g).cpu().numpy()).copy()
        return out
