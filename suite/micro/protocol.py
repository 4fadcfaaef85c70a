"""The timing protocol of every microbenchmark case and pass (a calibrated loop, as in pyperf).

`measure` runs, for one prepared pass ``run`` and its ``sync``:

1. the **first call**, timed apart (tracing, compilation, allocator warm-up);
2. a **warm-up**: single calls until 3 successive timings agree within ``warmup_tolerance``
   (relative spread), or ``max_warmup`` calls, or ``max_warmup_s`` seconds;
3. a **calibration** of the inner loop: a timed unit runs the pass ``inner`` times; ``inner``
   grows until one unit takes at least ``min_unit_s`` (aiming 25 % above it; an op too short to
   time is repeated until it is not), up to ``max_inner``;
4. ``repeats`` **timed units**. On the CPU every call is followed by ``sync``, so calls never
   overlap. On an asynchronous device (``sync_each_call=False``, what `fwbench.micro.families`
   sets for GPU cells) a unit is ``inner`` calls and one ``sync`` at its end, as the training
   loop times its steps: a sync per call would time the launch latency of small kernels, not
   the kernels. Either way the clock is read only after the device is done.

Statistics (`fwbench.measure.timing.summarize`: median, IQR, bootstrap CI, CV, raw values) are of the time
*per call* (unit / inner); `timing_warnings` judge the units (too short, unstable, faster than
the machine's measured peak).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..measure.timing import summarize, timing_warnings

#: Successive warm-up timings that must agree before the warm-up counts as steady.
STEADY_WINDOW = 3
#: Calibration aims at this multiple of ``min_unit_s``, so that timed units stay above it.
CALIBRATION_MARGIN = 1.25


@dataclass(frozen=True)
class Protocol:
    """Settings of `measure` (from a spec's ``[bench]`` table: `Protocol.from_settings`)."""

    repeats: int = 15
    min_unit_s: float = 1e-3
    max_inner: int = 100_000
    max_warmup: int = 50
    max_warmup_s: float = 2.0
    warmup_tolerance: float = 0.05
    #: True: ``sync`` after every call; False: one ``sync`` per timed unit (asynchronous devices).
    sync_each_call: bool = True
    clock: Callable[[], float] = field(default=time.perf_counter, compare=False)

    @classmethod
    def from_settings(cls, settings, **extra) -> Protocol:
        return cls(repeats=settings.repeats, min_unit_s=settings.min_unit_s, max_inner=settings.max_inner,
                   max_warmup=settings.max_warmup, max_warmup_s=settings.max_warmup_s,
                   warmup_tolerance=settings.warmup_tolerance, **extra)


@dataclass
class Measurement:
    """What `measure` saw. ``units`` are seconds per timed unit of ``inner`` calls."""

    first_s: float
    warmup_s: list[float]
    warmup_steady: bool
    inner: int
    calibration: list[tuple[int, float]]
    units: list[float]

    @property
    def per_call(self) -> np.ndarray:
        return np.asarray(self.units, dtype=np.float64) / self.inner

    @property
    def stats(self) -> dict[str, Any]:
        """`summarize` of the time per call (raw values kept)."""
        return summarize(self.per_call)

    @property
    def unit_stats(self) -> dict[str, Any]:
        return summarize(self.units, keep_raw=False)

    def warnings(self, what: str, flops: float | None = None, peak_flops: float | None = None) -> list[str]:
        """Unstable, too short or too fast to be real, judged on the timed units."""
        per_unit = flops * self.inner if flops else None
        return timing_warnings(self.unit_stats, what=what, flops=per_unit, peak_flops=peak_flops)


def _steady(times: list[float], tolerance: float) -> bool:
    recent = times[-STEADY_WINDOW:]
    if len(recent) < STEADY_WINDOW:
        return False
    mid = float(np.median(recent))
    return mid > 0 and (max(recent) - min(recent)) <= tolerance * mid


def _unit(run, sync, inner: int, clock, sync_each_call: bool = True) -> float:
    """Seconds for ``inner`` calls of ``run``, the device idle at the start and done at the end."""
    start = clock()
    if sync_each_call:
        for _ in range(inner):
            sync(run())
    else:
        handle = None
        for _ in range(inner):
            handle = run()
        sync(handle)  # calls run in order on the device: the last one done means all are
    return clock() - start


def measure(run: Callable[[], Any], sync: Callable[[Any], None], protocol: Protocol = Protocol()) -> Measurement:
    """First call, warm-up, calibration and ``protocol.repeats`` timed units of ``run``."""
    clock = protocol.clock
    start = clock()
    sync(run())
    first = clock() - start

    warmup: list[float] = []
    steady = False
    began = clock()
    while len(warmup) < protocol.max_warmup and clock() - began < protocol.max_warmup_s:
        warmup.append(_unit(run, sync, 1, clock, protocol.sync_each_call))
        if _steady(warmup, protocol.warmup_tolerance):
            steady = True
            break

    target = CALIBRATION_MARGIN * protocol.min_unit_s  # units vary: aim a little above the minimum
    estimate = min(warmup[-STEADY_WINDOW:]) if warmup else first
    inner = 1
    if estimate > 0:
        inner = max(1, min(protocol.max_inner, math.ceil(target / estimate)))
    elif protocol.max_inner > 1:  # a clock too coarse to see one call: start high
        inner = min(protocol.max_inner, 1000)
    calibration = []
    while True:
        unit = _unit(run, sync, inner, clock, protocol.sync_each_call)
        calibration.append((inner, unit))
        if unit >= target or inner >= protocol.max_inner:
            break
        grow = target / unit if unit > 0 else 10.0
        inner = min(protocol.max_inner, max(inner * 2, math.ceil(inner * grow)))
    units = [_unit(run, sync, inner, clock, protocol.sync_each_call) for _ in range(protocol.repeats)]
    return Measurement(first, warmup, steady, inner, calibration, units)


def timing_fields(m: Measurement) -> dict[str, Any]:
    """The protocol's numbers for a record's case: time per call (median, CI...), raw values,
    first call, warm-up and calibration."""
    stats = m.stats
    median = stats["median"]
    return {
        "median_s": median,
        "ci95": [stats["ci95_low"], stats["ci95_high"]],
        "mean_s": stats["mean"], "iqr_s": stats["iqr"], "cv": stats["cv"],
        "min_s": stats["min"], "max_s": stats["max"], "repeats": stats["n"],
        "inner": m.inner, "unit_median_s": median * m.inner,
        "raw_s": stats.get("raw", []),
        "first_call_s": m.first_s,
        "compile_s": max(0.0, m.first_s - median),
        "warmup_calls": len(m.warmup_s), "warmup_steady": m.warmup_steady,
        "warmup_s": float(np.sum(m.warmup_s)) if m.warmup_s else 0.0,
        "calibration": [[inner, unit] for inner, unit in m.calibration],
    }
