"""`OnnxTrainer`: an onnxruntime session that answers `predict`; it does not train."""
from __future__ import annotations

from typing import Any

import numpy as np
from fwbench.backend import BuildRequest, Trainer, Unsupported

from .graph import build_model

TRAINING = "training: onnxruntime serves models only (run it with --scenario inference)"


class OnnxTrainer(Trainer):
    """The neutral model as an ONNX graph (`fwbench_onnxruntime.graph`) in one inference session.

    Args:
        request: the suite's build request; ``request.weights`` become the graph's initializers.
        providers: onnxruntime execution providers, in order of preference.
        options: the session options (threads).
    """

    def __init__(self, request: BuildRequest, providers: list[str], options: Any):
        if request.task.training.dtype != "float32":
            raise Unsupported(f"{request.task.training.dtype}: this backend serves float32 graphs only")
        self.info = request.info
        self.dtype = np.dtype(request.task.training.dtype)
        self.providers, self.options = providers, options
        self.compile_info = {"mode": "onnxruntime", "providers": list(providers)}
        self.set_weights(request.weights)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """New weights mean a new graph and session (initializers are constants of the graph)."""
        import onnxruntime as ort

        known = {p.name: p for p in self.info.params}
        missing = sorted(set(known) - set(weights))
        if missing:
            raise KeyError(f"set_weights needs every array of the model; missing {missing}")
        self.weights = {n: np.array(weights[n], dtype=self.dtype) for n in known}
        model = build_model(self.info, self.weights, str(self.dtype))
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=self.options,
                                            providers=self.providers)
        self.compile_info["providers_used"] = self.session.get_providers()

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: w.copy() for n, w in self.weights.items()}

    def num_trainable(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.info.params if p.trainable)

    def to_device(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The input ``(N, *input_shape)`` as a contiguous float32 array (the session copies it in)."""
        return np.ascontiguousarray(x.reshape(len(x), *self.info.input_shape), dtype=self.dtype)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": batch})[0]

    def train_step(self, batch: Any, lr: float) -> Any:
        raise Unsupported(TRAINING)
