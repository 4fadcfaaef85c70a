"""`NumpyTrainer`: one model and optimizer, driven step by step by the suite."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from fwbench import precision
from fwbench.backend import BuildRequest, Trainer

from . import layers as L
from .losses import SoftmaxCrossEntropy
from .model import NumpyModel
from .optim import clip_by_global_norm, clip_by_value, make_optimizer
from .precision import DynamicLossScale, apply_policy

#: Evaluation splits large batches into chunks whose forward needs at most about this much memory.
EVAL_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class NumpyBatch:
    """A batch in the model's internal layout (see `NumpyModel.to_internal`) and its labels."""

    x: np.ndarray
    y: np.ndarray


class NumpyTrainer(Trainer):
    """Forward, fused loss, hand-written backward, clipping and an optimizer step, all in NumPy.

    Args:
        request: the suite's build request; ``request.weights`` are loaded as initial weights.
    """

    def __init__(self, request: BuildRequest):
        task = request.task
        self.task = task
        self.dtype = np.dtype(task.training.dtype)
        self.model = NumpyModel(request.info, self.dtype, seed=task.training.seed)
        self.model.set_weights(request.weights)
        self.policy = precision.of_task(task)
        apply_policy(self.model.layers, self.policy)  # bf16/fp16: round where the policy rounds
        self.loss_scale = DynamicLossScale() if self.policy.loss_scaling else None
        self.optimizer = make_optimizer(task.optimizer, [self.model.flat_params],
                                        [self.model.flat_grads])
        self.loss = SoftmaxCrossEntropy(self.dtype)
        self.clip = task.clip
        #: predict() runs at most this many samples at once: what fits EVAL_CHUNK_BYTES, but never
        #: fewer than a training batch (whose buffers exist anyway).
        self.eval_chunk = max(task.training.batch_size,
                              EVAL_CHUNK_BYTES // max(1, self.model.bytes_per_sample()))
        self.compile_info = {"mode": "eager", "dtype": self.dtype.name,
                             "layout": "CHWN" if self.model.input_layout == "image" else "NF",
                             "precision": precision.in_force(
                                 self.policy, how="rounded with ml_dtypes where the policy rounds"
                                 if self.policy.mixed else "float32")}

    def use_dropout_masks(self, keep: dict[str, np.ndarray]) -> None:
        """Check-only seam (`fwbench.conformance.dropout`): every following train-mode forward
        uses these keep masks (bool, canonical layout ``(N, *sample)``, by dropout layer path)
        instead of drawing its own; the layer still scales by ``1 / (1 - rate)``."""
        for layer in L.walk(self.model.layers):
            if isinstance(layer, L.Dropout):
                layer.keep = None if keep.get(layer.path) is None else np.asarray(keep[layer.path], bool)

    # -- data ------------------------------------------------------------------------------------
    def to_device(self, x: np.ndarray, y: np.ndarray) -> NumpyBatch:
        """Convert once (untimed): images to ``(C, H, W, N)`` in the model dtype, labels to int64."""
        labels = np.ascontiguousarray(y, dtype=np.int64)
        classes = self.model.info.output_shape[0]
        if labels.shape != (len(x),) or (labels.size and not 0 <= labels.min() <= labels.max() < classes):
            raise ValueError(f"labels must be {len(x)} integers in [0, {classes}); got shape "
                             f"{labels.shape}, range [{labels.min()}, {labels.max()}]")
        return NumpyBatch(self.model.to_internal(x), labels)

    def upload(self, x: np.ndarray, y: np.ndarray) -> NumpyBatch:
        """The whole split in the internal layout (host memory is this backend's device)."""
        return self.to_device(x, y)

    def take(self, resident: NumpyBatch, index: np.ndarray) -> NumpyBatch:
        if self.model.input_layout == "flat":
            return NumpyBatch(np.ascontiguousarray(resident.x[index]), resident.y[index])
        return NumpyBatch(np.ascontiguousarray(resident.x[..., index]), resident.y[index])

    def _batch(self, batch: Any) -> NumpyBatch:
        if isinstance(batch, NumpyBatch):
            return batch
        if isinstance(batch, tuple) and len(batch) == 2:
            return self.to_device(*batch)
        raise TypeError(f"expected a batch from to_device(x, y), got {type(batch).__name__}")

    # -- training --------------------------------------------------------------------------------
    def _forward_backward(self, batch: NumpyBatch) -> tuple[float, int, np.ndarray]:
        logits = self.model.forward(batch.x, training=True)
        loss, correct, dlogits = self.loss(logits, batch.y)
        if self.loss_scale is None:
            self.model.backward(dlogits)
        else:  # fp16: scale the loss gradient, unscale the float32 weight gradients
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow skips the step
                self.model.backward(dlogits * np.float32(self.loss_scale.scale))
            self.model.flat_grads /= np.float32(self.loss_scale.scale)
        return loss, correct, logits

    def _clip(self) -> None:
        kind = self.clip.kind
        if kind == "norm":
            clip_by_global_norm([self.model.flat_grads], self.clip.max)
        elif kind == "value":
            clip_by_value([self.model.flat_grads], self.clip.max)

    def train_step(self, batch: Any, lr: float) -> tuple[float, float]:
        """One step; returns ``(mean loss, number correct)`` as Python floats (already computed:
        `sync` has nothing to wait for)."""
        batch = self._batch(batch)
        loss, correct, _ = self._forward_backward(batch)
        if self.loss_scale is not None and not self.loss_scale.update(
                bool(np.isfinite(self.model.flat_grads).all())):
            return loss, float(correct)  # fp16 overflow: the step is skipped, the scale halved
        self._clip()
        self.optimizer.step(lr)
        return loss, float(correct)

    def loss_and_grads(self, batch: Any) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """Logits, mean loss and raw (unclipped) gradients in train mode; nothing is updated
        (BatchNorm running statistics are restored afterwards)."""
        batch = self._batch(batch)
        saved = {name: a.copy() for name, a in self.model.state.items()}
        try:
            loss, _, logits = self._forward_backward(batch)
            logits = logits.copy()
        finally:
            for name, a in saved.items():
                self.model.state[name][...] = a
        grads = {name: g.copy() for name, g in self.model.grads.items()}
        return logits, loss, grads

    # -- evaluation ------------------------------------------------------------------------------
    def kink_margin(self, batch: NumpyBatch) -> float:
        """The smallest non-zero |input| of any ReLU or leaky ReLU in a train-mode forward of
        ``batch`` (inf without one). Exact zeros are ties every framework computes alike, and its
        convention decides them; a value of ~1e-17 is rounding noise of an exact zero, whose sign
        each framework's summation order decides (conformance offsets the weights then)."""
        kinked = [layer for layer in L.walk(self.model.layers) if isinstance(layer, L.Activation)]
        for layer in kinked:
            layer.kink_margin = np.inf
        try:
            self.model.forward(batch.x, training=True)
            return min((layer.kink_margin for layer in kinked), default=np.inf)
        finally:
            for layer in kinked:
                layer.kink_margin = None

    def probe_rounding(self, seed: int) -> None:
        """From now on every layer's output, and every layer's input gradient in the backward pass,
        moves by one ulp (random signs from ``seed``) and batch statistics are summed sequentially:
        the conformance checks' model of another framework rounding the same ops differently."""
        self.model.rounding_probe = np.random.default_rng(seed)
        for layer in L.walk(self.model.layers):
            if isinstance(layer, L.BatchNorm):
                layer.sequential_sums = True

    def predict(self, batch: Any) -> np.ndarray:
        """Logits ``(N, classes)`` in eval mode, in chunks of at most ``eval_chunk`` samples.

        Accepts a batch from `to_device` or a canonical ``x`` array.
        """
        x = batch.x if isinstance(batch, NumpyBatch) else self.model.to_internal(batch)
        n = self.model.batch_size_of(x)
        if n <= self.eval_chunk:
            return self.model.forward(x, training=False).copy()
        out = np.empty((n, self.model.info.output_shape[0]), self.dtype)
        for start in range(0, n, self.eval_chunk):
            stop = min(n, start + self.eval_chunk)
            out[start:stop] = self.model.forward(self.model.slice_batch(x, start, stop), training=False)
        return out

    # -- weights ---------------------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        return self.model.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.model.set_weights(weights)

    def num_trainable(self) -> int:
        return self.model.num_trainable()
