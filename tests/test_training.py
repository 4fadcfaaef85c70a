"""The suite's training loop, schedules and timing statistics, driven with scripted fake trainers."""
from __future__ import annotations

import time

import numpy as np
import pytest
from fwbench.backend import Trainer
from fwbench.datasets.pipeline import Prepared, epoch_batches
from fwbench.measure.timing import summarize, timing_warnings
from fwbench.model import analyze
from fwbench.schedules import make_schedule
from fwbench.spec import ScheduleSpec, task_from_dict
from fwbench.training import cross_entropy, train


def make_task(**training):
    raw = {
        "dataset": {"name": "synthetic", "validation_split": 0.25},
        "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "training": {"batch_size": 4, "epochs": 6, **training},
    }
    return task_from_dict(raw, "test.toml")


def make_data(n=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 2, 2)).astype(np.float32)
    y = rng.integers(0, 3, n)
    return Prepared(x, y, x[:8], y[:8], x[:8], y[:8], ("a", "b", "c"), False, {})


class ScriptedTrainer(Trainer):
    """A trainer with no maths: steps return instantly (or sleep); the weights after epoch k are [k]."""

    def __init__(self, step_seconds=0.0):
        self.epoch, self.steps, self.step_seconds = 0, 0, step_seconds
        self.weights = {"0.weight": np.zeros(1)}

    def to_device(self, x, y):
        return x, y

    def train_step(self, batch, lr):
        self.steps += 1
        if self.step_seconds:
            time.sleep(self.step_seconds)
        return 1.0, 0.0

    def predict(self, batch):
        return np.zeros((len(batch[1]), 3))

    def get_weights(self):
        return {k: v.copy() for k, v in self.weights.items()}

    def set_weights(self, weights):
        self.weights = {k: v.copy() for k, v in weights.items()}

    def num_trainable(self):
        return 1

    def fetch(self, handles):  # the suite calls this once per epoch, after its last step
        self.epoch += 1
        self.weights = {"0.weight": np.array([float(self.epoch)])}
        return super().fetch(handles)


def run_script(val_accuracies, patience, restore=True, monitor="val_accuracy"):
    """Epoch k reports val accuracy ``val_accuracies[k - 1]``; the weights after epoch k are [k]."""

    class Scripted(ScriptedTrainer):
        def predict(self, batch):  # right on the first acc * N samples, wrong on the rest
            _x, y = batch
            acc = val_accuracies[self.epoch - 1]
            n_right = round(acc * len(y))
            rows = np.arange(len(y))
            guess = np.where(rows < n_right, y, (y + 1) % 3)
            logits = np.zeros((len(y), 3))
            logits[rows, guess] = 1.0
            return logits

    task = make_task(epochs=len(val_accuracies),
                     early_stopping={"monitor": monitor, "patience": patience, "restore_best": restore})
    trainer = Scripted()
    data = make_data()
    info = analyze(task.model, (1, 2, 2), 3)
    result = train(task, trainer, data, info)
    return result, trainer


def test_early_stopping_stops_after_patience_and_restores_best():
    result, trainer = run_script([0.25, 0.5, 0.75, 0.5, 0.5, 0.5], patience=2)
    es = result.metrics["early_stopping"]
    assert es["stopped_early"] and es["best_epoch"] == 3 and es["restored_best"]
    assert result.metrics["epochs_run"] == 5
    assert trainer.weights["0.weight"][0] == 3.0  # the weights after the best epoch, not the last


def test_no_restore_keeps_last_weights():
    result, trainer = run_script([0.25, 0.5, 0.75, 0.5, 0.5, 0.5], patience=2, restore=False)
    assert trainer.weights["0.weight"][0] == 5.0 and not result.metrics["early_stopping"]["restored_best"]


def test_patience_zero_runs_every_epoch():
    result, _ = run_script([0.5, 0.25, 0.125], patience=0)
    assert result.metrics["epochs_run"] == 3 and not result.metrics["early_stopping"]["stopped_early"]


