"""The ONNX Runtime backend: the model built as an ONNX graph, served by onnxruntime. Inference only.

It is the suite's example of a *partial* backend (docs/plugins.md): `Backend.supports` declines the
training scenario (those cells are skipped with the reason), and the `Trainer` it builds answers
`predict` and the weight methods only. Modules: `backend` (the `Backend`), `graph` (the neutral
model as an ONNX graph with ``onnx.helper``, no framework exporter), `trainer` (the session).
"""
from __future__ import annotations

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_backends(register):
    """Register the ``onnxruntime`` backend."""
    from .backend import OnnxRuntimeBackend

    register.backend(OnnxRuntimeBackend())
