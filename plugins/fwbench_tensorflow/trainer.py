"""`TensorflowTrainer`: one model + optimizer on one device, driven by the suite.

Compilation (``task.backend.compile``): ``true`` (default) makes the train step, prediction and
`loss_and_grads` each one ``tf.function(jit_compile=True)`` (XLA); ``"graph"`` the same
tf.functions without XLA (Grappler + oneDNN/cuDNN kernels); ``false`` runs eagerly, op by op.
Each tf.function has a fixed ``input_signature`` with an unknown batch dimension and the learning
rate as a scalar tensor, and is called through its one concrete function (`Compiled`): it is
traced once, a new learning rate never retraces, and XLA compiles once per batch size (the
suite's training batch size is constant; the evaluation batch size and a partial last evaluation
batch add one compilation each).

Frozen layers (``model.frozen``): their variables are created with ``trainable=False``, so they
are left out of ``trainable_variables``: no gradient is taken, no optimizer slot made, no weight
decay applied. A frozen BatchNorm still updates its running statistics in train mode (PyTorch's
semantics, unlike Keras' ``layer.trainable = False``, which also switches BN to inference mode).

Handles: `train_step` returns one ``(2,)`` device tensor ``[mean loss, correct]`` in the model's
dtype. `sync` reads it back to the host (``handle.numpy()``): a tf.function returns only after all
its stateful ops (the variable updates) have run or, on a GPU, been queued on the compute stream
before the device-to-host copy, so the read waits for the whole step. `fetch` stacks an epoch of
handles on the device and reads them in one copy.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
from fwbench import precision
from fwbench.backend import BuildRequest, Trainer, Unsupported

from .model import Network
from .optim import Optimizer, clip_gradients
from .options import compile_mode


class Batch(NamedTuple):
    """A batch on the device: ``x`` NHWC (or ``(N, F)``) in the model dtype, ``y`` int64 ``(N,)``."""

    x: tf.Tensor
    y: tf.Tensor


def cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy over the batch, computed stably from logits ``(N, classes)``."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def count_correct(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Number of rows whose arg-max equals the label, in ``logits.dtype``."""
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=y.dtype), y)
    return tf.reduce_sum(tf.cast(hits, logits.dtype))


class Compiled:
    """A tf.function with a fixed input signature, called through its one concrete function.

    Calling the ConcreteFunction skips tf.function's per-call argument binding and cache look-up
    (~100-150 us a call on this project's CPUs, 10-20% of an MLP step). It is traced on the first
    call, so tracing and XLA compilation both fall into the suite's first, separately timed step.
    """

    def __init__(self, function):
        self.function = function
        self._concrete = None

    def __call__(self, *args):
        if self._concrete is None:
            self._concrete = self.function.get_concrete_function()
        return self._concrete(*args)

    def tracing_count(self) -> int:
        return self.function.experimental_get_tracing_count()


