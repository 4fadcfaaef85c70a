"""The training loop every backend is driven by: epochs, schedule, timing, evaluation, early stopping.

Timing rules: only ``train_step`` calls + one ``sync`` sit between two clock reads; batches are
made and moved to the device before the epoch's clock starts. The first step (tracing,
compilation, allocator warm-up) is reported apart and excluded from steady-state statistics, and
short steps are timed in windows of at least 1 ms (`StepTimer`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import Trainer
from .datasets.pipeline import Prepared, epoch_batches, epoch_indices, eval_batches
from .measure.timing import TOO_SHORT_S, summarize, timing_warnings
from .model import ModelInfo
from .records import record as R
from .schedules import make_schedule
from .spec import TaskSpec


@dataclass
class EarlyStopper:
    """Keras-style early stopping on a validation metric, keeping the best weights."""

    monitor: str
    patience: int
    min_delta: float
    best: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    best_weights: dict[str, np.ndarray] | None = None

    def _score(self, value: float) -> float:  # lower is better internally
        return -value if self.monitor == "val_accuracy" else value

    def update(self, epoch: int, value: float, get_weights) -> bool:
        """Record one epoch's metric; True when training should stop."""
        score = self._score(value)
        if score < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            self.best_weights = get_weights()
            return False
        self.wait += 1
        return bool(self.patience) and self.wait >= self.patience


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample softmax cross-entropy from logits ``(N, K)`` and labels ``(N,)``, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(y)), y]


