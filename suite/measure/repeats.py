"""One record per cell from the records of its repeats (each a fresh process; docs/statistics.md).

The first repeat's record is the base: its accuracy, history, memory and environment stay as they
are. On top of it:

* ``metrics["repeats"]``: every repeat's own summary (median, best-window, mean and best-span step
  time, throughput, first step, peak memory, accuracy, within-run CV, wall time, and the `bench ab`
  block it ran in), shape ``(n_repeats,)``; the merged record's ``finished_at`` is its last repeat's;
* ``metrics["step_time_s"]``: the headline step time over repeats — the geometric mean of the
  per-repeat medians, its 95% t interval on logs (``ci95_low``/``ci95_high``), the CV between
  repeats, ``raw`` = the per-repeat medians, ``unit: "repeat"``; the first repeat's own window
  statistics move to ``metrics["step_time_within_run_s"]`` (a diagnostic);
* ``throughput_samples_per_s`` / ``throughput_ci95`` = batch / those; ``interval`` says which units
  the interval comes from ("repeats", or "within-run only" with one repeat);
* ``throughput_best_samples_per_s`` / ``throughput_best_ci95``: the same over each repeat's *fastest*
  window (``best_step_s``): the speed with the least interference from neighbours (additive noise
  only slows a window down), which the regression gate also judges (docs/statistics.md);
* microbenchmark cases: ``median_s`` and ``ci95`` over repeats the same way, rates rescaled,
  ``repeat_median_s`` per case and the in-process values under ``within_run``;
* inference records: p50 and p99 per batch size over repeats (`fwbench.inference.records`).

Warnings: "varies within the run" lines from the repeats are dropped in favour of one repeat-level
"unstable" warning when the CV between repeats exceeds `UNSTABLE_REPEAT_CV`.
"""
from __future__ import annotations

import copy
import math
from statistics import median
from typing import Any

from ..inference.records import merge_inference, repeat_values
from ..records.record import WITHIN_RUN_ONLY, new_record
from .statistics import UNSTABLE_REPEAT_CV, WIDE_INTERVAL, repeat_interval
from .timing import WITHIN_RUN_MARK

REPEATS = "repeats"


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def repeat_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of one repeat kept in the merged record."""
    m = record.get("metrics") or {}
    stats = m.get("step_time_s") or {}
    return {"repeat": record.get("repeat", 1), "status": record.get("status"),
            "median_step_s": _num(stats.get("median")), "within_run_cv": _num(stats.get("cv")),
            "best_step_s": _num(stats.get("min")),
            "throughput_samples_per_s": _num(m.get("throughput_samples_per_s")),
            "first_step_s": _num(m.get("first_step_s")), "test_accuracy": _num(m.get("test_accuracy")), "peak_host_bytes": m.get("peak_host_bytes"),
            "peak_device_bytes": m.get("peak_device_bytes"), "wall_s": _num(record.get("wall_s")),
            "mean_step_s": _num(stats.get("mean")), "best_span_step_s": _num(stats.get("best_span")),
            "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
            **({"block": record["block"]} if record.get("block") is not None else {}),
            **(repeat_values(record) if m.get("inference") else {})}


def _unstable(what: str, ci, n: int) -> list[str]:
    if ci.cv is None or ci.cv <= UNSTABLE_REPEAT_CV:
        return []
    return [(f"{what}: unstable between repeats (CV {ci.cv:.1%} over {n} processes > {UNSTABLE_REPEAT_CV:.0%}); "
             f"add repeats (--repeat {max(2 * n, n + 2)}), use fewer threads (--threads 1) or a quieter machine")]


def _merge_warnings(records: list[dict[str, Any]]) -> list[str]:
    """The repeats' warnings without their within-run variability lines, one of each kind."""
    seen, out = set(), []
    for record in records:
        for warning in record.get("warnings") or []:
            if WITHIN_RUN_MARK in warning:
                continue
            kind = warning.split("(")[0]
            if kind not in seen:
                seen.add(kind)
                out.append(warning)
    return out


def mark_single(record: dict[str, Any]) -> dict[str, Any]:
    """A record of one repeat: its interval is within-run only (said in the record)."""
    m = record.get("metrics") or {}
    if m.get("step_time_s") or m.get("cases") or m.get("inference"):
        m["interval"] = WITHIN_RUN_ONLY
        m["repeats_n"] = 1
    stats, thr = m.get("step_time_s") or {}, _num(m.get("throughput_samples_per_s"))
    if thr and _num(stats.get("median")) and _num(stats.get("min")):
        m["throughput_best_samples_per_s"] = thr * stats["median"] / stats["min"]
    return record


