"""``bench compare BASE NEW``: pair the cells of two sets of records and judge each metric.

Cells are paired by (backend, task, device, dataset, overrides) and checked for like with like
(`fwbench.gate.comparable`: batch, dtype, threads, CPU, device, parameters). Per metric: base, new (the
geometric means of the per-repeat values the change is computed from), the ratio NEW/BASE with its
interval and a verdict (`fwbench.gate.verdicts`, docs/statistics.md):

* the units are **repeats** (one value per process, ``metrics["repeats"]``); a rate (throughput) is
  compared in samples/s; the interval is a t interval on logs (Welch, plus a known between-invocation
  term when the sides are separate invocations; paired by block when they ran interleaved, as in
  `bench ab`), at the level Holm's correction gives the row over every row of the comparison;
* faster / slower / unchanged / inconclusive on that interval, one logic; deterministic metrics
  (test accuracy at a fixed seed) judged exactly at any number of repeats;
* **no evidence, no pass**: a row that cannot be judged (fewer than 2 repeats a side, a metric
  missing on one side, a cell broken in BASE or new in NEW) fails the gate unless
  ``--allow-no-evidence``; a pair that ran on different settings fails unless ``--allow-env-change``;
* a cell that was ok in BASE and failed, timed out, was skipped or is missing in NEW is **failed**,
  a regression, always.

``bench compare`` exits 1 on any failing row (``--fail-on inconclusive``: on inconclusive ones too),
else 0; 2 on bad input.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..measure.statistics import INVOCATION_CV, RatioInterval, ratio_interval
from ..records.record import (
    FIRST_STEP,
    LATENCY_P50,
    LATENCY_P99,
    PEAK_DEVICE,
    PEAK_HOST,
    REPEATS,
    STEP_TIME,
    TEST_ACCURACY,
    THROUGHPUT,
    THROUGHPUT_BEST,
    THROUGHPUT_SPAN,
    THROUGHPUT_TOTAL,
    backend_label,  # keras[jax]: a frontend on an engine is its own cell
)
from .comparable import differences
from .output import VERDICT_MARK, VERDICT_STYLE, markdown, print_result, rich_table  # noqa: F401
from .verdicts import (  # noqa: F401  (re-exported: the verdict names are part of this module's surface)
    BAD_VERDICTS,
    ENV_CHANGED,
    FAILED,
    FASTER,
    IMPROVED,
    INCONCLUSIVE,
    NEEDED_CAP,
    NO_EVIDENCE,
    NOT_COMPARABLE,
    REGRESSED,
    SLOWER,
    UNCHANGED,
    UNJUDGED,
    decide,
    judge_exact,
    level_text,
    pct,
)

FAIL_ON = ("slower", "inconclusive")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _m(record: dict, key: str) -> Any:
    return (record.get("metrics") or {}).get(key)


def _batch(record: dict) -> float | None:
    return _num((((record.get("config") or {}).get("training")) or {}).get("batch_size"))


def _repeat_values(key: str) -> Callable[[dict], list[tuple[Any, float]]]:
    """Per-repeat ``(block or repeat index, value of key)`` from ``metrics["repeats"]``."""
    def values(record: dict) -> list[tuple[Any, float]]:
        repeats = _m(record, REPEATS)
        if not isinstance(repeats, list):
            return []
        out = []
        for i, r in enumerate(repeats, start=1):
            v = _num(r.get(key)) if isinstance(r, dict) else None
            if v is not None and v > 0:
                out.append((r.get("block") or r.get("repeat") or i, v))
        return out
    return values


def _fmt_count(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


@dataclass(frozen=True)
class Metric:
    """One compared metric: where its value is, which direction is better, how it is judged."""

    key: str
    label: str
    better: str  # "higher" or "lower"
    value: Callable[[dict], float | None]
    text: Callable[[float], str]
    repeats: Callable[[dict], list[tuple[Any, float]]] | None = None  # one value per repeat (the units)
    repeats_are_inverse: bool = False  # the repeats are step times of a rate: compared as batch / time
    optional: bool = False  # absent on both sides: not listed (e.g. device memory on CPU)
    speed: bool = False  # verdicts read faster / slower
    deterministic: bool = False  # the same on every repeat at a fixed seed: judged exactly at any N


def _rate(key: str, stat: str) -> Callable[[dict], float | None]:
    def value(record: dict) -> float | None:
        v = _num(_m(record, key))
        if v is None:
            stats = _m(record, STEP_TIME)
            t = _num(stats.get(stat)) if isinstance(stats, dict) else None
            batch = _batch(record)
            v = batch / t if t and batch else None
        return v
    return value


THROUGHPUT_LABEL = "throughput (samples/s)"
METRICS: tuple[Metric, ...] = (
    Metric("throughput", THROUGHPUT_LABEL, "higher", _rate(THROUGHPUT, "median"), _fmt_count,
           repeats=_repeat_values("median_step_s"), repeats_are_inverse=True, speed=True),
    Metric("throughput_best", "best-window throughput", "higher", _rate(THROUGHPUT_BEST, "min"),
           _fmt_count, repeats=_repeat_values("best_step_s"), repeats_are_inverse=True, optional=True, speed=True),
    Metric("throughput_total", "whole-run throughput (mean step)", "higher",
           _rate(THROUGHPUT_TOTAL, "mean"), _fmt_count,
           repeats=_repeat_values("mean_step_s"), repeats_are_inverse=True, optional=True, speed=True),
    Metric("throughput_span", "best-span throughput (stalls included)", "higher",
           _rate(THROUGHPUT_SPAN, "best_span"), _fmt_count,
           repeats=_repeat_values("best_span_step_s"), repeats_are_inverse=True, optional=True, speed=True),
    Metric("test_accuracy", "test accuracy", "higher", lambda r: _num(_m(r, TEST_ACCURACY)), lambda v: f"{v:.2%}",
           repeats=_repeat_values(TEST_ACCURACY), deterministic=True),
    Metric("peak_host_bytes", "peak host memory", "lower", lambda r: _num(_m(r, PEAK_HOST)),
           lambda v: f"{v / 2**20:,.1f} MiB", repeats=_repeat_values(PEAK_HOST)),
    Metric("peak_device_bytes", "peak device memory", "lower", lambda r: _num(_m(r, PEAK_DEVICE)),
           lambda v: f"{v / 2**20:,.1f} MiB", repeats=_repeat_values(PEAK_DEVICE), optional=True),
    Metric("compile_s", "first step (compile)", "lower", lambda r: _num(_m(r, FIRST_STEP)),
           lambda v: f"{v:.3g} s", repeats=_repeat_values(FIRST_STEP), speed=True),
    # inference records (docs/inference.md): one call at the sweep's smallest batch
    Metric("latency_p50", "latency p50", "lower", lambda r: _num(_m(r, LATENCY_P50)),
           lambda v: f"{v * 1e3:.3g} ms", repeats=_repeat_values(LATENCY_P50), optional=True, speed=True),
    Metric("latency_p99", "latency p99", "lower", lambda r: _num(_m(r, LATENCY_P99)),
           lambda v: f"{v * 1e3:.3g} ms", repeats=_repeat_values(LATENCY_P99), optional=True, speed=True),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


@dataclass
class Row:
    cell: str
    metric: str
    better: str
    base: str
    new: str
    change: float | None  # ratio NEW/BASE - 1 (for throughput: of samples/s)
    p_value: float | None
    verdict: str
    reason: str = ""
    ci: tuple[float, float] | None = None  # interval of the ratio NEW/BASE at ``level``
    needed: int | None = None  # repeats a side that would decide an inconclusive row
    repeats: tuple[int, int] | None = None  # (BASE, NEW) repeats used
    level: float | None = None  # the interval's confidence level (Holm's for this row)
    mde: float | None = None  # smallest change detectable at this N, for an inconclusive row
    estimate: RatioInterval | None = field(default=None, repr=False)  # waiting for `decide`
    speed: bool = False


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    threshold: float = 0.05
    alpha: float = 0.01
    notes: list[str] = field(default_factory=list)
    allow_no_evidence: bool = False
    allow_env_change: bool = False
    threshold_text: str | None = None  # as the user wrote it
    tuned: list[str] = field(default_factory=list)  # `bench tune` runs: each side as written / at its best

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    @property
    def regressed(self) -> bool:
        return any(r.verdict in BAD_VERDICTS for r in self.rows)

    @property
    def inconclusive(self) -> bool:
        return self.count(INCONCLUSIVE) > 0

    def failing(self, fail_on: str = "slower") -> list[Row]:
        """The rows that fail the gate: slower/regressed/failed; rows that cannot be judged (unless
        ``allow_no_evidence``); pairs on different settings (unless ``allow_env_change``); and
        inconclusive ones with ``fail_on="inconclusive"``."""
        bad = BAD_VERDICTS + ((INCONCLUSIVE,) if fail_on == "inconclusive" else ())
        bad += () if self.allow_no_evidence else UNJUDGED
        bad += () if self.allow_env_change else (ENV_CHANGED,)
        return [r for r in self.rows if r.verdict in bad]

    def summary(self) -> str:
        counts = {v: self.count(v) for v in (FAILED, SLOWER, REGRESSED, FASTER, IMPROVED, UNCHANGED, INCONCLUSIVE,
                                             NO_EVIDENCE, NOT_COMPARABLE, ENV_CHANGED)}
        parts = [f"{n} {v}" for v, n in counts.items() if n or v in (SLOWER, UNCHANGED, INCONCLUSIVE)]
        given = f" from {self.threshold_text!r}" if self.threshold_text else ""
        return (f"{', '.join(parts)} (threshold {pct(self.threshold)}{given}, family-wise alpha {self.alpha:g} "
                f"(Holm over {sum(r.level is not None for r in self.rows)} judged rows), "
                f"{len({r.cell for r in self.rows})} cell(s))")


# ---------------------------------------------------------------------------------------------
# Parsing and loading
# ---------------------------------------------------------------------------------------------

def parse_threshold(text: str) -> float:
    """``5%`` → 0.05 and ``0.05`` → 0.05: a percentage with ``%``, else a fraction below 1.

    Raises `UsageError` naming the fix (a bare ``5`` is refused: 5 as a fraction is 500%).
    """
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1].strip() if percent else raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--threshold {text!r}: expected a percentage such as 5% or a fraction such as 0.05")
    if not percent and value >= 1:
        raise UsageError(f"--threshold {text!r}: a number without % is a fraction ({value:g} = {value:.0%}); "
                         f"write {value:g}% or {value / 100:g}")
    return value / 100 if percent else value


def parse_alpha(text: str | float) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < 1:
        raise UsageError(f"--alpha {text!r}: expected a significance level between 0 and 1, such as 0.01")
    return value


def load_side(paths: Iterable[str | Path], name: str) -> tuple[list[dict], list[str]]:
    """The records of one side (BASE or NEW) and the messages of skipped files."""
    from ..records.results import load_records

    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{name} {str(p)!r}: no such file or folder; pass a results folder or record file")
    skipped: list[str] = []
    # a side of a `bench ab` output (OUT/base): its merged cells, not the single blocks
    paths = [p / "cells" if (p / "cells").is_dir() and (p / "blocks").is_dir() else p for p in paths]
    records = load_records(paths, skipped)
    if not records:
        where = ", ".join(map(str, paths))
        why = f" ({skipped[0]}{f' and {len(skipped) - 1} more' if len(skipped) > 1 else ''})" if skipped else ""
        raise UsageError(f"{name} {where!r}: no readable fwbench records{why}; run `bench run --out {where}` first")
    return records, skipped


# ---------------------------------------------------------------------------------------------
# Pairing and judging
# ---------------------------------------------------------------------------------------------

def _dataset(record: dict) -> str | None:
    return record.get("dataset") or (record.get("overrides") or {}).get("dataset.name")


def cell_key(record: dict, with_dataset: bool = True) -> tuple:
    overrides = json.dumps(record.get("overrides") or {}, sort_keys=True, default=str)
    key = (backend_label(record), str(record.get("task")), str(record.get("device")), overrides)
    return key + ((str(_dataset(record)),) if with_dataset else ())


def cell_label(key: tuple) -> str:
    backend, task, device, overrides, *dataset = key
    settings = " ".join(f"{k}={v}" for k, v in json.loads(overrides).items() if k != "dataset.name")
    parts = [backend, task] + ([dataset[0]] if dataset and dataset[0] != "None" else []) + [device]
    return " · ".join(parts) + (f" [{settings}]" if settings else "")


def _latest(records: list[dict]) -> dict[tuple, tuple[dict, int]]:
    """Per cell key: the latest record (by finished_at) and how many there were."""
    out: dict[tuple, tuple[dict, int]] = {}
    for r in records:
        key = cell_key(r)
        if key in out:
            old, n = out[key]
            newer = str(r.get("finished_at") or "") >= str(old.get("finished_at") or "")
            out[key] = (r if newer else old, n + 1)
        else:
            out[key] = (r, 1)
    return out


def pair(base: list[dict], new: list[dict]) -> list[tuple[tuple, dict | None, dict | None]]:
    """(key, base record or None, new record or None) for every cell on either side.

    A record without a dataset (a cell that failed before loading data) pairs with the one cell of
    the other side that matches it on everything else.
    """
    b, n = _latest(base), _latest(new)
    pairs = {k: [b[k][0] if k in b else None, n[k][0] if k in n else None] for k in list(b) + list(n)}
    lone = [k for k, (x, y) in pairs.items() if (x is None) != (y is None)]
    for k in lone:
        if k not in pairs or k[-1] != "None":
            continue
        side = 0 if pairs[k][0] is not None else 1
        matches = [o for o in lone if o != k and o in pairs and o[:-1] == k[:-1] and pairs[o][side] is None]
        if len(matches) == 1:
            other = matches[0]
            pairs[other][side] = pairs.pop(k)[side]
    return [(k, x, y) for k, (x, y) in sorted(pairs.items())]


def _same_measurement(base: dict, new: dict) -> bool:
    """The very same record on both sides (``bench compare R R``): no change, with certainty."""
    def identity(r: dict) -> tuple:
        m = r.get("metrics") or {}
        return (r.get("run_id"), r.get("cell_id"), r.get("finished_at"), json.dumps(m.get(REPEATS), default=str),
                json.dumps(m.get(STEP_TIME), default=str))
    return identity(base) == identity(new)


def _values(metric: Metric, record: dict) -> list[tuple[Any, float]]:
    """The units of ``metric`` in ``record``: (pairing key, value) per repeat; a rate's step times
    become samples/s (batch / time), so a change of batch size is not a change of speed."""
    raw = metric.repeats(record) if metric.repeats else []
    if metric.repeats_are_inverse:
        batch = _batch(record) or 1.0
        raw = [(k, batch / v) for k, v in raw]
    return raw


def _aligned(braw: list, nraw: list, paired: bool) -> tuple[list[float], list[float], bool]:
    """The two sides' values; paired by block (or repeat) index when ``paired`` and >= 2 are shared."""
    if paired:
        b, n = dict(braw), dict(nraw)
        common = [k for k in b if k in n and k is not None]
        if len(common) >= 2 and len(b) == len(braw) and len(n) == len(nraw):
            return [b[k] for k in common], [n[k] for k in common], True
    return [v for _, v in braw], [v for _, v in nraw], False


