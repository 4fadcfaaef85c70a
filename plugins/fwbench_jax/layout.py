"""Image layouts: the canonical NCHW/OIHW one, or NHWC/HWIO converted once at load.

XLA's CPU convolutions run channels-last internally, so the NHWC layout skips the transposes XLA
otherwise inserts around convolutions and BatchNorm. Measured with ``benchmarks/jax_fidelity.py``
(jax 0.10.2, 2 shared cores, batch 128, median train step): resnet_cifar NHWC 180-460 ms vs
NCHW 200-630 ms, NHWC faster in 4 of 5 runs; a lone conv 3->32 3x3 on 32x32 is a tie within
noise (84-130 vs 72-146 ms). Hence NHWC is the default; ``task.backend.layout = "NCHW"`` keeps
the canonical layout. Only image batches and 4-D kernels differ between the two: dense weights,
biases, BatchNorm vectors, ``flatten`` order and everything `get_weights` returns are canonical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAYOUTS = ("NHWC", "NCHW")
DEFAULT_LAYOUT = "NHWC"


@dataclass(frozen=True)
class Layout:
    """Where the channel axis of an image batch lives, and the matching convolution layout."""

    name: str  # "NHWC" or "NCHW"

    @property
    def channel_axis(self) -> int:
        """Axis of channels in an image batch ``(N, ., ., .)``."""
        return 3 if self.name == "NHWC" else 1

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (1, 2) if self.name == "NHWC" else (2, 3)

    @property
    def conv_dimension_numbers(self) -> tuple[str, str, str]:
        """``dimension_numbers`` for `jax.lax.conv_general_dilated`."""
        return ("NHWC", "HWIO", "NHWC") if self.name == "NHWC" else ("NCHW", "OIHW", "NCHW")

    def window(self, size: int) -> tuple[int, int, int, int]:
        """A pooling window (or stride) of ``size`` over the spatial axes only."""
        return (1, size, size, 1) if self.name == "NHWC" else (1, 1, size, size)

    # -- conversions (NumPy or jax arrays; used for batches, weights and gradients alike) --------
    def images_in(self, x):
        """Canonical images ``(N, C, H, W)`` -> this layout."""
        return x.transpose(0, 2, 3, 1) if self.name == "NHWC" and x.ndim == 4 else x

    def images_out(self, x):
        """Images in this layout -> canonical ``(N, C, H, W)``."""
        return x.transpose(0, 3, 1, 2) if self.name == "NHWC" and x.ndim == 4 else x

    def param_in(self, array):
        """A canonical parameter -> this layout (OIHW kernels become HWIO)."""
        return array.transpose(2, 3, 1, 0) if self.name == "NHWC" and array.ndim == 4 else array

    def param_out(self, array):
        """A parameter (or its gradient) in this layout -> canonical (HWIO kernels become OIHW)."""
        return array.transpose(3, 2, 0, 1) if self.name == "NHWC" and array.ndim == 4 else array


def to_numpy_canonical(layout: Layout, tree: dict) -> dict[str, np.ndarray]:
    """``{name: array}`` in ``layout`` -> NumPy copies in the canonical layout."""
    return {name: np.array(layout.param_out(np.asarray(value))) for name, value in tree.items()}
