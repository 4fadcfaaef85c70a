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
from fwbench import precision
from fwbench.backend import BuildRequest, Trainer, Unsupported
from fwbench.errors import DeviceError
from fwbench.model import check_weights

from .conventions import differences
from .model import build_model
from .optim import make_transform


def _loss(model, x, y, scale=None):
    logits = model(x)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # the loss in float32
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return (loss if scale is None else loss * scale), (loss, logits)


@nnx.jit
def train_step(model, optimizer, x, y, lr):
    (_, (loss, logits)), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    optimizer.update(model, grads, learning_rate=lr)
    return loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)


@nnx.jit
def scaled_train_step(model, optimizer, x, y, lr, loss_scale):
    """fp16: the step with dynamic loss scaling; a step with inf/nan gradients changes no
    parameter and no optimizer state. Returns the handle and the next ``(scale, good steps)``."""
    scale, good = loss_scale
    (_, (loss, logits)), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y, scale)
    grads = jax.tree.map(lambda g: g / scale, grads)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    before = jax.tree.map(jnp.copy, (nnx.state(model, nnx.Param), nnx.state(optimizer)))  # a snapshot
    optimizer.update(model, grads, learning_rate=lr)
    after = nnx.state(model, nnx.Param), nnx.state(optimizer)
    nnx.update(model, jax.tree.map(lambda new, old: jnp.where(finite, new, old), after[0], before[0]))
    nnx.update(optimizer, jax.tree.map(lambda new, old: jnp.where(finite, new, old), after[1], before[1]))
    ls = precision.LOSS_SCALE
    good = jnp.where(finite, good + 1, 0)
    grow = good >= ls.growth_interval
    scale = jnp.where(finite, jnp.where(grow, scale * ls.growth, scale), scale * ls.backoff)
    return (loss, jnp.sum(jnp.argmax(logits, axis=-1) == y)), (scale, jnp.where(grow, 0, good))


def _functional(graphdef, state, x, y, lr):
    """The Flax performance-guide step: a pure function of the split state under ``jax.jit``
    (no graph traversal per call); returns the new state and the ``(loss, correct)`` handle."""
    model, optimizer = nnx.merge(graphdef, state)
    (_, (loss, logits)), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    optimizer.update(model, grads, learning_rate=lr)
    return nnx.state((model, optimizer)), (loss, jnp.sum(jnp.argmax(logits, axis=-1) == y))


functional_step = jax.jit(_functional, static_argnums=0, donate_argnums=1)


@nnx.jit
def eval_logits(model, x):
    logits = model(x)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


@nnx.jit
def loss_and_grads(model, x, y, scale=None):
    (_, (loss, logits)), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y, scale)
    if scale is not None:
        grads = jax.tree.map(lambda g: g / scale, grads)
    return logits, loss, grads


