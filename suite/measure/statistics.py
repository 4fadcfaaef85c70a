"""Statistics across repeats: the process is the unit (see docs/statistics.md).

A *repeat* is one fresh process running a cell; its summary statistic is the median time of its
steady-state units (steps or calibrated loops). Units inside one process are correlated and miss
the variance between processes, so every interval a user sees is computed over repeats:

* `repeat_interval`: the geometric mean of the per-repeat medians and a Student t interval on their
  logarithms, back-transformed (times are positive and their noise is multiplicative);
* `ratio_interval`: the ratio NEW/BASE of two such geometric means with its interval, from Welch's
  t on the log values (or a paired t when the repeats ran in interleaved pairs, as in `bench ab`),
  and the two-sided p-value of "no change";
* `repeats_needed`: how many repeats a side would make an inconclusive ratio decide (the t
  quantile's degrees of freedom grow with the repeats);
* `holm_levels`: the significance level each row of a family is tested at (Holm's step-down), so
  the family-wise false-alarm rate of a whole comparison is ``alpha``;
* `minimum_detectable`: the smallest change a row could have detected at its number of repeats.
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
#: Spread (CV) of a headline between separate invocations of the same code on one machine: the
#: known term `bench compare` adds to each side of two invocations, and inference latencies add to
#: their repeat interval (measured by benchmarks/run_to_run.py; docs/statistics.md).
INVOCATION_CV = 0.02


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


def repeat_interval(values: Sequence[float], level: float = 0.95, between_cv: float = 0.0) -> RepeatInterval:
    """``values``: one positive number per repeat (e.g. median step seconds), shape ``(n,)``.

    ``between_cv``: a known spread between invocations (e.g. `INVOCATION_CV`) added in quadrature to
    the repeats' standard error on logs, for an interval that holds across separate runs of the cell
    rather than around this run's own mean."""
    logs = _logs(values)
    n = len(logs)
    if n == 0:
        return RepeatInterval(0, math.nan, None, None, None)
    center = float(np.exp(logs.mean()))
    if n < 2:
        return RepeatInterval(1, center, None, None, None)
    raw = np.exp(logs)
    se = math.sqrt(logs.var(ddof=1) / n + math.log1p(between_cv) ** 2)
    half = _t(level, n - 1) * se
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
    extra_var: float = 0.0  # known variance of log(ratio) added for a level above the repeats
    mean_log: float = 0.0  # log(ratio)

    def at(self, level: float) -> tuple[float, float]:
        """The interval of the ratio at another ``level`` (same estimate, same standard error)."""
        if self.se_log == 0:
            return self.ratio, self.ratio
        half = _t(level, self.df) * self.se_log
        with np.errstate(over="ignore"):  # 1 df at a Holm level: the interval may reach infinity
            return float(np.exp(self.mean_log - half)), float(np.exp(self.mean_log + half))


def ratio_interval(base: Sequence[float], new: Sequence[float], level: float = 0.99,
                   paired: bool = False, extra_var: float = 0.0) -> RatioInterval | None:
    """Ratio ``geomean(new) / geomean(base)`` with a t interval on logs; None with < 2 values a side.

    ``paired``: the i-th values of both sides ran side by side (A, B, A, B ...): the interval is a
    one-sample t on the log ratios of the pairs, which removes drift shared by each pair.
    ``extra_var``: a known variance of log(ratio) from a level the repeats do not sample (two
    separate invocations: ``2 * cv_between_invocations**2``), added to the squared standard error;
    the degrees of freedom follow Welch–Satterthwaite with that term known exactly.
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
        mean, se = float(ln.mean() - lb.mean()), math.sqrt(vb + vn + extra_var)
        # Welch–Satterthwaite degrees of freedom (a known variance term has infinite df)
        denom = (vb ** 2 / (len(lb) - 1) + vn ** 2 / (len(ln) - 1))
        df = (vb + vn + extra_var) ** 2 / denom if denom > 0 else float(len(lb) + len(ln) - 2)
        df = min(df, 1e6)
    if paired:
        extra_var = 0.0
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
        return RatioInterval(float(np.exp(mean)), float(np.exp(mean)), float(np.exp(mean)), p, 0.0, df, paired,
                             len(lb), len(ln), 0.0, mean)
    half = _t(level, df) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return RatioInterval(float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half)), p, se, df,
                         paired, len(lb), len(ln), extra_var, mean)


def _df_at(ratio: RatioInterval, n: int) -> float:
    """Degrees of freedom with ``n`` repeats a side: n - 1 paired, Welch's scaled with n unpaired."""
    n_now = min(ratio.n_base, ratio.n_new)
    if ratio.paired:
        return float(n - 1)
    return max(1.0, ratio.df * (n - 1) / max(n_now - 1, 1))


