"""Lower-is-better histories per backend: step time, peak memory, seconds per sample, error rate."""
from __future__ import annotations

from .cells import BACKENDS, TASKS, build_trainer, train_offline


class TrainStep:
    """One optimizer step of a shipped task at batch 128 (compile and warm-up in setup)."""

    params = (BACKENDS, TASKS)
    param_names = ["backend", "task"]
    warmup_time = 0.5
    timeout = 300

    def setup(self, backend, task):
        self.trainer, self.batch, self.task = build_trainer(backend, task)
        for _ in range(3):
            self.trainer.sync(self.trainer.train_step(self.batch, self.task.optimizer.lr))

    def time_train_step(self, backend, task):
        self.trainer.sync(self.trainer.train_step(self.batch, self.task.optimizer.lr))

    def track_seconds_per_sample(self, backend, task):
        import time

        steps = 20
        start = time.perf_counter()
        for _ in range(steps):
            handle = self.trainer.train_step(self.batch, self.task.optimizer.lr)
        self.trainer.sync(handle)
        return (time.perf_counter() - start) / (steps * self.task.training.batch_size)

    track_seconds_per_sample.unit = "seconds"


class TrainStepMemory:
    params = (BACKENDS, ["cnn_mnist"])
    param_names = ["backend", "task"]
    timeout = 300

    def peakmem_train_steps(self, backend, task):
        trainer, batch, spec = build_trainer(backend, task)
        for _ in range(5):
            trainer.sync(trainer.train_step(batch, spec.optimizer.lr))


class ErrorRate:
    """Test error after a short, fixed training run of mlp_mnist on the offline digits set."""

    params = (BACKENDS,)
    param_names = ["backend"]
    timeout = 600

    def track_error_rate(self, backend):
        return 1.0 - train_offline(backend)["test_accuracy"]

    track_error_rate.unit = "fraction"