def evaluate(trainer: Trainer, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Loss, accuracy and predictions on a split, computed by the suite from the backend's logits."""
    if len(x) == 0:
        return {"loss": math.nan, "accuracy": math.nan, "pred": np.zeros(0, dtype=np.int64)}
    logits = np.concatenate([trainer.predict(trainer.to_device(xb, yb))
                             for xb, yb in eval_batches(x, y, batch_size)])
    pred = logits.argmax(axis=1)
    return {"loss": float(cross_entropy(logits, y).mean()), "accuracy": float((pred == y).mean()),
            "pred": pred}


#: Steady units after which `StepTimer` checks its window once more.
RECALIBRATE_AFTER = 20


@dataclass
class StepTimer:
    """Times train steps in units of at least ``min_unit_s``, with one device sync per unit.

    The first step is timed alone (tracing, compilation, allocation: ``first_step_s``); the next
    ``calibration`` steps are timed one by one (warm-up, not in the statistics) to pick a window of
    ``ceil(2 * min_unit_s / median)`` steps; every later unit of ``window`` steps gives one sample: its
    time divided by its steps. Units never cross an epoch (`flush`). After `RECALIBRATE_AFTER`
    steady units the window is widened once if the steady steps turned out shorter than the
    warm-up's (a warm-up slowed by a neighbour would leave every unit under ``min_unit_s``).
    """

    trainer: Trainer
    min_unit_s: float = TOO_SHORT_S
    calibration: int = 5
    first_step_s: float = math.nan
    window: int = 1
    samples: list[float] = field(default_factory=list)  # seconds per step, one per steady unit
    warmup: list[float] = field(default_factory=list)
    total_s: float = 0.0
    _pending: int = 0
    _t0: float = 0.0
    _recalibrated: bool = False

    def step(self, batch: Any, lr: float) -> Any:
        if not self._pending:
            self._t0 = time.perf_counter()
        handle = self.trainer.train_step(batch, lr)
        self._pending += 1
        if self._pending >= self.window:
            self._close(handle)
        return handle

    def flush(self, handle: Any) -> None:
        if self._pending:
            self._close(handle)

    def _close(self, handle: Any) -> None:
        self.trainer.sync(handle)
        elapsed = time.perf_counter() - self._t0
        self.total_s += elapsed
        per_step, self._pending = elapsed / self._pending, 0
        if math.isnan(self.first_step_s):
            self.first_step_s = elapsed
        elif len(self.warmup) < self.calibration:
            self.warmup.append(per_step)
            if len(self.warmup) == self.calibration:
                median = float(np.median(self.warmup))
                # aim at twice the minimum: warm-up steps can be faster than the steady state
                self.window = max(1, math.ceil(2 * self.min_unit_s / median)) if median > 0 else 1
        else:
            self.samples.append(per_step)
            if not self._recalibrated and len(self.samples) == RECALIBRATE_AFTER:
                # A warm-up slowed by a busy neighbour picks too small a window: widen it once.
                self._recalibrated = True
                median = float(np.median(self.samples))
                if 0 < median * self.window < self.min_unit_s:
                    self.window = math.ceil(2 * self.min_unit_s / median)

    @property
    def steady(self) -> list[float]:
        """Per-step seconds of the steady state (the warm-up ones if training was too short)."""
        return self.samples or self.warmup


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    final_weights: dict[str, np.ndarray] | None = None


def layer_grad_norms(grads: dict[str, np.ndarray]) -> dict[str, float]:
    """L2 norm of each layer's weight gradient, keyed by layer path (``"3"``, ``"4.shortcut"``).

    ``grads`` are `Trainer.loss_and_grads` gradients by canonical name; only ``*.weight`` arrays
    count (biases and BatchNorm vectors are left out), so frozen layers (no gradient) are absent.
    """
    return {name.removesuffix(".weight"): float(np.linalg.norm(np.asarray(g, dtype=np.float64)))
            for name, g in grads.items() if name.endswith(".weight")}


class GradNormProbe:
    """Per-layer weight-gradient norms on one fixed training batch (the first ``batch_size``
    samples of the training split, unshuffled), taken between epochs, outside the timed region."""

    def __init__(self, trainer: Trainer, data: Prepared, batch_size: int):
        n = min(batch_size, len(data.x_train))
        self.trainer = trainer
        self.batch = trainer.to_device(data.x_train[:n], data.y_train[:n])
        self.failed: str | None = None

    def __call__(self) -> dict[str, float] | None:
        if self.failed:
            return None
        try:
            _, _, grads = self.trainer.loss_and_grads(self.batch)
        except NotImplementedError:
            self.failed = ("training.record_grad_norms: this backend does not implement "
                           "Trainer.loss_and_grads; no gradient norms were recorded")
            return None
        return layer_grad_norms(grads)


def train(task: TaskSpec, trainer: Trainer, data: Prepared, info: ModelInfo,
          peak_flops: float | None = None, on_epoch=None, peak_precision: str | None = "fp32") -> TrainResult:
    """Train ``trainer`` on ``data`` as ``task`` says; return metrics for the record.

    ``peak_flops`` is the matmul peak in ``peak_precision`` (`fwbench.micro.peak`); a peak of another
    precision than the task's is not used (no percent of peak, no "too fast" check): a bf16 cell is
    never judged against the float32 peak.
    """
    tr = task.training
    bs = tr.batch_size
    if peak_precision != tr.precision:  # tf32 trains on a GPU only, whose tf32 peak is not measured yet
        peak_flops = None
    steps_per_epoch = len(data.x_train) // bs
    schedule = make_schedule(task.schedule, task.optimizer.lr, steps_per_epoch, steps_per_epoch * tr.epochs)
    es = tr.early_stopping
    stopper = EarlyStopper(es.monitor, es.patience, es.min_delta)
    warnings: list[str] = []
    history: list[dict[str, Any]] = []
    timer = StepTimer(trainer)
    step, host_copy_s, stopped_early = 0, 0.0, False
    time_to_accuracy = None
    probe = GradNormProbe(trainer, data, bs) if tr.record_grad_norms else None

    resident = None
    if task.dataset.placement == "device" and tr.epochs:  # the whole split, uploaded once
        t_copy = time.perf_counter()
        resident = trainer.upload(data.x_train, data.y_train)
        trainer.sync()
        host_copy_s += time.perf_counter() - t_copy

    for epoch in range(tr.epochs):
        t_copy = time.perf_counter()
        if resident is None:
            batches = [trainer.to_device(xb, yb) for xb, yb in
                       epoch_batches(data.x_train, data.y_train, bs, tr.seed, epoch, task.dataset.augment)]
        else:  # the same batches, gathered on the device
            batches = [trainer.take(resident, idx)
                       for idx in epoch_indices(len(data.x_train), bs, tr.seed, epoch)]
        trainer.sync()
        host_copy_s += time.perf_counter() - t_copy
        handles, lr = [], task.optimizer.lr
        for batch in batches:
            lr = schedule(step)
            handles.append(timer.step(batch, lr))
            step += 1
        if handles:
            timer.flush(handles[-1])
        train_clock = timer.total_s
        per_step = trainer.fetch(handles)
        val = evaluate(trainer, data.x_val, data.y_val, tr.eval_batch_size)
        row = {"epoch": epoch + 1, "train_loss": float(per_step[:, 0].mean()),
               "train_accuracy": float(per_step[:, 1].sum() / (len(batches) * bs)),
               "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": lr,
               "train_time_s": train_clock}
        if tr.eval_train:  # eval mode on the training split: the honest side of the gap
            seen = evaluate(trainer, data.x_train, data.y_train, tr.eval_batch_size)
            row.update(train_eval_loss=seen["loss"], train_eval_accuracy=seen["accuracy"])
        if probe is not None and (norms := probe()) is not None:
            row["grad_norms"] = norms
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if not math.isfinite(row["train_loss"]):
            warnings.append(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']}); "
                            "lower optimizer.lr or add clipping")
            break
        if tr.target_accuracy and time_to_accuracy is None and val["accuracy"] >= tr.target_accuracy:
            time_to_accuracy = train_clock
        if len(data.x_val) and stopper.update(epoch + 1, val[es.monitor.removeprefix("val_")],
                                              trainer.get_weights):
            stopped_early = True
            break

    restored = False
    if es.restore_best and stopper.best_weights is not None and stopper.best_epoch != len(history):
        trainer.set_weights(stopper.best_weights)
        restored = True
    test = evaluate(trainer, data.x_test, data.y_test, tr.eval_batch_size)
    step_times, first_step_s, train_clock = timer.steady, timer.first_step_s, timer.total_s
    stats = summarize(step_times)
    stats["steps_per_unit"] = timer.window
    flops_per_step = 3 * info.forward_flops * bs  # forward + backward ≈ 3x forward
    if tr.epochs:
        warnings += timing_warnings(stats, what="train step", flops=flops_per_step, peak_flops=peak_flops,
                                    unit_s=stats.get("median", 0.0) * timer.window)
    else:
        warnings.append("training.epochs = 0: evaluation only, nothing was trained or timed")
    if probe is not None and probe.failed:
        warnings.append(probe.failed)
    if data.synthetic:
        warnings.append("synthetic data: accuracy is meaningless, throughput only")

    median = stats.get("median", math.nan)
    steady = float(np.sum(step_times)) if step_times else math.nan  # per-step averages
    n_classes = int(max(data.y_test.max(initial=0), test["pred"].max(initial=0)) + 1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (data.y_test, test["pred"]), 1)
    compile_s = trainer.compile_info.get("compile_s")
    if compile_s is None and step_times:
        compile_s = max(0.0, first_step_s - median)
    metrics = {
        R.TEST_ACCURACY: test["accuracy"], "test_loss": test["loss"],
        "best_val": {"epoch": stopper.best_epoch, es.monitor: _unscore(stopper, es.monitor)},
        # headline: batch / median step time (robust); the CI comes from the median's CI
        R.THROUGHPUT: bs / median if step_times else math.nan,
        "throughput_mean_samples_per_s": bs * len(step_times) / steady if step_times else math.nan,
        R.THROUGHPUT_CI: [bs / stats["ci95_high"], bs / stats["ci95_low"]] if step_times else None,
        R.STEP_TIME: stats,
        R.FIRST_STEP: first_step_s,
        "compile_s": compile_s,
        "train_time_s": train_clock,
        "host_copy_s": host_copy_s,
        "placement": task.dataset.placement,
        "time_to_accuracy_s": time_to_accuracy,
        "target_accuracy": tr.target_accuracy,
        R.EPOCHS: len(history),
        "steps": step,
        "history": history,
        "early_stopping": {"stopped_early": stopped_early, "best_epoch": stopper.best_epoch,
                           "restored_best": restored, "monitor": es.monitor, "patience": es.patience},
        "flops_per_step": flops_per_step,
        "achieved_gflops": flops_per_step / median / 1e9 if step_times and median > 0 else None,
        "percent_of_peak": (100 * flops_per_step / median / peak_flops
                            if step_times and peak_flops and median > 0 else None),
        "peak_precision": peak_precision if peak_flops else None,  # the precision of the peak judged against
        "confusion_matrix": confusion.tolist(),
        "class_names": list(data.class_names),
    }
    if tr.eval_train:  # the final (restored) weights in eval mode: the train-validation gap
        seen = evaluate(trainer, data.x_train, data.y_train, tr.eval_batch_size)
        held = evaluate(trainer, data.x_val, data.y_val, tr.eval_batch_size)
        metrics.update(final_train_accuracy=seen["accuracy"], final_train_loss=seen["loss"],
                       final_val_accuracy=held["accuracy"], final_val_loss=held["loss"])
    return TrainResult(metrics, warnings, trainer.get_weights())


def _unscore(stopper: EarlyStopper, monitor: str) -> float | None:
    if stopper.best_epoch < 0:
        return None
    return -stopper.best if monitor == "val_accuracy" else stopper.best
