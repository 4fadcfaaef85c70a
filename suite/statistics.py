"""Statistics across repeats: the process is the unit (see docs/statistics.md).

A *repeat* is one fresh process running a cell; its summary statistic is the median time of its
steady-state units (steps or calibrated loops). Units inside one process are correlated and miss
the variance between processes, so every interval a user sees is computed over repeats:

* `repeat_interval`: the geometric mean of the per-repeat medians and a Student t interval on their
  logarithms, back-transformed (times are positive and their noise is multiplicative);
* `ratio_interval`: the ratio NEW/BASE of two such geometric means with its interval, from Welch's
  t on the log values (or a paired t when the repeats ran in interleaved pairs, as in `bench ab`),
  and the two-sided p-value of "no change";
* `repeats_needed`: how many repeats a side would make an inconclusive ratio decide.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Coefficient of variation between repeats above which a number is flagged unstable.
UNSTABLE_REPEAT_CV = 0.05
#: A headline whose 95% interval is wider than this (relative half width) is marked "wide".
WIDE_INTERVAL = 0.10


def _logs(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v) and v > 0], dtype=np.float64)
    return np.log(arr)


def _t(level: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf((1 + level) / 2, df))


@dataclass(frozen=True)
class RepeatInterval:
    """Geometric mean of ``n`` per-repeat values and its interval (``low``/``high`` None when n < 2)."""

    n: int
    center: float
    low: float | None
    high: float | None
    cv: float | None  # std/mean of the values between repeats (None when n < 2)

    @property
    def relative_half_width(self) -> float | None:
        if self.low is None or self.high is None or not self.center:
            return None
        return (self.high - self.low) / 2 / self.center


def repeat_interval(values: Sequence[float], level: float = 0.95) -> RepeatInterval:
    """``values``: one positive number per repeat (e.g. median step seconds), shape ``(n,)``."""
    logs = _logs(values)
    n = len(logs)
    if n == 0:
        return RepeatInterval(0, math.nan, None, None, None)
    center = float(np.exp(logs.mean()))
    if n < 2:
        return RepeatInterval(1, center, None, None, None)
    raw = np.exp(logs)
    half = _t(level, n - 1) * logs.std(ddof=1) / math.sqrt(n)
    return RepeatInterval(n, center, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)),
                          float(raw.std(ddof=1) / raw.mean()))


@dataclass(frozen=True)
class RatioInterval:
    """NEW/BASE ratio of geometric means, its interval at ``level``, the p-value of ratio = 1."""

    ratio: float
    low: float
    high: float
    p_value: float
    se_log: float  # standard error of log(ratio)
    df: float
    paired: bool
    n_base: int
    n_new: int


def ratio_interval(base: Sequence[float], new: Sequence[float], level: float = 0.99,
                   paired: bool = False) -> RatioInterval | None:
    """Ratio ``geomean(new) / geomean(base)`` with a t interval on logs; None with < 2 values a side.

    ``paired``: the i-th values of both sides ran side by side (A, B, A, B ...): the interval is a
    one-sample t on the log ratios of the pairs, which removes drift shared by each pair.
    """
    from scipy import stats

    lb, ln = _logs(base), _logs(new)
    if len(lb) < 2 or len(ln) < 2:
        return None
    if paired and len(lb) == len(ln):
        diffs = ln - lb
        n = len(diffs)
        mean, se, df = float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(n)), n - 1
    else:
        paired = False
        vb, vn = lb.var(ddof=1) / len(lb), ln.var(ddof=1) / len(ln)
        mean, se = float(ln.mean() - lb.mean()), math.sqrt(vb + vn)
        # Welch–Satterthwaite degrees of freedom
        denom = (vb ** 2 / (len(lb) - 1) + vn ** 2 / (len(ln) - 1))
        df = (vb + vn) ** 2 / denom if denom > 0 else float(len(lb) + len(ln) - 2)
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
        return RatioInterval(float(np.exp(mean)), float(np.exp(mean)), float(np.exp(mean)), p, 0.0, df, paired,
                             len(lb), len(ln))
    half = _t(level, df) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return RatioInterval(float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half)), p, se, df,
                         paired, len(lb), len(ln))


def repeats_needed(ratio: RatioInterval, threshold: float, level: float = 0.99, cap: int = 200) -> int | None:
    """Repeats per side that would make an undecided ``ratio`` decide, assuming the same spread.

    A point estimate inside the band ``1 ± threshold`` needs an interval inside the band (unchanged);
    one outside it needs an interval that excludes 1 (faster or slower). The half width falls as
    1/sqrt(n). None when the estimate sits on the edge it must leave.
    """
    log_r = math.log(ratio.ratio)
    low, high = (math.log(1 - threshold), math.log(1 + threshold)) if 0 < threshold < 1 else (0.0, 0.0)
    distance = min(log_r - low, high - log_r) if low < log_r < high else abs(log_r)
    if distance <= 0 or ratio.se_log <= 0:
        return None
    n_now = min(ratio.n_base, ratio.n_new)
    z = _t(level, max(ratio.df, 1.0))
    n = math.ceil(n_now * (z * ratio.se_log / distance) ** 2)  # z * se * sqrt(n_now / n) = distance
    return min(max(n, n_now + 1), cap)
