"""Statistics of repeated timings, and the warnings that say when a number cannot be trusted."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

UNSTABLE_CV = 0.05  # within-run coefficient of variation above which a timing is flagged as varying
#: Marks the within-run variability warning; with repeats, `fwbench.measure.repeats` replaces it by the
#: repeat-level "unstable" warning (units inside one process are correlated, see docs/statistics.md).
WITHIN_RUN_MARK = "varies within the run"
#: The one "too fast to be real" margin (run and microbenchmark warnings, the doctor's sync audit,
#: the kit's): a rate above this multiple of the measured peak (`too_fast`). FLOPs per step are an
#: estimate (3 x forward) and the peak a best-of-repeats bound at one matrix size, so a correct
#: backend can come near it; a missing sync is off by far more (a step's dispatch alone: 10-1000x).
TOO_FAST_MARGIN = 2.0
TOO_SHORT_S = 1e-3  # a timed unit shorter than this is dominated by timer and call overhead
#: Consecutive units in a span of `best_span`: long enough to hold an intermittent stall (a pause
#: every few dozen steps), short enough that a quiet span exists on a busy machine.
SPAN_UNITS = 16


def best_span(values: np.ndarray, span: int = SPAN_UNITS) -> float | None:
    """The mean of the fastest run of ``span`` consecutive units, ``values`` of shape ``(n,)`` in
    time order; None with fewer than ``2 * span`` units.

    A neighbour only adds time, so the fastest span is the least disturbed one (like the best
    window), but a span is long enough to include a stall that recurs every few dozen steps — which
    the median and the best window leave out.
    """
    if values.size < 2 * span:
        return None
    sums = np.convolve(values, np.ones(span), mode="valid")
    return float(sums.min() / span)


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap (percentile) CI of the median; the t interval of the mean below 10 values."""
    n = len(values)
    if n < 2:
        return (float(values[0]), float(values[0])) if n else (math.nan, math.nan)
    if n < 10:
        from scipy import stats

        half = stats.t.ppf((1 + level) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
        # a time is never below the fastest or above the slowest value seen
        return float(max(values.mean() - half, values.min())), float(min(values.mean() + half, values.max()))
    rng = np.random.default_rng(0)
    samples = rng.choice(values, size=(1000, n), replace=True)
    medians = np.median(samples, axis=1)
    lo, hi = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize(values, *, keep_raw: bool = True, max_raw: int = 2000) -> dict[str, Any]:
    """Median, mean, IQR, 95% CI, CV (std/mean), min/max and (a thinned copy of) the raw values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    q1, median, q3 = np.quantile(arr, [0.25, 0.5, 0.75])
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    lo, hi = confidence_interval(arr)
    out: dict[str, Any] = {
        "n": int(arr.size), "median": float(median), "mean": mean, "std": std,
        "iqr": float(q3 - q1), "q1": float(q1), "q3": float(q3),
        "ci95_low": lo, "ci95_high": hi, "cv": std / mean if mean > 0 else math.nan,
        "min": float(arr.min()), "max": float(arr.max()),
    }
    span = best_span(arr)
    if span is not None:
        out["best_span"] = span
    if keep_raw:
        step = max(1, math.ceil(arr.size / max_raw))
        out["raw"] = arr[::step].tolist()
        out["raw_stride"] = step
    return out


def too_fast(flops_per_s: float | None, peak_flops: float | None) -> bool:
    """Whether a measured rate (FLOP/s) is beyond what the machine can compute (`TOO_FAST_MARGIN`)."""
    return bool(flops_per_s and peak_flops and flops_per_s > TOO_FAST_MARGIN * peak_flops)


def timing_warnings(stats: dict[str, Any], *, what: str, flops: float | None = None,
                    peak_flops: float | None = None, unit_s: float | None = None) -> list[str]:
    """Human-readable warnings for one timing summary (stored in the record and printed).

    ``stats`` are per call (seconds); ``unit_s`` is the length of one timed unit when several
    calls were timed together (default: the median call).
    """
    warnings = []
    if stats.get("n", 0) == 0:
        return [f"{what}: nothing was timed"]
    cv, median = stats.get("cv", 0.0), stats["median"]
    if cv is not None and not math.isnan(cv) and cv > UNSTABLE_CV:
        warnings.append(f"{what}: {WITHIN_RUN_MARK} (CV {cv:.1%} > {UNSTABLE_CV:.0%}); its interval is within-run "
                        "only: add repeats (--repeat 3 or more), close other programs")
    unit = median if unit_s is None else unit_s
    if unit < TOO_SHORT_S:
        warnings.append(f"{what}: too short to time reliably ({unit * 1e3:.3f} ms < 1 ms per timed unit); "
                        "use a larger batch or more inner steps")
    if flops and median > 0 and too_fast(flops / median, peak_flops):
        warnings.append(f"{what}: too fast to be real ({flops / median / 1e9:.1f} GFLOP/s > {TOO_FAST_MARGIN:g} x "
                        f"the measured peak {peak_flops / 1e9:.1f} GFLOP/s); a missing device sync?")
    return warnings