class TensorflowTrainer(Trainer):
    """Built by `TensorflowBackend.build` from the suite's `BuildRequest`."""

    def __init__(self, request: BuildRequest):
        task = request.task
        self.task, self.info = task, request.info
        self.dtype = tf.as_dtype(task.training.dtype)
        self.gpu = request.device == "gpu"
        self.device = "/GPU:0" if self.gpu else "/CPU:0"
        self.mode = compile_mode(task.backend, task.source)
        self.policy = precision.of_task(task)
        if self.policy.name == "tf32":
            if not self.gpu:
                raise Unsupported("precision tf32 on the CPU (TensorFloat-32 is a GPU matmul mode)")
            tf.config.experimental.enable_tensor_float_32_execution(True)
        self.compute = tf.as_dtype(self.policy.compute_dtype) if self.policy.mixed else None
        with tf.device(self.device):
            #: fp16: the dynamic loss scale and the finite steps in a row (`fwbench.precision`)
            self.loss_scale = (tf.Variable(precision.LOSS_SCALE.initial, dtype=tf.float32, trainable=False),
                               tf.Variable(0, dtype=tf.int64, trainable=False)) if self.policy.loss_scaling else None
            self.model = Network(request.info, request.weights, self.dtype, xla=self.mode == "xla")
            self.optimizer = Optimizer(task.optimizer, self.model.trainable_variables)
        self._lr: tuple[float, tf.Tensor] | None = None  # last learning rate and its tensor
        self._keep: dict[str, tf.Tensor] | None = None  # dropout masks handed in (use_dropout_masks)

        sample = tuple(request.info.input_shape)
        if len(sample) == 3:  # (C, H, W) -> NHWC
            sample = (sample[1], sample[2], sample[0])
        x_spec = tf.TensorSpec((None, *sample), self.dtype, name="x")
        y_spec = tf.TensorSpec((None,), tf.int64, name="y")
        lr_spec = tf.TensorSpec((), self.dtype, name="lr")
        self._train = self._compile(self._train_step, (x_spec, y_spec, lr_spec))
        self._predict = self._compile(self._logits, (x_spec,))
        self._grads = self._compile(self._loss_and_grads, (x_spec, y_spec))
        self.compile_info = {"mode": self.mode, "layout": "NHWC",
                             "jit_compile": self.mode == "xla", "dtype": task.training.dtype,
                             "precision": precision.in_force(self.policy, how=(
                                 f"inputs and dense/conv2d weights cast to {self.policy.compute_dtype} "
                                 "(float32 variables, BatchNorm and loss in float32)"
                                 + (", dynamic loss scaling" if self.loss_scale else "") if self.compute
                                 else "enable_tensor_float_32_execution(True)" if self.policy.name == "tf32"
                                 else "float32, TF32 off"))}
        if self.gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")

    def _compile(self, fn, signature):
        if self.mode == "eager":
            return fn
        return Compiled(tf.function(fn, input_signature=signature, jit_compile=self.mode == "xla",
                                    autograph=False))  # plain Python control flow: nothing to convert

    # -- the traced functions -------------------------------------------------------------------
    def _step_seed(self) -> tf.Tensor:
        """Dropout seed of this step: (task seed, optimizer steps taken so far)."""
        seed = tf.constant(self.task.training.seed, tf.int64)
        return tf.stack([seed, self.optimizer.iterations.read_value()])

    def _train_step(self, x, y, lr):
        loss, logits, updates, grads = self._forward_backward(x, y)
        if self.loss_scale is None:
            self.optimizer.apply(clip_gradients(grads, self.task.clip), lr)
        else:  # fp16: a step with inf/nan gradients is skipped and the scale lowered
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            tf.cond(finite, lambda: self._apply(grads, lr), tf.no_op)
            self._update_loss_scale(finite)
        for variable, value in updates:
            variable.assign(value)
        return tf.stack([loss, count_correct(logits, y)])

    def _forward_backward(self, x, y):
        """Loss, logits, BatchNorm updates and the (unscaled) gradients of one training batch."""
        with tf.GradientTape() as tape:
            logits, updates = self.model.forward(x, training=True, seed=self._step_seed(),
                                                 compute_dtype=self.compute, keep=self._keep)
            loss = cross_entropy(logits, y)
            scaled = loss if self.loss_scale is None else loss * self.loss_scale[0]
        grads = tape.gradient(scaled, self.model.trainable_variables)
        if self.loss_scale is not None:
            grads = [g / self.loss_scale[0] for g in grads]
        return loss, logits, updates, grads

    def _apply(self, grads, lr):
        self.optimizer.apply(clip_gradients(grads, self.task.clip), lr)
        return tf.no_op()

    def _update_loss_scale(self, finite):
        ls, (scale, good) = precision.LOSS_SCALE, self.loss_scale
        good_now = tf.where(finite, good + 1, tf.zeros_like(good))
        grow = good_now >= ls.growth_interval
        scale.assign(tf.where(finite, tf.where(grow, scale * ls.growth, scale), scale * ls.backoff))
        good.assign(tf.where(grow, tf.zeros_like(good), good_now))

    def _logits(self, x):
        return self.model.forward(x, training=False, compute_dtype=self.compute)[0]

    def _loss_and_grads(self, x, y):
        loss, logits, _, grads = self._forward_backward(x, y)
        return logits, loss, grads

    # -- the contract ---------------------------------------------------------------------------
    def to_device(self, x: np.ndarray, y: np.ndarray) -> Batch:
        """NCHW -> NHWC (a NumPy copy, once) and onto the device in the model dtype."""
        if tuple(x.shape[1:]) != tuple(self.info.input_shape):
            raise ValueError(f"batch samples have shape {x.shape[1:]}, the model was built for "
                             f"{self.info.input_shape} (canonical NCHW); check the dataset")
        x = np.asarray(x, dtype=self.dtype.as_numpy_dtype)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        with tf.device(self.device):
            return Batch(tf.constant(np.ascontiguousarray(x)), tf.constant(np.asarray(y, np.int64)))

    def upload(self, x: np.ndarray, y: np.ndarray) -> Batch:
        """The whole split on the device (refused when it will not fit in the GPU's memory)."""
        if self.gpu:
            from fwbench.datasets.pipeline import check_fits

            info = tf.config.experimental.get_memory_info("GPU:0")
            limit = (tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
                     .get("memory_limit"))
            check_fits(x.size * self.dtype.size + y.size * 8, None if limit is None else limit - info["current"],
                       "GPU")
        return self.to_device(x, y)

    def take(self, resident: Batch, index: np.ndarray) -> Batch:
        with tf.device(self.device):
            idx = tf.constant(np.asarray(index, np.int64))
            return Batch(tf.gather(resident.x, idx), tf.gather(resident.y, idx))

    def train_step(self, batch: Batch, lr: float) -> tf.Tensor:
        if self._keep is not None:  # a check's masks: eagerly, the traced functions never see them
            return self._train_step(batch.x, batch.y, self._lr_tensor(lr))
        return self._train(batch.x, batch.y, self._lr_tensor(lr))

    def use_dropout_masks(self, keep: dict[str, np.ndarray]) -> None:
        """Check-only seam (`fwbench.conformance.dropout`): every following train-mode forward
        uses these keep masks (bool, canonical layout ``(N, *sample)``, by dropout layer path)
        instead of drawing its own; the layer still scales by ``1 / (1 - rate)``. Such steps run
        eagerly (the same ops as the traced functions, which are not retraced)."""
        with tf.device(self.device):
            self._keep = {path: tf.constant(np.asarray(m, bool).transpose(0, 2, 3, 1) if np.ndim(m) == 4
                                            else np.asarray(m, bool)) for path, m in keep.items()} or None

    def _lr_tensor(self, lr: float) -> tf.Tensor:
        if self._lr is None or self._lr[0] != lr:  # reuse it while the schedule is constant
            with tf.device(self.device):
                self._lr = (lr, tf.constant(lr, self.dtype))
        return self._lr[1]

    def sync(self, handle: Any = None) -> None:
        if handle is not None:
            handle.numpy()  # a host read waits for the step (see the module docstring)
        elif self.gpu:
            tf.test.experimental.sync_devices()

    def fetch(self, handles: list[Any]) -> np.ndarray:
        if not handles:
            return np.zeros((0, 2))
        with tf.device(self.device):
            return tf.stack(handles).numpy().astype(np.float64)

    def predict(self, batch: Batch | tf.Tensor) -> np.ndarray:
        x = batch.x if isinstance(batch, Batch) else batch
        return self._predict(x).numpy()

    def loss_and_grads(self, batch: Batch) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        grads_fn = self._grads if self._keep is None else self._loss_and_grads  # masks: eagerly
        logits, loss, grads = grads_fn(batch.x, batch.y)
        names = self.model.trainable_names
        return logits.numpy(), float(loss), {
            name: self.model.to_canonical(name, g.numpy()) for name, g in zip(names, grads, strict=True)}

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model.export()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.model.load(weights)

    def num_trainable(self) -> int:
        return sum(v.shape.num_elements() for v in self.model.trainable_variables)

    def peak_device_memory(self) -> int | None:
        if not self.gpu:
            return None
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])

    def tracing_counts(self) -> dict[str, int]:
        """How often each tf.function was traced (0 in eager mode); for tests and diagnostics."""
        return {name: fn.tracing_count() if isinstance(fn, Compiled) else 0
                for name, fn in (("train", self._train), ("predict", self._predict),
                                 ("loss_and_grads", self._grads))}
