"""`KerasTrainer`: a Keras functional model compiled with a Keras optimizer, stepped by Keras.

What is timed is a Keras user's step: ``model.train_on_batch(x, y)`` on a model compiled with
``model.compile(optimizer, SparseCategoricalCrossentropy(from_logits=True),
[SparseCategoricalAccuracy()], jit_compile=...)``. ``train_on_batch`` returns the batch's loss and
accuracy as host NumPy values, so every step ends in a device sync, as it does for a Keras user;
the handle is ``(loss, correct)`` already on the host.

The learning rate of each step is assigned to the optimizer's ``learning_rate`` variable before
the step when it changed (a Keras ``LearningRateScheduler`` callback does the same once per
epoch); it is a variable of the compiled step, so a new value never recompiles.

Batches are converted to the engine's own tensors (``keras.ops.convert_to_tensor``, channels
last) in `to_device`, outside the timed region.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from fwbench import precision
from fwbench.backend import BuildRequest, Trainer, Unsupported
from fwbench.model import check_weights

from .conventions import differences, tensorflow_remapper_fault
from .model import build_model, images_in
from .optim import make_optimizer
from .options import KerasOptions


class KerasTrainer(Trainer):
    """One compiled Keras model on the engine Keras was loaded with."""

    def __init__(self, request: BuildRequest, options: KerasOptions):
        task = request.task
        self.task, self.options = task, options
        self.engine = keras.backend.backend()
        self.dtype = np.dtype(task.training.dtype)
        if self.engine == "jax" and self.dtype == np.float64:
            import jax

            jax.config.update("jax_enable_x64", True)
        keras.config.set_floatx(self.dtype.name)  # the optimizer's lr variable and the loss use it
        float64_matmul = _keep_float64(self.dtype)
        contiguous_kernels = _contiguous_conv_kernels(self.dtype)
        keras.utils.set_random_seed(task.training.seed)  # dropout masks
        exact = options.mode == "exact"
        self.info = request.info
        remapper = tensorflow_remapper_fault(task, options.mode) if self.engine == "tensorflow" else None
        if remapper:  # before any graph is traced; the cell's process only
            import tensorflow as tf

            tf.config.optimizer.set_experimental_options({"remapping": False})
        self.policy = precision.of_task(task)
        if self.policy.name == "tf32":
            if request.device != "gpu":
                raise Unsupported("precision tf32 on the CPU (TensorFloat-32 is a GPU matmul mode)")
            _enable_tf32(self.engine)
        #: the layers' Keras dtype policy: mixed_bfloat16 / mixed_float16 for bf16 / fp16
        layer_dtype = f"mixed_{self.policy.compute_dtype}" if self.policy.mixed else self.dtype.name
        built = build_model(request.info, layer_dtype, exact=exact, seed=task.training.seed)
        self.model, self.bindings = built.model, built.bindings
        self.set_weights(request.weights)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=self.dtype.name)
        optimizer = make_optimizer(task.optimizer, task.clip, exact)
        if self.policy.loss_scaling:
            ls = precision.LOSS_SCALE
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=ls.initial, dynamic_growth_steps=ls.growth_interval)
        from fwbench.execution import requested

        mode = requested(task.backend)  # the shared vocabulary decides over compile
        jit_compile = options.compile if mode is None else mode == "compiled"
        self.model.compile(optimizer=optimizer, loss=self.loss, run_eagerly=mode == "eager",
                           metrics=[keras.metrics.SparseCategoricalAccuracy(dtype=self.dtype.name)],
                           jit_compile=jit_compile)
        self.optimizer = self.model.optimizer
        self._lr = float(task.optimizer.lr)
        self._index = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        jit = bool(self.model.jit_compile)
        self.compile_info = {
            "mode": ("xla" if jit else "graph") if self.engine == "tensorflow" else (
                ("jit" if jit else "eager") if self.engine == "jax" else ("compile" if jit else "eager")),
            "jit_compile": jit, "jit_compile_requested": options.compile, "frontend": "keras",
            "engine": self.engine, "conventions": options.mode, "layout": "NHWC",
            "step": "model.train_on_batch",
            "differs": [] if exact else differences(task),
            "precision": precision.in_force(self.policy, how=(
                f"dtype policy {layer_dtype!r}" + (" + LossScaleOptimizer" if self.policy.loss_scaling else "")
                if self.policy.mixed else "TF32 enabled on the engine" if self.policy.name == "tf32"
                else "float32, TF32 off")),
        }
        if float64_matmul:
            self.compile_info["float64_matmul"] = float64_matmul
        if contiguous_kernels:
            self.compile_info["torch_conv_kernels"] = contiguous_kernels
        if remapper:
            self.compile_info["tf_optimizer_options"] = {"remapping": False, "why": remapper}

    # -- the suite's calls -----------------------------------------------------------------------
    def to_device(self, x: np.ndarray, y: np.ndarray):
        x = images_in(np.asarray(x, dtype=self.dtype))
        return (keras.ops.convert_to_tensor(x, dtype=self.dtype.name),
                keras.ops.convert_to_tensor(np.asarray(y, dtype=np.int32), dtype="int32"))

    def upload(self, x: np.ndarray, y: np.ndarray):
        """The whole split as the engine's tensors (``dataset.placement = "device"``)."""
        return self.to_device(x, y)

    def take(self, resident, index: np.ndarray):
        idx = keras.ops.convert_to_tensor(np.asarray(index, np.int32), dtype="int32")
        return keras.ops.take(resident[0], idx, axis=0), keras.ops.take(resident[1], idx, axis=0)

    def train_step(self, batch, lr: float):
        x, y = batch
        if float(lr) != self._lr:
            self._lr = float(lr)
            self.optimizer.learning_rate = self._lr
        loss, accuracy = self.model.train_on_batch(x, y)
        return float(loss), float(accuracy) * int(x.shape[0])

    def sync(self, handle: Any = None) -> None:
        """Nothing to wait for: `train_step` already returned host values."""

    def predict(self, batch) -> np.ndarray:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        return np.asarray(self.model.predict_on_batch(x), dtype=self.dtype)

    def loss_and_grads(self, batch):
        x, y = batch
        saved = [np.array(keras.ops.convert_to_numpy(v.value)) for v in self.model.non_trainable_variables]
        scale = float(keras.ops.convert_to_numpy(self.optimizer.scale_loss(1.0))) if self.policy.loss_scaling else 1.0
        logits, loss, grads = _engine_loss_and_grads(
            self.engine, self.model, lambda t, p: self.loss(t, p) * scale, x, y)
        loss = keras.ops.convert_to_numpy(loss) / scale
        for v, value in zip(self.model.non_trainable_variables, saved):  # no BN update leaks out
            v.assign(value)
        named = {}
        for b in self.bindings:
            i = self._index.get(id(b.variable))
            if i is not None:
                grad = np.asarray(keras.ops.convert_to_numpy(grads[i]), dtype=self.dtype) / scale
                named[b.name] = np.array(b.to_canonical(grad))
        return np.asarray(keras.ops.convert_to_numpy(logits), dtype=self.dtype), float(loss), named

    def get_weights(self) -> dict[str, np.ndarray]:
        return {b.name: np.array(b.to_canonical(np.asarray(keras.ops.convert_to_numpy(b.variable.value))))
                for b in self.bindings}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(self.info, weights)  # the core's one check (WeightsError)
        for b in self.bindings:
            b.variable.assign(np.ascontiguousarray(b.to_keras(np.asarray(weights[b.name], dtype=self.dtype))))

    def num_trainable(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.model.trainable_variables))


