"""The PyTorch backend plugin. Importing this module does not import torch (that happens when the
backend is configured or built), so ``bench list`` works where torch is missing."""

from __future__ import annotations

from fwbench.hookspecs import hookimpl

from .backend import TorchBackend


@hookimpl
def fwbench_register_backends(register):
    register.backend(TorchBackend())