def _se_at(ratio: RatioInterval, n: int) -> float:
    """Standard error of log(ratio) with ``n`` repeats a side (the known invocation term stays)."""
    n_now = min(ratio.n_base, ratio.n_new)
    sampled = max(ratio.se_log ** 2 - ratio.extra_var, 0.0)
    return math.sqrt(sampled * n_now / n + ratio.extra_var)


def one_sided_p(ratio: RatioInterval, margin_log: float) -> float:
    """p-value that |log ratio| stays within ``margin_log`` on the side the estimate moved to
    (twice the one-sided p, capped at 1): below ``alpha`` exactly when the ``1 - alpha`` interval lies
    wholly beyond that margin."""
    from scipy import stats

    distance = abs(ratio.mean_log) - margin_log
    if ratio.se_log == 0:
        return 0.0 if distance > 0 else 1.0
    return float(min(1.0, 2 * stats.t.sf(distance / ratio.se_log, ratio.df)))


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """Holm's step-down: the level each p-value is tested at, shape ``(m,)`` like ``p_values``.

    Sorted ascending, the k-th (0-based) is tested at ``alpha / (m - k)`` while every smaller one
    was rejected; from the first that is not rejected on, all keep that level. The family-wise
    false-alarm rate is at most ``alpha`` under any dependence between the rows.
    """
    m = len(p_values)
    levels = [alpha] * m
    stopped = None
    for k, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        level = stopped if stopped is not None else alpha / (m - k)
        levels[i] = level
        if stopped is None and not p_values[i] < level:
            stopped = level
    return levels


def minimum_detectable(ratio: RatioInterval, alpha: float, margin_log: float = 0.0, power: float = 0.8) -> float:
    """The smallest relative change (as a fraction, e.g. 0.04) that a comparison with this standard
    error and df would call significant beyond ``margin_log`` with probability ``power``:
    ``exp(margin + (t_{1-alpha/2} + t_{power}) * se) - 1`` (df as now)."""
    from scipy import stats

    if ratio.se_log == 0:
        return math.expm1(margin_log)
    shift = (_t(1 - alpha, ratio.df) + float(stats.t.ppf(power, ratio.df))) * ratio.se_log
    return math.expm1(margin_log + shift) if margin_log + shift < 700 else math.inf


def repeats_needed(ratio: RatioInterval, threshold: float, level: float = 0.99, cap: int = 200,
                   margin_log: float = 0.0) -> int | None:
    """Repeats per side that would make an undecided ``ratio`` decide, assuming the same spread.

    A point estimate inside the band ``1 ± threshold`` needs an interval inside the band (unchanged);
    one outside it needs an interval that excludes the margin ``margin_log`` (faster or slower). The
    half width falls as 1/sqrt(n) and the t quantile falls as the degrees of freedom grow with n.
    None when the estimate sits on the edge it must leave; ``cap`` when even ``cap`` would not do
    (e.g. a known between-invocation term wider than the distance).
    """
    log_r = math.log(ratio.ratio)
    low, high = (math.log(1 - threshold), math.log(1 + threshold)) if 0 < threshold < 1 else (0.0, 0.0)
    distance = min(log_r - low, high - log_r) if low < log_r < high else abs(log_r) - margin_log
    if distance <= 0 or ratio.se_log <= 0:
        return None
    n_now = min(ratio.n_base, ratio.n_new)
    for n in range(n_now + 1, cap + 1):
        if _t(level, _df_at(ratio, n)) * _se_at(ratio, n) <= distance:
            return n
    return cap