def merge_repeats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the ok records of a cell's repeats, ordered by repeat, shape ``(n,)``."""
    records = sorted(records, key=lambda r: r.get("repeat", 1))
    if len(records) == 1:
        return mark_single(records[0])
    merged = copy.deepcopy(records[0])
    m = merged.setdefault("metrics", {})
    n = len(records)
    merged["warnings"] = _merge_warnings(records)
    merged["wall_s"] = sum(_num(r.get("wall_s")) or 0.0 for r in records)
    merged["repeat_records"] = [r.get("_path") for r in records if r.get("_path")]
    merged["finished_at"] = max((str(r.get("finished_at") or "") for r in records), default=None) or None
    merged.pop("repeat", None)
    m["repeats"] = [repeat_summary(r) for r in records]
    m["repeats_n"] = n
    m["interval"] = REPEATS
    if m.get("step_time_s"):
        merged["warnings"] += _merge_training(m, records)
    if m.get("cases"):
        merged["warnings"] += _merge_cases(m, records)
    if m.get("inference"):  # per batch size: p50 and p99 over repeats (fwbench.inference.records)
        merged["warnings"] += merge_inference(m, records)
    return new_record(**merged)  # the one constructor: every field, no stored _path


def _merge_training(m: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    medians = [s["median_step_s"] for s in m["repeats"]]
    ci = repeat_interval(medians)
    within = m["step_time_s"]
    m["step_time_within_run_s"] = within
    m["step_time_s"] = {"n": ci.n, "median": ci.center, "ci95_low": ci.low, "ci95_high": ci.high,
                        "cv": ci.cv, "unit": "repeat", "raw": [v for v in medians if v is not None],
                        "steps_per_unit": within.get("steps_per_unit")}
    old_median = _num(within.get("median"))
    old_thr = _num(m.get("throughput_samples_per_s"))
    batch = old_thr * old_median if old_thr and old_median else None
    if batch and ci.center:
        m["throughput_samples_per_s"] = batch / ci.center
        m["throughput_ci95"] = [batch / ci.high, batch / ci.low] if ci.low and ci.high else None
        thr = [s["throughput_samples_per_s"] for s in m["repeats"] if s["throughput_samples_per_s"]]
        m["throughput_mean_samples_per_s"] = sum(thr) / len(thr) if thr else None
        m["throughput_wide"] = bool(ci.relative_half_width and ci.relative_half_width > WIDE_INTERVAL)
        best = repeat_interval([s["best_step_s"] for s in m["repeats"]])
        if best.n:
            m["throughput_best_samples_per_s"] = batch / best.center
            m["throughput_best_ci95"] = [batch / best.high, batch / best.low] if best.low and best.high else None
        means = repeat_interval([s["mean_step_s"] for s in m["repeats"]])
        if means.n:  # whole-run speed: sees a stall every N steps that the median window leaves out
            m["throughput_total_samples_per_s"] = batch / means.center
        scale = old_median / ci.center if old_median else None
        for key in ("achieved_gflops", "percent_of_peak"):
            if _num(m.get(key)) is not None and scale:
                m[key] = m[key] * scale
    firsts = [v for v in (s["first_step_s"] for s in m["repeats"]) if v is not None]
    if firsts:
        m["first_step_s"] = median(firsts)
    hosts = [v for v in (s["peak_host_bytes"] for s in m["repeats"]) if isinstance(v, int | float)]
    if hosts:
        m["peak_host_bytes"] = max(hosts)
    return _unstable("train step", ci, ci.n)


_RATE_KEYS = ("gflops", "gbps", "percent_of_peak", "percent_of_bandwidth")


def _merge_cases(m: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    warnings: list[str] = []
    per_repeat = [(r.get("metrics") or {}).get("cases") or [] for r in records]
    for index, case in enumerate(m["cases"]):
        medians = [rows[index].get("median_s") if index < len(rows) else None for rows in per_repeat]
        ci = repeat_interval([v for v in medians if v is not None])
        if case.get("error") or ci.n < 2:
            continue
        case["within_run"] = {k: case.get(k) for k in ("median_s", "ci95", "cv", "repeats")}
        scale = case["median_s"] / ci.center if case.get("median_s") else None
        case["median_s"], case["ci95"], case["cv"] = ci.center, [ci.low, ci.high], ci.cv
        case["repeat_median_s"], case["repeats_n"], case["interval"] = medians, ci.n, REPEATS
        case["wide"] = bool(ci.relative_half_width and ci.relative_half_width > WIDE_INTERVAL)
        if case.get("inner"):
            case["unit_median_s"] = ci.center * case["inner"]
        for key in _RATE_KEYS:
            if _num(case.get(key)) is not None and scale:
                case[key] = case[key] * scale
        flops = _num(case.get("flops"))
        if "gflops_ci95" in case and flops:
            case["gflops_ci95"] = [flops / ci.high / 1e9, flops / ci.low / 1e9]
        name = " ".join(str(case.get(k)) for k in ("name", "shape", "pass", "optimizer", "model", "input")
                        if case.get(k) is not None)
        warnings += _unstable(name or f"case {index}", ci, ci.n)
    return warnings