def _geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def compare_metric(metric: Metric, base: dict, new: dict, threshold: float, alpha: float, label: str,
                   paired: bool = False) -> Row | None:
    """One metric of one pair of ok cells. A row with ``estimate`` set waits for `decide` (the family)."""
    bv, nv = metric.value(base), metric.value(new)
    braw, nraw = _values(metric, base), _values(metric, new)
    if bv is None and nv is None and not braw and not nraw:
        return None  # measured on neither side (device memory on a CPU, accuracy of a microbenchmark)
    if metric.optional and (len(braw) < 2 or len(nraw) < 2):
        return None  # an auxiliary statistic some repeats lack (e.g. too few units for a span): not judged
    row = Row(label, metric.label, metric.better, metric.text(bv) if bv is not None else "—",
              metric.text(nv) if nv is not None else "—", None, None, NO_EVIDENCE, speed=metric.speed)
    if (bv is None and not braw) or (nv is None and not nraw):
        row.reason = f"no {metric.key} in {'BASE' if bv is None and not braw else 'NEW'}: nothing to judge"
        return row
    if _same_measurement(base, new):
        row.change, row.verdict, row.ci, row.p_value = 0.0, UNCHANGED, (1.0, 1.0), 1.0
        row.reason = "the same measurement on both sides"
        return row
    bvals, nvals, is_paired = _aligned(braw, nraw, paired)
    row.repeats = (len(bvals), len(nvals))
    one = {side: vals or ([v] if v is not None else []) for side, vals, v in (("BASE", bvals, bv), ("NEW", nvals, nv))}
    if metric.deterministic and all(len(set(v)) == 1 for v in one.values()) and all(one.values()):
        b0, n0 = one["BASE"][0], one["NEW"][0]
        row.base, row.new = metric.text(b0), metric.text(n0)
        if b0 == 0:
            row.verdict, row.reason = (UNCHANGED, "exact") if n0 == 0 else (NOT_COMPARABLE, "base is 0")
            return row
        row.change, row.ci = n0 / b0 - 1, (n0 / b0, n0 / b0)
        row.verdict, row.reason = judge_exact(n0 / b0, metric.better, metric.speed, threshold)
        return row
    if len(bvals) < 2 or len(nvals) < 2:
        few = "BASE" if len(bvals) < 2 else "NEW"
        row.reason = (f"{max(min(len(bvals), len(nvals)), 1)} repeat(s) in {few}: no interval across runs; "
                      "run with --repeat 3 or more")
        return row
    bg, ng = _geomean(bvals), _geomean(nvals)
    row.base, row.new = metric.text(bg), metric.text(ng)  # the statistic of the change
    extra = 2 * INVOCATION_CV ** 2 if metric.speed and not is_paired else 0.0
    ratio = ratio_interval(bvals, nvals, 1 - alpha, is_paired, extra_var=extra)
    row.change, row.ci, row.p_value, row.estimate = ratio.ratio - 1, (ratio.low, ratio.high), ratio.p_value, ratio
    return row


