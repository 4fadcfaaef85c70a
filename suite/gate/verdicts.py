"""The verdict of each row of a comparison, decided on its interval, with the family-wise error held.

One logic for every verdict (docs/statistics.md, "How `bench compare` decides"):

* **faster / slower** (improved / regressed): the row's interval lies wholly beyond the *margin*
  ``1 ± threshold/2`` on that side; a true change below half the threshold is called so at most
  ``alpha`` of the time, and the interval's level is Holm's for the row, so over the whole comparison
  a false alarm happens at most ``alpha`` of the time, not per row;
* **unchanged**: the whole interval lies within ``1 ± threshold`` (equivalence shown);
* **inconclusive**: anything else; the row says the smallest change it could have detected
  (minimum detectable effect, 80% power) and the repeats a side that would decide it.

A row without an interval across repeats whose metric is deterministic (test accuracy at a fixed
seed, the same on every repeat) is judged *exactly* by the same rule with a zero-width interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..measure.statistics import (
    RatioInterval,
    holm_levels,
    minimum_detectable,
    one_sided_p,
    repeats_needed,
)

FASTER, SLOWER = "faster", "slower"
IMPROVED, REGRESSED = "improved", "regressed"
UNCHANGED, INCONCLUSIVE = "unchanged", "inconclusive"
FAILED, NOT_COMPARABLE = "failed", "not comparable"
NO_EVIDENCE = "no evidence"  # a row that cannot be judged (too few repeats, a missing metric)
ENV_CHANGED = "env changed"  # the two sides ran with different batch, dtype, threads, CPU or device
BAD_VERDICTS = (SLOWER, REGRESSED, FAILED)
UNJUDGED = (NO_EVIDENCE, NOT_COMPARABLE)
NEEDED_CAP = 200  # repeats_needed's cap: beyond it, say "more than"
POWER = 0.8  # the power a minimum detectable effect is quoted at


def margin_log(threshold: float) -> float:
    """The margin a change must clear to be called (log scale): half the threshold."""
    return math.log1p(threshold / 2)


def pct(value: float) -> str:
    """A fraction as a percentage without rounding a small one away: 0.0005 → ``0.05%``."""
    return f"{value * 100:.3g}%"


def level_text(alpha: float) -> str:
    """The confidence level of an interval at significance ``alpha``: 0.01 → ``99%``."""
    return f"{(1 - alpha) * 100:.4g}%"


@dataclass
class Judged:
    """What `decide` returns for one row."""

    verdict: str
    reason: str
    ci: tuple[float, float]
    level: float  # the interval's confidence level
    needed: int | None = None
    mde: float | None = None  # smallest change detectable at this N (fraction), for inconclusive rows


def _direction(change: float, better: str, speed: bool) -> str:
    improved = change > 0 if better == "higher" else change < 0
    if speed:
        return FASTER if improved else SLOWER
    return IMPROVED if improved else REGRESSED


def judge_exact(ratio: float, better: str, speed: bool, threshold: float) -> tuple[str, str]:
    """A deterministic metric (the same value on every repeat of each side): the rule with a zero-width
    interval."""
    change = ratio - 1
    if abs(math.log(ratio)) > margin_log(threshold):
        return _direction(change, better, speed), f"exact: deterministic, {change:+.2%}"
    return UNCHANGED, "exact: deterministic" + (f", {change:+.2%} within ±{pct(threshold)}" if change else "")


def decide(estimates: list[tuple[RatioInterval, str, bool]], threshold: float, alpha: float) -> list[Judged]:
    """Verdicts for a family of rows, ``estimates[i] = (ratio, better, speed)``; Holm over all of them."""
    margin = margin_log(threshold)
    p_values = [one_sided_p(ratio, margin) for ratio, _, _ in estimates]
    levels = holm_levels(p_values, alpha)
    out = []
    for (ratio, better, speed), p, row_alpha in zip(estimates, p_values, levels, strict=True):
        level = 1 - row_alpha
        low, high = ratio.at(level)
        if p < row_alpha:
            out.append(Judged(_direction(ratio.ratio - 1, better, speed), "", (low, high), level))
            continue
        if 1 - threshold <= low and high <= 1 + threshold:
            out.append(Judged(UNCHANGED, "", (low, high), level))
            continue
        mde = minimum_detectable(ratio, row_alpha, margin, POWER)
        needed = repeats_needed(ratio, threshold, level, cap=NEEDED_CAP, margin_log=margin)
        change = ratio.ratio - 1
        if abs(math.log(ratio.ratio)) > margin:
            why = f"moved {change:+.1%}, but the interval reaches back within ±{pct(threshold / 2)}"
        else:
            why = f"the interval reaches past ±{pct(threshold)}"
        why += (f"; could detect ±{mde:.1%} or more at this N ({POWER:.0%} power)" if mde < 10 else
                "; at this N no change below +999% could be detected: add repeats")
        if ratio.extra_var and needed is not None and needed >= NEEDED_CAP:
            why += "; no number of repeats decides it across invocations (use `bench ab`)"
        elif needed:
            why += (f"; more than {needed} repeats a side would be needed" if needed >= NEEDED_CAP
                    else f"; about {needed} repeats a side would decide it")
        out.append(Judged(INCONCLUSIVE, why, (low, high), level, needed, mde))
    return out
