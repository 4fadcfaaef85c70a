"""Framework-neutral layer specs: what a task's ``[[model.layers]]`` entries become.

Conventions every backend follows (the canonical layout):

* Activations are NCHW for images, ``(N, features)`` after ``flatten``; ``flatten`` of
  ``(C, H, W)`` is C-major (channel, then row, then column), as in PyTorch.
* ``dense.weight`` is ``(in, out)``, ``dense.bias`` is ``(out,)``.
* ``conv2d.weight`` is ``(out_channels, in_channels, kh, kw)`` (OIHW), ``conv2d.bias`` ``(out,)``.
  Padding is symmetric: ``"valid"`` = 0, ``"same"`` = ``(kernel - 1) // 2`` (odd kernels only),
  or an integer. Output size is ``(H + 2 * padding - kernel) // stride + 1``.
* ``batchnorm`` has trainable ``gamma``/``beta`` and state ``running_mean``/``running_var``
  (``(C,)``). Momentum follows PyTorch: ``running = (1 - momentum) * running + momentum * batch``;
  the running variance uses the unbiased batch variance; normalisation uses the biased one.
* ``dropout`` is inverted dropout (scaled by ``1 / (1 - rate)`` while training, identity at eval).
* A final ``softmax`` (as a layer or the ``activation`` of a last ``dense``, ``conv2d`` or
  ``residual`` block, `fwbench.model.ends_in_softmax`) before a ``cross_entropy`` loss is folded
  into the loss: backends return logits and compute a fused, numerically stable
  softmax-cross-entropy. A softmax anywhere else is applied.
* ``flatten`` is (C, H, W) order in every backend, channels-last ones included.
* ``batchnorm`` needs two values per channel in a training batch: ``batch_size = 1`` with a
  batchnorm over flat features (or a 1x1 image) is refused at plan time.
* ``residual``: ``out = activation(body(x) + shortcut(x))``; the shortcut is the identity when
  shapes agree, else (``projection = "auto"``) a 1×1 convolution with bias and the stride
  ``ceil(H_in / H_out)`` that maps ``C_in`` to ``C_out``. Its parameters are ``<path>.shortcut.*``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "linear")
INITS = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "normal", "uniform")


def positive(**extra):
    return {"min": 1, **extra}


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Base of every layer spec. ``kind`` is the TOML ``type``."""

    kind: ClassVar[str] = ""


@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    kind: ClassVar[str] = "dense"
    units: int = field(metadata=positive())
    activation: str = field(default="linear", metadata={"choices": ACTIVATIONS})
    use_bias: bool = True
    init: str | None = field(default=None, metadata={"choices": INITS})


@dataclass(frozen=True, kw_only=True)
class Conv2D(Layer):
    kind: ClassVar[str] = "conv2d"
    filters: int = field(metadata=positive())
    kernel: int = field(metadata=positive())
    stride: int = field(default=1, metadata=positive())
    padding: int | str = field(default="valid", metadata={"choices": ("valid", "same"), "min": 0})
    activation: str = field(default="linear", metadata={"choices": ACTIVATIONS})
    use_bias: bool = True
    init: str | None = field(default=None, metadata={"choices": INITS})

    @property
    def pad(self) -> int:
        """The symmetric padding in pixels."""
        if self.padding == "valid":
            return 0
        if self.padding == "same":
            return (self.kernel - 1) // 2
        return int(self.padding)


@dataclass(frozen=True, kw_only=True)
class MaxPool(Layer):
    kind: ClassVar[str] = "maxpool"
    size: int = field(default=2, metadata=positive())
    stride: int | None = field(default=None, metadata=positive())

    @property
    def step(self) -> int:
        return self.stride or self.size


@dataclass(frozen=True, kw_only=True)
class AvgPool(MaxPool):
    kind: ClassVar[str] = "avgpool"


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool(Layer):
    kind: ClassVar[str] = "global_avg_pool"


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True, kw_only=True)
class BatchNorm(Layer):
    kind: ClassVar[str] = "batchnorm"
    momentum: float = field(default=0.1, metadata={"gt": 0.0, "max": 1.0})
    eps: float = field(default=1e-5, metadata={"gt": 0.0})


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    kind: ClassVar[str] = "dropout"
    rate: float = field(metadata={"min": 0.0, "lt": 1.0})


@dataclass(frozen=True, kw_only=True)
class Activation(Layer):
    kind: ClassVar[str] = "activation"
    fn: str = field(metadata={"choices": ACTIVATIONS})
    alpha: float = field(default=0.01, metadata={"min": 0.0})  # leaky_relu slope


@dataclass(frozen=True, kw_only=True)
class Residual(Layer):
    kind: ClassVar[str] = "residual"
    layers: tuple[Layer, ...] = ()
    projection: str = field(default="auto", metadata={"choices": ("auto", "none")})
    activation: str = field(default="relu", metadata={"choices": ACTIVATIONS})


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (Dense, Conv2D, MaxPool, AvgPool, GlobalAvgPool, Flatten, BatchNorm, Dropout,
                Activation, Residual)
}