def test_steady_state_excludes_first_step_and_warmup():
    task = make_task(epochs=2)
    trainer = ScriptedTrainer(step_seconds=0.002)  # 2 ms steps: timed one by one
    data = make_data(40)
    result = train(task, trainer, data, analyze(task.model, (1, 2, 2), 3))
    m = result.metrics
    assert m["steps"] == 2 * (40 // 4) == trainer.steps
    assert m["step_time_s"]["steps_per_unit"] == 1
    assert m["step_time_s"]["n"] == m["steps"] - 1 - 5  # first step and 5 calibration steps excluded
    assert 0.002 <= m["step_time_s"]["median"] < 0.05 and m["first_step_s"] >= 0.002
    assert len(m["history"]) == 2 and m["history"][1]["train_time_s"] >= m["history"][0]["train_time_s"]


def test_short_steps_are_timed_in_windows_of_at_least_1ms():
    task = make_task(epochs=3)
    result = train(task, ScriptedTrainer(), make_data(200), analyze(task.model, (1, 2, 2), 3))
    stats = result.metrics["step_time_s"]
    assert stats["steps_per_unit"] > 1 and stats["median"] * stats["steps_per_unit"] >= 0.5e-3
    assert not any("too short" in w for w in result.warnings)


def test_a_step_that_skips_its_sync_is_flagged_too_fast():
    """A fake that returns instantly claims an impossible FLOP rate: the classic missing-sync bug."""
    task = make_task(epochs=1)
    result = train(task, ScriptedTrainer(), make_data(), analyze(task.model, (1, 2, 2), 3),
                   peak_flops=1.0)  # any real step would need far more than 1 FLOP/s of peak
    assert any("too fast to be real" in w for w in result.warnings)


def test_honest_slow_steps_are_not_flagged():
    task = make_task(epochs=1)
    result = train(task, ScriptedTrainer(step_seconds=0.002), make_data(),
                   analyze(task.model, (1, 2, 2), 3), peak_flops=1e12)
    assert not any("too fast" in w or "too short" in w for w in result.warnings)


def test_timing_summary_and_warnings():
    stats = summarize([1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert stats["median"] == 1.0 and stats["n"] == 11 and stats["ci95_low"] <= 1.0 <= stats["ci95_high"]
    assert stats["raw"][4] == 2.0
    assert any("varies within the run" in w for w in timing_warnings(stats, what="x"))
    assert timing_warnings(summarize([0.01] * 20), what="x") == []
    assert any("too short" in w for w in timing_warnings(summarize([1e-5] * 20), what="x"))


@pytest.mark.parametrize("name,step,expected", [
    ("constant", 57, 0.1),
    ("step", 9, 0.1), ("step", 10, 0.01), ("step", 25, 0.001),
    ("exponential", 0, 0.1), ("exponential", 30, 0.1 * 0.5 ** 3),
    ("cosine", 0, 0.1), ("cosine", 50, 0.05), ("cosine", 100, 0.0),
])
def test_schedules_at_chosen_steps(name, step, expected):
    gamma = 0.5 if name == "exponential" else 0.1
    lr = make_schedule(ScheduleSpec(name=name, gamma=gamma), 0.1, steps_per_epoch=10, total_steps=100)
    assert lr(step) == pytest.approx(expected, abs=1e-12)


def test_linear_warmup_then_schedule():
    lr = make_schedule(ScheduleSpec(name="cosine", warmup_steps=4), 0.1, steps_per_epoch=10, total_steps=104)
    assert [lr(s) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lr(4) == pytest.approx(0.1) and lr(54) == pytest.approx(0.05) and lr(104) == pytest.approx(0.0)


def test_batches_are_identical_for_every_backend_and_epoch_dependent():
    x = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
    y = np.arange(10)
    a = epoch_batches(x, y, 3, seed=7, epoch=0)
    b = epoch_batches(x, y, 3, seed=7, epoch=0)
    c = epoch_batches(x, y, 3, seed=7, epoch=1)
    assert len(a) == 3 and all(len(yb) == 3 for _, yb in a)  # the incomplete batch is dropped
    assert all((p[1] == q[1]).all() for p, q in zip(a, b))
    assert any((p[1] != q[1]).any() for p, q in zip(a, c))


def test_cross_entropy_is_stable():
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert np.allclose(cross_entropy(logits, np.array([0, 0])), [0.0, 1000.0])


def test_a_warm_up_slowed_by_a_neighbour_does_not_leave_units_under_1ms():
    """Slow calibration steps (a busy neighbour) pick a window of 1; the steady steps are fast, so
    the timer widens its window once instead of timing every unit under 1 ms."""
    from fwbench.training import StepTimer

    class SlowStart:
        calls = 0

        def train_step(self, batch, lr):
            self.calls += 1
            time.sleep(0.005 if self.calls <= 6 else 0.0001)  # first step + 5 calibration steps slow

        def sync(self, handle=None):
            pass

    timer = StepTimer(SlowStart())
    for _ in range(400):
        timer.step(None, 0.1)
    assert timer.window > 1
    assert float(np.median(timer.samples[-20:])) * timer.window >= timer.min_unit_s


def test_one_too_fast_margin_for_every_judge():
    from fwbench.measure.timing import TOO_FAST_MARGIN, too_fast

    assert TOO_FAST_MARGIN == 2.0
    assert not too_fast(1.9e9, 1e9) and too_fast(2.1e9, 1e9)
    assert not too_fast(5e9, None) and not too_fast(None, 1e9)  # no peak measured: no judgement