class FlaxTrainer(Trainer):
    def __init__(self, request: BuildRequest, mode: str):
        task = request.task
        self.task, self.mode = task, mode
        self._graphdef, self._fstate = None, None  # the functional step's split (see train_step)
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
        self.policy = precision.of_task(task)
        if self.policy.name == "tf32":
            if platform != "gpu":
                raise Unsupported("precision tf32 on the CPU (TensorFloat-32 is a GPU matmul mode)")
            jax.config.update("jax_default_matmul_precision", "tensorfloat32")
        compute = jnp.dtype(self.policy.compute_dtype) if self.policy.mixed else None
        #: fp16: ``(scale, finite steps in a row)`` of dynamic loss scaling, on the device
        self.loss_scale = ((jnp.float32(precision.LOSS_SCALE.initial), jnp.int32(0))
                           if self.policy.loss_scaling else None)
        with jax.default_device(self.device):
            self.model, self.bindings = build_model(request.info, self.dtype.type, exact=exact,
                                                    seed=task.training.seed, compute_dtype=compute)
            self.set_weights(request.weights)
            self.optimizer = nnx.Optimizer(self.model, make_transform(task.optimizer, task.clip, exact),
                                           wrt=nnx.Param)
        self._index = {id(b.variable): b for b in self.bindings}
        self.model.train()
        #: backend.step = "functional" (fp32/bf16; fp16's loss scaling runs the nnx.jit step):
        #: the split ``(graphdef, state)`` while training; merged back into the objects when read
        self.functional = task.backend.get("step") == "functional" and self.loss_scale is None
        self.compile_info = {"mode": "jit", "step": (
                                 "jax.jit(nnx.merge -> value_and_grad + update -> nnx.state), split once"
                                 if self.functional else "nnx.jit(value_and_grad + nnx.Optimizer.update)"),
                             "frontend": "flax", "engine": "jax", "conventions": mode, "layout": "NHWC",
                             "differs": [] if exact else differences(task),
                             "precision": precision.in_force(self.policy, how=(
                                 f"nnx.Linear/Conv dtype={self.policy.compute_dtype}, param_dtype=float32"
                                 + (", dynamic loss scaling" if self.loss_scale else "") if compute
                                 else "jax_default_matmul_precision=tensorfloat32"
                                 if self.policy.name == "tf32" else "float32"))}

    def to_device(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return jax.device_put((x, np.asarray(y, dtype=np.int32)), self.device)

    def upload(self, x: np.ndarray, y: np.ndarray):
        """The whole split on the device (``dataset.placement = "device"``)."""
        return jax.block_until_ready(self.to_device(x, y))

    def take(self, resident, index: np.ndarray):
        idx = jax.device_put(np.asarray(index, np.int32), self.device)
        return _gather(resident[0], idx), _gather(resident[1], idx)

    def train_step(self, batch, lr: float):
        x, y = batch
        if self.functional:
            if self._fstate is None:
                self._graphdef, self._fstate = nnx.split((self.model, self.optimizer))
            self._fstate, handle = functional_step(self._graphdef, self._fstate, x, y,
                                                   jnp.asarray(lr, self.dtype))
            return handle
        if self.loss_scale is not None:
            handle, self.loss_scale = scaled_train_step(self.model, self.optimizer, x, y,
                                                        jnp.asarray(lr, self.dtype), self.loss_scale)
            return handle
        return train_step(self.model, self.optimizer, x, y, jnp.asarray(lr, self.dtype))

    def _merge(self) -> None:
        """Put the functional step's state back into the module and optimizer objects."""
        if self._fstate is not None:
            nnx.update((self.model, self.optimizer), self._fstate)
            self._fstate = None

    def sync(self, handle: Any = None) -> None:
        if handle is None:
            self._merge()
        jax.block_until_ready(handle if handle is not None else nnx.state(self.model))

    def fetch(self, handles: list[Any]) -> np.ndarray:
        return np.asarray(jax.device_get(handles), dtype=np.float64).reshape(len(handles), 2)

    def predict(self, batch) -> np.ndarray:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        self._merge()
        self.model.eval()
        try:
            return np.asarray(eval_logits(self.model, x))  # a host copy that waits (no pytree walk)
        finally:
            self.model.train()

    def loss_and_grads(self, batch):
        x, y = batch
        self._merge()
        clone = nnx.clone(self.model)  # BatchNorm statistics of the real model stay untouched
        scale = None if self.loss_scale is None else self.loss_scale[0]
        logits, loss, grads = loss_and_grads(clone, x, y, scale)
        saved = self.get_weights()
        nnx.update(self.model, grads)  # the gradients sit where their parameters were: read them
        out = {b.name: np.array(b.to_canonical(np.asarray(jax.device_get(b.variable.get_value()))))
               for b in self.bindings if isinstance(b.variable, nnx.Param)}
        self.set_weights(saved)
        return np.asarray(jax.device_get(logits)), float(loss), out

    def get_weights(self) -> dict[str, np.ndarray]:
        self._merge()
        return {b.name: np.array(b.to_canonical(np.asarray(jax.device_get(b.variable.get_value()))))
                for b in self.bindings}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._merge()
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


@jax.jit
def _gather(a, idx):
    """Rows ``idx`` of ``a`` on its device (``dataset.placement = "device"``)."""
    return jnp.take(a, idx, axis=0)
