"""`JaxTrainer`: one jitted train step over an explicit state pytree, driven by the suite.

The whole training state is one pytree, `TrainState` (params, BatchNorm statistics, optax state,
PRNG key). ``train_step`` is a single ``jax.jit`` function with
the state donated: forward, fused softmax cross-entropy, gradients, clipping, update, and the
``(loss, correct)`` device scalars, with no host round-trip. The learning rate is a traced scalar
argument, so a schedule never recompiles.

Compilation is ahead of time (``.lower(...).compile()``) at the first step of each batch shape
(the suite reports that step apart); its seconds are summed in ``compile_info["compile_s"]``.
"""
from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from fwbench import precision
from fwbench.backend import BuildRequest, Trainer, Unsupported
from fwbench.errors import DeviceError
from jax import lax

from .layout import to_numpy_canonical
from .model import PRECISION, Model, count_params, split_weights
from .optim import Optimizer
from .options import jax_options


class TrainState(NamedTuple):
    """Everything a train step reads and replaces."""

    params: dict[str, jax.Array]
    bn: dict[str, jax.Array]  # BatchNorm statistics and frozen parameters (no grads, no updates)
    opt: Any
    key: jax.Array
    #: fp16 only: ``(scale, finite steps in a row)`` of dynamic loss scaling; None otherwise.
    loss_scale: Any = None