def _enable_tf32(engine: str) -> None:
    """TensorFloat-32 matmuls and convolutions on the Keras engine (GPU only)."""
    if engine == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(True)
    elif engine == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    else:
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32")


def _keep_float64(dtype: np.dtype) -> str | None:
    """Keras' type promotion (``keras.src.backend.common.dtypes``) turns a float64 result into
    float32 on the JAX and torch engines (JAX's default without x64), so a float64 model's
    matmuls would run in float32. For a float64 task (the conformance checks) this switches that
    demotion off for the process; float32 training is untouched."""
    if dtype != np.float64 or keras.backend.backend() == "tensorflow":
        return None
    from keras.src.backend.common import dtypes

    if dtypes.BIT64_TO_BIT32_DTYPE.get("float64") != "float64":
        dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
    return "Keras' float64 -> float32 result-type demotion disabled for this float64 task"


def _contiguous_conv_kernels(dtype: np.dtype) -> str | None:
    """Keras' torch engine hands ``conv2d`` its kernel as a permuted view ((kh, kw, in, out) read
    as (out, in, kh, kw)). On the CPU in float64 torch runs ``slow_conv2d``, whose backward
    refuses a non-contiguous weight ("slow_conv2d: grad_weight must be contiguous") when the
    layer has one filter, a kernel over 1x1 and more than one input channel (issue 21,
    tests/fixtures/conformance/frozen_batchnorm_pointwise_conv.toml). For a float64 task on the
    torch engine the permuted kernel is made contiguous (a copy, gradients flow through it);
    float32 training is untouched."""
    if dtype != np.float64 or keras.backend.backend() != "torch":
        return None
    from keras.src.backend.torch import nn

    transpose = nn._transpose_conv_kernel
    if not getattr(transpose, "fwbench_contiguous", False):
        def contiguous(kernel):
            return transpose(kernel).contiguous()

        contiguous.fwbench_contiguous = True
        nn._transpose_conv_kernel = contiguous
    return ("conv kernels made contiguous after Keras' permute: torch's float64 slow_conv2d backward "
            "refuses a permuted weight")


def _engine_loss_and_grads(engine: str, model, loss_fn, x, y):
    """Train-mode logits, mean loss and the gradient of every trainable variable (in order)."""
    if engine == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def f(tv, ntv, x, y):
            logits, _ = model.stateless_call(tv, ntv, x, training=True)
            return loss_fn(y, logits), logits

        # one jitted function, not the primitives one by one (each an XLA compile per new shape)
        (loss, logits), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(trainable, non_trainable, x, y)
        return logits, loss, grads
    if engine == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)
        return logits, loss, tape.gradient(loss, model.trainable_variables)
    import torch

    logits = model(x, training=True)
    loss = loss_fn(y, logits)
    grads = torch.autograd.grad(loss, [v.value for v in model.trainable_variables])
    return logits.detach(), loss.detach(), [g.detach() for g in grads]