def _cell_verdict(b: dict | None, n: dict | None) -> tuple[str, str] | None:
    """A verdict for the cell as a whole, or None when both sides are ok (judge the metrics)."""
    if b is None:
        return NOT_COMPARABLE, "missing in BASE (a new cell): nothing to judge it against"
    if n is None:
        return (FAILED, "ok in BASE, missing in NEW") if b.get("status") == "ok" else \
            (NOT_COMPARABLE, f"missing in NEW, {b.get('status')} in BASE: cannot judge")
    if b.get("status") == "ok" and n.get("status") != "ok":
        error = f": {n.get('error')}" if n.get("error") else ""
        return FAILED, f"ok in BASE, {n.get('status')} in NEW{error}"
    if b.get("status") != "ok":
        error = f": {b.get('error')}" if b.get("error") else ""
        return NOT_COMPARABLE, f"{b.get('status')} in BASE{error}; {n.get('status')} in NEW: cannot judge"
    return None


def compare(base: list[dict], new: list[dict], threshold: float = 0.05, alpha: float = 0.01,
            metrics: Iterable[str] | None = None, paired: bool = False, *, allow_no_evidence: bool = False,
            allow_env_change: bool = False) -> Comparison:
    """Judge every metric of every paired cell. ``metrics`` limits the metric keys (default: all).

    ``paired``: the repeats of BASE and NEW ran side by side in blocks (`bench ab`): paired by block.
    ``alpha`` is the family-wise level: Holm's correction over every judged row.
    Raises `UsageError` when BASE and NEW share no cell at all (e.g. runs of different tasks).
    """
    chosen = [m for m in METRICS if metrics is None or m.key in set(metrics)]
    result = Comparison(threshold=threshold, alpha=alpha, allow_no_evidence=allow_no_evidence,
                        allow_env_change=allow_env_change)
    counts_b, counts_n = _latest(base), _latest(new)
    pairs = pair(base, new)
    if base and new and not any(b is not None and n is not None for _, b, n in pairs):
        def cells(records: list[dict]) -> str:
            labels = sorted({cell_label(cell_key(r)) for r in records})
            return ", ".join(labels[:2]) + (f" and {len(labels) - 2} more" if len(labels) > 2 else "")
        from ..run.tuning import is_tune_record

        tuned = [name for name, side in (("BASE", base), ("NEW", new)) if any(map(is_tune_record, side))]
        hint = (f"; {tuned[0]} is a `bench tune` run, whose cells name their precision, execution mode and "
                "placement: compare it with another `bench tune` run" if len(tuned) == 1 else "")
        raise UsageError(f"BASE and NEW share no cell (BASE: {cells(base)}; NEW: {cells(new)}); compare runs of "
                         f"the same backends, tasks, dataset and --set values{hint}")
    for key, b, n in pairs:
        label = cell_label(key)
        for side, records in (("BASE", counts_b), ("NEW", counts_n)):
            if key in records and records[key][1] > 1:
                result.notes.append(f"{label}: {records[key][1]} records in {side}; compared the latest")
        whole = _cell_verdict(b, n)
        if whole is not None:
            result.rows.append(Row(label, "(cell)", "", "—" if b is None else str(b.get("status")),
                                   "—" if n is None else str(n.get("status")), None, None, *whole))
            continue
        changed = differences(b, n)
        if changed:
            result.rows.append(Row(label, "(settings)", "", "", "", None, None, ENV_CHANGED,
                                   "; ".join(changed) + ": not like with like (--allow-env-change to accept)"))
        for metric in chosen:
            row = compare_metric(metric, b, n, threshold, alpha, label, paired)
            if row is not None:
                result.rows.append(row)
    family = [r for r in result.rows if r.estimate is not None]
    for row, judged in zip(family, decide([(r.estimate, r.better, r.speed) for r in family], threshold, alpha),
                           strict=True):
        row.verdict, row.reason, row.ci, row.level = judged.verdict, judged.reason, judged.ci, judged.level
        row.needed, row.mde = judged.needed, judged.mde
    result.tuned = tuned_summary(base, new)
    if any(r.estimate is not None and r.estimate.extra_var for r in family):
        result.notes.append(
            f"BASE and NEW are separate invocations: timing intervals include a between-invocation spread of "
            f"{INVOCATION_CV:.0%} a side (measured, docs/statistics.md), so a change below about "
            f"{math.expm1(2.6 * math.sqrt(2) * INVOCATION_CV):.0%} is never called; `bench ab` runs both "
            "sides in one interleaved invocation and sees smaller changes")
    return result


