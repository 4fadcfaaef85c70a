"""The NumPy backend: forward and backward passes written by hand, the suite's numerical reference.

Modules: `backend` (the `Backend`), `trainer` (the `Trainer`), `model` (spec -> layers),
`layers` (forward/backward of each layer), `conv` (im2col/col2im and a naive oracle), `losses`,
`optim` (optimizers and clipping), `workspace` (reusable buffers).
"""
from __future__ import annotations

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_backends(register):
    """Register the ``numpy`` backend."""
    from .backend import NumpyBackend

    register.backend(NumpyBackend())
