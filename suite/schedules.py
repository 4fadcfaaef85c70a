"""Learning-rate schedules, computed by the suite and handed to backends step by step."""
from __future__ import annotations

import math
from collections.abc import Callable

from .spec import ScheduleSpec


def make_schedule(spec: ScheduleSpec, base_lr: float, steps_per_epoch: int,
                  total_steps: int) -> Callable[[int], float]:
    """Return ``lr(step)`` for 0-based optimizer steps; see `ScheduleSpec` for the formulas."""
    steps_per_epoch = max(1, steps_per_epoch)
    warmup = spec.warmup_steps

    def after_warmup(step: int) -> float:
        epoch = step // steps_per_epoch
        if spec.name == "step":
            return base_lr * spec.gamma ** (epoch // spec.step_epochs)
        if spec.name == "exponential":
            return base_lr * spec.gamma ** epoch
        if spec.name == "cosine":
            span = max(1, total_steps - warmup)
            t = min(step - warmup, span)
            return spec.min_lr + (base_lr - spec.min_lr) * (1 + math.cos(math.pi * t / span)) / 2
        return base_lr

    def lr(step: int) -> float:
        if step < warmup:
            return base_lr * (step + 1) / warmup
        return after_warmup(step)

    return lr