def tuned_summary(base: list[dict], new: list[dict]) -> list[str]:
    """For sides that are `bench tune` runs: each cell as written and at its best, per side
    (`fwbench.run.tuning.judge`, at the tolerance of each side's ``tune.json``). The table above pairs configurations one by one (the overrides
    are part of the cell), never the as-written cell of one side with the best of the other."""
    from ..run.tuning import is_tune_record, judge, run_tolerance, summary_lines

    out = []
    for name, records in (("BASE", base), ("NEW", new)):
        tuned = [r for r in records if is_tune_record(r)]
        if tuned:
            out += [f"{name} {line}" for line in summary_lines(judge(tuned, tolerance=run_tolerance(tuned)))]
    return out


# ---------------------------------------------------------------------------------------------
# Options and the command
# ---------------------------------------------------------------------------------------------

def options(args) -> tuple[float, float, list[str] | None]:
    """Threshold, alpha and metrics from parsed arguments (`UsageError` naming the fix)."""
    threshold = parse_threshold(args.threshold)
    alpha = parse_alpha(args.alpha)
    metrics = None
    if args.metric:
        names = [n.strip() for item in args.metric for n in str(item).split(",") if n.strip()]
        unknown = sorted(set(names) - set(METRIC_KEYS))
        if unknown:
            raise UsageError(f"--metric {unknown[0]!r}: unknown; expected one of: {', '.join(METRIC_KEYS)}")
        metrics = names
    return threshold, alpha, metrics


def exit_code(result: Comparison, fail_on: str) -> int:
    """1 when any row fails the gate (`Comparison.failing`), else 0."""
    return 1 if result.failing(fail_on) else 0


def cmd_compare(args) -> int:
    """The ``bench compare`` handler: exit 1 on a regression or a row without evidence, else 0."""
    import sys

    threshold, alpha, metrics = options(args)
    base, skipped_b = load_side([args.base], "BASE")
    new, skipped_n = load_side([args.new], "NEW")
    for message in skipped_b + skipped_n:
        print(f"bench: warning: {message}", file=sys.stderr)
    paired = all(isinstance(r.get("ab"), dict) for r in base + new)  # two sides of one `bench ab`
    result = compare(base, new, threshold, alpha, metrics, paired, allow_no_evidence=args.allow_no_evidence,
                     allow_env_change=args.allow_env_change)
    result.threshold_text = args.threshold
    if paired:
        result.notes.append("both sides are `bench ab` cells: repeats paired by block")
    print_result(result, args.format, args.fail_on)
    return exit_code(result, args.fail_on)
