"""`FlaxTrainer`: an NNX model and ``nnx.Optimizer``, one ``nnx.jit`` train step.

The step is what a Flax user writes: ``nnx.value_and_grad`` of the loss over the module, then
``optimizer.update(model, grads, learning_rate=lr)``, inside ``nnx.jit`` (which splits and merges
the module graph on every call: that Python work is part of the frontend's cost and is timed).
BatchNorm statistics and dropout RNG state live in the module and are updated by the step.
Predictions use a second ``nnx.jit`` function on the module in eval mode.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from fwbench.backend import BuildRequest, Trainer
from fwbench.errors import DeviceError
from fwbench.model import check_weights

from .conventions import differences
from .model import build_model
from .optim import make_transform


def _loss(model, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


@nnx.jit
def train_step(model, optimizer, x, y, lr):
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    optimizer.update(model, grads, learning_rate=lr)
    return loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)


@nnx.jit
def eval_logits(model, x):
    return model(x)


@nnx.jit
def loss_and_grads(model, x, y):
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    return logits, loss, grads


class FlaxTrainer(Trainer):
    def __init__(self, request: BuildRequest, mode: str):
        task = request.task
        self.task, self.mode = task, mode
        self.dtype = np.dtype(task.training.dtype)
        if self.dtype == np.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        platform = "gpu" if request.device == "gpu" else "cpu"
        try:
            self.device = jax.devices(platform)[0]
        except RuntimeError as exc:
            raise DeviceError(f"JAX sees no {platform} device ({exc}); install a CUDA build of jax "
                              "or run with --device cpu") from None
        exact = mode == "exact"
        self.info = request.info
        with jax.default_device(self.device):
            self.model, self.bindings = build_model(request.info, self.dtype.type, exact=exact,
                                                    seed=task.training.seed)
            self.set_weights(request.weights)
            self.optimizer = nnx.Optimizer(self.model, make_transform(task.optimizer, task.clip, exact),
                                           wrt=nnx.Param)
        self._index = {id(b.variable): b for b in self.bindings}
        self.model.train()
        self.compile_info = {"mode": "jit", "step": "nnx.jit(value_and_grad + nnx.Optimizer.update)",
                             "frontend": "flax", "engine": "jax", "conventions": mode, "layout": "NHWC",
                             "differs": [] if exact else differences(task)}

    def to_device(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return jax.device_put((x, np.asarray(y, dtype=np.int32)), self.device)

    def train_step(self, batch, lr: float):
        x, y = batch
        return train_step(self.model, self.optimizer, x, y, jnp.asarray(lr, self.dtype))

    def sync(self, handle: Any = None) -> None:
        jax.block_until_ready(handle if handle is not None else nnx.state(self.model))

    def fetch(self, handles: list[Any]) -> np.ndarray:
        return np.asarray(jax.device_get(handles), dtype=np.float64).reshape(len(handles), 2)

    def predict(self, batch) -> np.ndarray:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        self.model.eval()
        try:
            return np.asarray(jax.device_get(eval_logits(self.model, x)))
        finally:
            self.model.train()

    def loss_and_grads(self, batch):
        x, y = batch
        clone = nnx.clone(self.model)  # BatchNorm statistics of the real model stay untouched
        logits, loss, grads = loss_and_grads(clone, x, y)
        saved = self.get_weights()
        nnx.update(self.model, grads)  # the gradients sit where their parameters were: read them
        out = {b.name: np.array(b.to_canonical(np.asarray(jax.device_get(b.variable.get_value()))))
               for b in self.bindings if isinstance(b.variable, nnx.Param)}
        self.set_weights(saved)
        return np.asarray(jax.device_get(logits)), float(loss), out

    def get_weights(self) -> dict[str, np.ndarray]:
        return {b.name: np.array(b.to_canonical(np.asarray(jax.device_get(b.variable.get_value()))))
                for b in self.bindings}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.info, weights)  # the core's one check (WeightsError)
        for b in self.bindings:
            value = np.ascontiguousarray(b.to_flax(np.asarray(weights[b.name], dtype=self.dtype)))
            b.variable.set_value(jax.device_put(value, self.device))

    def num_trainable(self) -> int:
        return int(sum(v.size for v in jax.tree.leaves(nnx.state(self.model, nnx.Param))))

    def peak_device_memory(self) -> int | None:
        if self.device.platform == "cpu":
            return None
        peak = (self.device.memory_stats() or {}).get("peak_bytes_in_use")
        return int(peak) if peak is not None else None