class JaxTrainer(Trainer):
    """Model + optax optimizer on one JAX device. Batches are ``(x, y)`` device arrays."""

    def __init__(self, request: BuildRequest):
        task = request.task
        self.task = task
        self.dtype = np.dtype(task.training.dtype)
        if self.dtype == np.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)  # process-wide; float32 models stay float32
        self.jit, self.layout = jax_options(task.backend, task.source)
        self.info = request.info
        self.policy = precision.of_task(task)
        if self.policy.gpu_only and request.device != "gpu":
            raise Unsupported(f"precision {self.policy.name} on the CPU (TensorFloat-32 is a GPU matmul mode)")
        #: bf16/fp16: the dtype parameters (BatchNorm's excepted) and inputs are cast to in the step
        self.compute = jnp.dtype(self.policy.compute_dtype) if self.policy.mixed else None
        self.model = Model(request.info, self.layout, lax.Precision.DEFAULT
                           if self.policy.name == "tf32" else PRECISION)
        platform = "gpu" if request.device == "gpu" else "cpu"
        try:
            self.device = jax.devices(platform)[0]
        except RuntimeError as exc:
            raise DeviceError(f"JAX sees no {platform} device ({exc}); install a CUDA build of jax "
                              "(pip install 'jax[cuda12]') or run with --device cpu") from None
        self.optimizer = Optimizer(task.optimizer, task.clip)

        params, bn = split_weights(request.info, request.weights, self.layout, task.training.dtype)
        with jax.default_device(self.device):
            scale = precision.LOSS_SCALE
            loss_scale = ((jnp.float32(scale.initial), jnp.int32(0))
                          if self.policy.loss_scaling else None)
            state = TrainState(params, bn, self.optimizer.init(params),
                               jax.random.key(task.training.seed), loss_scale)
        self._state: TrainState = jax.device_put(state, self.device)

        #: How often the train step was traced (a changing learning rate must not add any).
        self.traces = 0
        self._keep: dict[str, Any] | None = None  # dropout masks handed in (use_dropout_masks)
        self._compiled: dict[tuple, Any] = {}
        if self.jit:
            self._step = jax.jit(self._train_step, donate_argnums=0)
            self._eval = jax.jit(self._eval_logits)
            self._grads = jax.jit(self._loss_and_grads)
        else:
            self._step, self._eval, self._grads = self._train_step, self._eval_logits, self._loss_and_grads
        self.compile_info = {"mode": "jit" if self.jit else "eager", "layout": self.layout.name,
                             "donate_state": self.jit, "compile_s": 0.0, "compilations": 0,
                             "precision": precision.in_force(self.policy, how=(
                                 f"params and inputs cast to {self.policy.compute_dtype} in the step "
                                 "(float32 masters, BatchNorm and loss in float32)" if self.compute else
                                 "lax.Precision.DEFAULT (TF32)" if self.policy.name == "tf32" else
                                 "lax.Precision.HIGHEST"))}

    # -- pure functions (traced by jax.jit) ------------------------------------------------------
    def _cast(self, params, x):
        """bf16/fp16: parameters (not BatchNorm's gamma/beta) and the input in the compute dtype."""
        if self.compute is None:
            return params, x
        low = {name: p if name.endswith((".gamma", ".beta")) else p.astype(self.compute)
               for name, p in params.items()}
        return low, x.astype(self.compute)

    def _apply(self, params, bn, x, *, train, key=None):
        """Logits in float32 (the loss in float32) and the new BatchNorm state in its own dtype."""
        params, x = self._cast(params, x)
        logits, new_bn = self.model.apply(params, bn, x, train=train, key=key)
        new_bn = {name: a.astype(bn[name].dtype) if name in bn else a for name, a in new_bn.items()}
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), new_bn

    def _loss(self, params, bn, x, y, key, scale=None):
        logits, new_bn = self._apply(params, bn, x, train=True, key=key)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        scaled = loss if scale is None else loss * scale
        return scaled, (loss, logits, new_bn)

    def _train_step(self, state: TrainState, x, y, lr, keep=None):
        self.traces += 1  # runs at trace time only under jit
        key, dropout_key = self._split(state.key)
        if keep is not None:  # masks handed in (use_dropout_masks)
            dropout_key = keep
        scale = None if state.loss_scale is None else state.loss_scale[0]
        (_, (loss, logits, bn)), grads = jax.value_and_grad(self._loss, has_aux=True)(
            state.params, state.bn, x, y, dropout_key, scale)
        if scale is not None:
            grads = jax.tree.map(lambda g: g / scale, grads)
        updates, opt = self.optimizer.update(grads, state.opt, state.params, lr)
        params = optax.apply_updates(state.params, updates)
        loss_scale = state.loss_scale
        if scale is not None:  # fp16: skip a step with inf/nan gradients, adapt the scale
            finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
            params = jax.tree.map(lambda new, old: jnp.where(finite, new, old), params, state.params)
            opt = jax.tree.map(lambda new, old: jnp.where(finite, new, old), opt, state.opt)
            loss_scale = _next_loss_scale(scale, state.loss_scale[1], finite)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
        return TrainState(params, bn, opt, key, loss_scale), (loss, correct)

    def _split(self, key):
        """``(next key, this step's dropout key)``; no PRNG work for a model without dropout."""
        return tuple(jax.random.split(key)) if self.model.has_dropout else (key, None)

    def _eval_logits(self, params, bn, x):
        return self._apply(params, bn, x, train=False)[0]

    def _loss_and_grads(self, params, bn, x, y, key, scale=None):
        (_, (loss, logits, _)), grads = jax.value_and_grad(self._loss, has_aux=True)(
            params, bn, x, y, key, scale)
        if scale is not None:
            grads = jax.tree.map(lambda g: g / scale, grads)
        return logits, loss, grads

    # -- the suite's calls -----------------------------------------------------------------------
    def to_device(self, x: np.ndarray, y: np.ndarray):
        """``(x, y)`` on the device: x in the model's layout and dtype, y int32. Returns once the
        copy is done: ``device_put`` is asynchronous, and a copy still in flight would overlap
        the first timed steps and be missing from the suite's ``host_copy_s``."""
        x = np.ascontiguousarray(self.layout.images_in(np.asarray(x, dtype=self.dtype)))
        return jax.block_until_ready(jax.device_put((x, np.asarray(y, dtype=np.int32)), self.device))

    def upload(self, x: np.ndarray, y: np.ndarray):
        """The whole split on the device (refused when it will not fit in the device's free memory)."""
        if self.device.platform != "cpu":
            from fwbench.datasets.pipeline import check_fits

            stats = self.device.memory_stats() or {}
            limit = stats.get("bytes_limit")
            free = None if limit is None else limit - stats.get("bytes_in_use", 0)
            check_fits(x.size * self.dtype.itemsize + y.size * 4, free, "GPU")
        return self.to_device(x, y)

    def take(self, resident, index: np.ndarray):
        idx = jax.device_put(np.asarray(index, np.int32), self.device)
        return _gather(resident[0], idx), _gather(resident[1], idx)

    def _executable(self, x, y):
        """The AOT-compiled step for this batch shape; compiles (timed) on first sight."""
        # x64 changes the type of the Python-float lr argument: it is part of the signature
        signature = (x.shape, x.dtype, y.shape, y.dtype, jax.config.jax_enable_x64)
        executable = self._compiled.get(signature)
        if executable is None:
            start = time.perf_counter()
            # lr as a Python float: a weak-typed scalar, the cheapest argument to pass per call
            executable = self._step.lower(self._state, x, y, 0.0).compile()
            self.compile_info["compile_s"] += time.perf_counter() - start
            self.compile_info["compilations"] += 1
            self._compiled[signature] = executable
        return executable

    def train_step(self, batch, lr: float):
        x, y = batch
        if self._keep is not None:  # a check's masks: jit's own cache, not the timed executables
            self._state, handle = self._step(self._state, x, y, float(lr), self._keep)
            return handle
        step = self._executable(x, y) if self.jit else self._step
        self._state, handle = step(self._state, x, y, float(lr))
        return handle

    def use_dropout_masks(self, keep: dict[str, np.ndarray]) -> None:
        """Check-only seam (`fwbench.conformance.dropout`): every following train-mode forward
        uses these keep masks (bool, canonical layout ``(N, *sample)``, by dropout layer path)
        instead of drawing its own; the layer still scales by ``1 / (1 - rate)``."""
        self._keep = {path: jax.device_put(np.ascontiguousarray(self.layout.images_in(np.asarray(m, bool))),
                                           self.device) for path, m in keep.items()} or None

    def sync(self, handle: Any = None) -> None:
        jax.block_until_ready(self._state if handle is None else handle)

    def fetch(self, handles: list[Any]) -> np.ndarray:
        values = jax.device_get(handles)  # one transfer for the whole epoch
        return np.asarray(values, dtype=np.float64).reshape(len(handles), 2)

    def predict(self, batch) -> np.ndarray:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        logits = self._eval(self._state.params, self._state.bn, x)
        # np.asarray copies to the host and waits; jax.device_get does the same through a pytree
        # walk that cost ~24 µs a call at batch 1 (benchmarks/inference_loop.py)
        return np.asarray(logits)

    def loss_and_grads(self, batch):
        x, y = batch
        dropout_key = self._split(self._state.key)[1]  # the key the next step would use
        if self._keep is not None:
            dropout_key = self._keep
        scale = None if self._state.loss_scale is None else self._state.loss_scale[0]
        logits, loss, grads = self._grads(self._state.params, self._state.bn, x, y, dropout_key, scale)
        logits, loss, grads = jax.device_get((logits, loss, grads))
        return np.asarray(logits), float(loss), to_numpy_canonical(self.layout, grads)

    def get_weights(self) -> dict[str, np.ndarray]:
        params, bn = jax.device_get((self._state.params, self._state.bn))
        return to_numpy_canonical(self.layout, {**params, **bn})

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        params, bn = split_weights(self.info, weights, self.layout, self.dtype.name)
        params, bn = jax.device_put((params, bn), self.device)
        self._state = self._state._replace(params=params, bn=bn)

    def num_trainable(self) -> int:
        return count_params(self._state.params)

    def peak_device_memory(self) -> int | None:
        if self.device.platform == "cpu":
            return None
        stats = self.device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return int(peak) if peak is not None else None


def _next_loss_scale(scale, good, finite):
    """Dynamic loss scaling (`fwbench.precision.LOSS_SCALE`): ``(scale, finite steps in a row)``."""
    ls = precision.LOSS_SCALE
    good = jnp.where(finite, good + 1, 0)
    grow = good >= ls.growth_interval
    scale = jnp.where(finite, jnp.where(grow, scale * ls.growth, scale), scale * ls.backoff)
    return scale.astype(jnp.float32), jnp.where(grow, 0, good).astype(jnp.int32)


@jax.jit
def _gather(a, idx):
    """Rows ``idx`` of ``a`` on its device (``dataset.placement = "device"``)."""
    return jnp.take(a, idx, axis=0)
