"""The framework-neutral model (`fwbench.model.ModelInfo`) as an ONNX graph, built node by node with
``onnx.helper``: no framework and no exporter in between, so the graph is the spec.

Canonical layouts map straight onto ONNX's: activations NCHW, ``conv2d.weight`` OIHW (``Conv``),
``dense.weight`` ``(in, out)`` (``Gemm`` without transposes), ``flatten`` C-major (``Flatten`` with
``axis=1``), BatchNorm in inference form (``BatchNormalization`` on the running statistics).
Dropout is the identity at inference and emits no node; a final softmax is dropped (the graph
returns logits, as every backend's ``predict`` does). Input ``x`` is ``(N, *input_shape)``, output
``logits`` ``(N, classes)``; the batch dimension is symbolic.
"""
from __future__ import annotations

import numpy as np
from fwbench import layers as L
from fwbench.backend import Unsupported
from fwbench.model import LayerInfo, ModelInfo, shortcut_stride

OPSET = 17
_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


class GraphBuilder:
    """Nodes and initializers of one graph; names are unique per layer path."""

    def __init__(self, weights: dict[str, np.ndarray], dtype: np.dtype):
        self.weights, self.dtype = weights, dtype
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}:{self._count}"

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=self.dtype), name))
        return name

    def param(self, name: str) -> str:
        return self.constant(name, self.weights[name])

    def node(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        from onnx import helper

        out = self._name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def activation(self, x: str, fn: str, path: str, alpha: float = 0.01) -> str:
        if fn == "linear":
            return x
        if fn in _UNARY:
            return self.node(_UNARY[fn], [x], f"{path}.{fn}")
        if fn == "leaky_relu":
            return self.node("LeakyRelu", [x], f"{path}.{fn}", alpha=float(alpha))
        if fn == "softmax":
            return self.node("Softmax", [x], f"{path}.softmax", axis=1)
        raise Unsupported(f"activation {fn!r} at {path}")

    def layer(self, info: LayerInfo, x: str, rank: int, final: bool) -> tuple[str, int]:
        """Emit ``info``'s nodes on ``x`` (of ``rank`` dims); returns the output and its rank."""
        spec, path = info.layer, info.path
        act = getattr(spec, "activation", None)
        if isinstance(spec, L.Dense):
            if rank > 2:
                x, rank = self.node("Flatten", [x], f"{path}.flatten", axis=1), 2
            inputs = [x, self.param(f"{path}.weight")]
            if spec.use_bias:
                inputs.append(self.param(f"{path}.bias"))
            x = self.node("Gemm", inputs, path)
        elif isinstance(spec, L.Conv2D):
            inputs = [x, self.param(f"{path}.weight")] + ([self.param(f"{path}.bias")] if spec.use_bias else [])
            x = self.node("Conv", inputs, path, kernel_shape=[spec.kernel] * 2, strides=[spec.stride] * 2,
                          pads=[spec.pad] * 4)
        elif isinstance(spec, L.AvgPool):  # before MaxPool: AvgPool subclasses it
            x = self.node("AveragePool", [x], path, kernel_shape=[spec.size] * 2, strides=[spec.step] * 2)
        elif isinstance(spec, L.MaxPool):
            x = self.node("MaxPool", [x], path, kernel_shape=[spec.size] * 2, strides=[spec.step] * 2)
        elif isinstance(spec, L.GlobalAvgPool):
            x = self.node("GlobalAveragePool", [x], path)
            x, rank = self.node("Flatten", [x], f"{path}.flatten", axis=1), 2
        elif isinstance(spec, L.Flatten):
            x, rank = self.node("Flatten", [x], path, axis=1), 2
        elif isinstance(spec, L.BatchNorm):
            x = self.node("BatchNormalization", [x, *(self.param(f"{path}.{k}") for k in
                                                     ("gamma", "beta", "running_mean", "running_var"))],
                          path, epsilon=float(spec.eps))
        elif isinstance(spec, L.Dropout):
            return x, rank  # the identity at inference
        elif isinstance(spec, L.Activation):
            return (x if final and spec.fn == "softmax" else self.activation(x, spec.fn, path, spec.alpha)), rank
        elif isinstance(spec, L.Residual):
            body, body_rank = x, rank
            for child in info.children:
                body, body_rank = self.layer(child, body, body_rank, final=False)
            shortcut = x
            if info.params:  # the 1x1 projection with bias, C_in -> C_out
                s = shortcut_stride(info)
                shortcut = self.node("Conv", [x, self.param(f"{path}.shortcut.weight"),
                                              self.param(f"{path}.shortcut.bias")], f"{path}.shortcut",
                                     kernel_shape=[1, 1], strides=[s, s], pads=[0, 0, 0, 0])
            x, rank = self.node("Add", [body, shortcut], f"{path}.add"), body_rank
        else:
            raise Unsupported(f"layer type {spec.kind!r} at {path}")
        if act and not (final and act == "softmax"):
            x = self.activation(x, act, path)
        return x, rank


def build_model(info: ModelInfo, weights: dict[str, np.ndarray], dtype: str = "float32"):
    """The ONNX ``ModelProto`` of ``info`` holding ``weights`` (canonical names and layouts)."""
    from onnx import TensorProto, checker, helper

    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[str(np.dtype(dtype))]
    builder = GraphBuilder(weights, np.dtype(dtype))
    x, rank = "x", 1 + len(info.input_shape)
    for i, layer in enumerate(info.layers):
        x, rank = builder.layer(layer, x, rank, final=i == len(info.layers) - 1)
    logits = builder.node("Identity", [x], "logits")
    graph = helper.make_graph(
        builder.nodes, "fwbench",
        [helper.make_tensor_value_info("x", elem, ["N", *info.input_shape])],
        [helper.make_tensor_value_info(logits, elem, ["N", *info.output_shape])],
        initializer=builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fwbench")
    model.ir_version = min(model.ir_version, 9)  # what the installed onnxruntime reads, at this opset
    checker.check_model(model)
    return model
