"""``bench compare BASE NEW``: pair the cells of two sets of records and judge each metric.

Cells are paired by (backend, task, device, dataset, overrides). Per metric: base, new, the ratio
NEW/BASE with its interval and a verdict (docs/statistics.md):

* the units are **repeats** (one value per process, ``metrics["repeats"]``): the ratio of geometric
  means with a t interval on logs at level ``1 - alpha`` (Welch; paired when the repeats ran in
  interleaved pairs, as in `bench ab`), and the p-value of "no change";
* **faster / slower** (improved / regressed for non-speed metrics): significant (``p < alpha``) *and*
  moved by more than the threshold; **unchanged**: the whole interval lies within ``1 ± threshold``;
  **inconclusive**: anything else, with the number of repeats that would decide it;
* a cell that was ok in BASE and failed, timed out, was skipped or is missing in NEW is **failed**,
  a regression, always.

``bench compare`` exits 1 on any slower / regressed / failed row (``--fail-on inconclusive``: on
inconclusive ones too), else 0.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .frontends import backend_label  # keras[jax]: a frontend on an engine is its own cell
from .statistics import RatioInterval, ratio_interval, repeats_needed

FASTER, SLOWER = "faster", "slower"
IMPROVED, REGRESSED = "improved", "regressed"
UNCHANGED, INCONCLUSIVE = "unchanged", "inconclusive"
FAILED, NOT_COMPARABLE = "failed", "not comparable"
BAD_VERDICTS = (SLOWER, REGRESSED, FAILED)
VERDICT_STYLE = {FASTER: "bold green", IMPROVED: "bold green", SLOWER: "bold red", REGRESSED: "bold red",
                 FAILED: "bold red", UNCHANGED: "dim", INCONCLUSIVE: "yellow", NOT_COMPARABLE: "yellow"}
VERDICT_MARK = {FASTER: "🟢", IMPROVED: "🟢", SLOWER: "🔴", REGRESSED: "🔴", FAILED: "🔴", UNCHANGED: "⚪",
                INCONCLUSIVE: "🟡", NOT_COMPARABLE: "⚠️"}
FAIL_ON = ("slower", "inconclusive")
NEEDED_CAP = 200  # repeats_needed's cap: beyond it, say "more than"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _m(record: dict, key: str) -> Any:
    return (record.get("metrics") or {}).get(key)


def _repeat_values(key: str) -> Callable[[dict], list[float]]:
    """Per-repeat values of ``key`` from ``metrics["repeats"]`` (a record of one repeat: its own value)."""
    def values(record: dict) -> list[float]:
        repeats = _m(record, "repeats")
        if isinstance(repeats, list) and repeats:
            return [v for v in (_num(r.get(key)) for r in repeats if isinstance(r, dict)) if v is not None and v > 0]
        return []
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
    repeats: Callable[[dict], list[float]] | None = None  # one value per repeat (the units)
    repeats_are_inverse: bool = False  # the repeats are times of a rate (lower time = higher value)
    optional: bool = False  # absent on both sides: not listed (e.g. device memory on CPU)
    speed: bool = False  # verdicts read faster / slower


def _throughput(record: dict) -> float | None:
    value = _num(_m(record, "throughput_samples_per_s"))
    if value is None:
        stats = _m(record, "step_time_s")
        median = _num(stats.get("median")) if isinstance(stats, dict) else None
        batch = _num((((record.get("config") or {}).get("training")) or {}).get("batch_size"))
        value = batch / median if median and batch else None
    return value


THROUGHPUT_LABEL = "throughput (samples/s)"
METRICS: tuple[Metric, ...] = (
    Metric("throughput", THROUGHPUT_LABEL, "higher", _throughput, _fmt_count,
           repeats=_repeat_values("median_step_s"), repeats_are_inverse=True, speed=True),
    Metric("throughput_best", "best-window throughput", "higher",
           lambda r: _num(_m(r, "throughput_best_samples_per_s")), _fmt_count,
           repeats=_repeat_values("best_step_s"), repeats_are_inverse=True, optional=True, speed=True),
    Metric("test_accuracy", "test accuracy", "higher", lambda r: _num(_m(r, "test_accuracy")), lambda v: f"{v:.2%}",
           repeats=_repeat_values("test_accuracy")),
    Metric("peak_host_bytes", "peak host memory", "lower", lambda r: _num(_m(r, "peak_host_bytes")),
           lambda v: f"{v / 2**20:,.1f} MiB", repeats=_repeat_values("peak_host_bytes")),
    Metric("peak_device_bytes", "peak device memory", "lower", lambda r: _num(_m(r, "peak_device_bytes")),
           lambda v: f"{v / 2**20:,.1f} MiB", repeats=_repeat_values("peak_device_bytes"), optional=True),
    Metric("compile_s", "first step (compile)", "lower", lambda r: _num(_m(r, "first_step_s")),
           lambda v: f"{v:.3g} s", repeats=_repeat_values("first_step_s"), speed=True),
    # inference records (docs/inference.md): one call at the sweep's smallest batch
    Metric("latency_p50", "latency p50", "lower", lambda r: _num(_m(r, "latency_p50_s")),
           lambda v: f"{v * 1e3:.3g} ms", repeats=_repeat_values("latency_p50_s"), optional=True, speed=True),
    Metric("latency_p99", "latency p99", "lower", lambda r: _num(_m(r, "latency_p99_s")),
           lambda v: f"{v * 1e3:.3g} ms", repeats=_repeat_values("latency_p99_s"), optional=True, speed=True),
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
    ci: tuple[float, float] | None = None  # interval of the ratio NEW/BASE at level 1 - alpha
    needed: int | None = None  # repeats a side that would decide an inconclusive row
    repeats: tuple[int, int] | None = None  # (BASE, NEW) repeats used


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    threshold: float = 0.05
    alpha: float = 0.01
    notes: list[str] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    @property
    def regressed(self) -> bool:
        return any(r.verdict in BAD_VERDICTS for r in self.rows)

    @property
    def inconclusive(self) -> bool:
        return self.count(INCONCLUSIVE) > 0

    def failing(self, fail_on: str = "slower") -> list[Row]:
        """The rows that fail the gate: slower/regressed/failed, and inconclusive with ``inconclusive``."""
        bad = BAD_VERDICTS + ((INCONCLUSIVE,) if fail_on == "inconclusive" else ())
        return [r for r in self.rows if r.verdict in bad]

    def summary(self) -> str:
        counts = {v: self.count(v) for v in (FAILED, SLOWER, REGRESSED, FASTER, IMPROVED, UNCHANGED, INCONCLUSIVE,
                                             NOT_COMPARABLE)}
        parts = [f"{n} {v}" for v, n in counts.items() if n or v in (SLOWER, UNCHANGED, INCONCLUSIVE)]
        return (f"{', '.join(parts)} (threshold {self.threshold:.1%}, alpha {self.alpha:g}, "
                f"{len({r.cell for r in self.rows})} cell(s))")


# ---------------------------------------------------------------------------------------------
# Parsing and loading
# ---------------------------------------------------------------------------------------------

def parse_threshold(text: str) -> float:
    """``5%`` (or ``5``, read as percent) → 0.05. Raises `UsageError` naming the fix."""
    raw = str(text).strip()
    number = raw[:-1].strip() if raw.endswith("%") else raw
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--threshold {text!r}: expected a non-negative percentage such as 5% or 2.5%")
    return value / 100


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
    from .results import load_records

    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{name} {str(p)!r}: no such file or folder; pass a results folder or record file")
    skipped: list[str] = []
    records = load_records(paths, skipped)
    if not records:
        where = ", ".join(map(str, paths))
        raise UsageError(f"{name} {where!r}: no readable fwbench records; run `bench run --out {where}` first")
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


def _words(metric: Metric) -> tuple[str, str]:
    return (FASTER, SLOWER) if metric.speed else (IMPROVED, REGRESSED)


def judge(ratio: RatioInterval, metric: Metric, threshold: float, alpha: float) -> tuple[str, str, int | None]:
    """(verdict, reason, repeats needed) of one ratio NEW/BASE (of the metric's own values)."""
    good, bad = _words(metric)
    change = ratio.ratio - 1
    better = change > 0 if metric.better == "higher" else change < 0
    if ratio.p_value < alpha and abs(change) > threshold:
        return (good if better else bad), "", None
    if 1 - threshold <= ratio.low and ratio.high <= 1 + threshold:
        return UNCHANGED, "", None
    needed = repeats_needed(ratio, threshold, 1 - alpha, cap=NEEDED_CAP)
    if abs(change) > threshold:
        why = f"moved {change:+.1%} but p={ratio.p_value:.2g} ≥ {alpha:g}"
    elif ratio.p_value < alpha:
        why = f"significant {change:+.1%}, but the interval reaches past ±{threshold:.0%}"
    else:
        why = f"the interval reaches past ±{threshold:.0%}"
    more = (f"; more than {needed} repeats a side would be needed" if needed and needed >= NEEDED_CAP else
            f"; about {needed} repeats a side would decide it" if needed else "")
    return INCONCLUSIVE, why + more, needed


def _same_measurement(base: dict, new: dict) -> bool:
    """The very same record on both sides (``bench compare R R``): no change, with certainty."""
    def identity(r: dict) -> tuple:
        m = r.get("metrics") or {}
        return (r.get("run_id"), r.get("cell_id"), r.get("finished_at"), json.dumps(m.get("repeats"), default=str),
                json.dumps(m.get("step_time_s"), default=str))
    return identity(base) == identity(new)


def compare_metric(metric: Metric, base: dict, new: dict, threshold: float, alpha: float, label: str,
                   paired: bool = False) -> Row | None:
    bv, nv = metric.value(base), metric.value(new)
    if bv is None and nv is None and metric.optional:
        return None
    row = Row(label, metric.label, metric.better, metric.text(bv) if bv is not None else "—",
              metric.text(nv) if nv is not None else "—", None, None, NOT_COMPARABLE)
    if bv is None or nv is None:
        row.reason = f"no {metric.key} in {'BASE' if bv is None else 'NEW'}"
        return row
    if bv == 0:
        row.verdict = UNCHANGED if nv == 0 else NOT_COMPARABLE
        row.reason = "" if nv == 0 else "base is 0: no relative change"
        return row
    row.change = nv / bv - 1
    if _same_measurement(base, new):
        row.verdict, row.ci, row.p_value = UNCHANGED, (1.0, 1.0), 1.0
        row.reason = "the same measurement on both sides"
        return row
    braw = metric.repeats(base) if metric.repeats else []
    nraw = metric.repeats(new) if metric.repeats else []
    row.repeats = (len(braw), len(nraw))
    if len(braw) < 2 or len(nraw) < 2:
        row.verdict = INCONCLUSIVE
        few = "BASE" if len(braw) < 2 else "NEW"
        row.reason = f"{max(len(braw), 1) if few == 'BASE' else max(len(nraw), 1)} repeat(s) in {few}: " \
                     "no interval across runs; run with --repeat 3 or more"
        return row
    # the ratio of the metric: for a rate measured as times, NEW/BASE = base time / new time
    ratio = (ratio_interval(nraw, braw, 1 - alpha, paired) if metric.repeats_are_inverse
             else ratio_interval(braw, nraw, 1 - alpha, paired))
    row.change, row.ci, row.p_value = ratio.ratio - 1, (ratio.low, ratio.high), ratio.p_value
    row.verdict, row.reason, row.needed = judge(ratio, metric, threshold, alpha)
    return row


def _cell_verdict(b: dict | None, n: dict | None) -> tuple[str, str] | None:
    """A verdict for the cell as a whole, or None when both sides are ok (judge the metrics)."""
    if b is None:
        return NOT_COMPARABLE, "missing in BASE (a new cell)"
    if n is None:
        return (FAILED, "ok in BASE, missing in NEW") if b.get("status") == "ok" else \
            (NOT_COMPARABLE, f"missing in NEW, {b.get('status')} in BASE")
    if b.get("status") == "ok" and n.get("status") != "ok":
        error = f": {n.get('error')}" if n.get("error") else ""
        return FAILED, f"ok in BASE, {n.get('status')} in NEW{error}"
    if b.get("status") != "ok":
        error = f": {b.get('error')}" if b.get("error") else ""
        return NOT_COMPARABLE, f"{b.get('status')} in BASE{error}; {n.get('status')} in NEW"
    return None


def compare(base: list[dict], new: list[dict], threshold: float = 0.05, alpha: float = 0.01,
            metrics: Iterable[str] | None = None, paired: bool = False) -> Comparison:
    """Judge every metric of every paired cell. ``metrics`` limits the metric keys (default: all).

    ``paired``: the i-th repeats of BASE and NEW ran side by side (`bench ab`).
    Raises `UsageError` when BASE and NEW share no cell at all (e.g. runs of different tasks).
    """
    chosen = [m for m in METRICS if metrics is None or m.key in set(metrics)]
    result = Comparison(threshold=threshold, alpha=alpha)
    counts_b, counts_n = _latest(base), _latest(new)
    pairs = pair(base, new)
    if base and new and not any(b is not None and n is not None for _, b, n in pairs):
        def cells(records: list[dict]) -> str:
            labels = sorted({cell_label(cell_key(r)) for r in records})
            return ", ".join(labels[:2]) + (f" and {len(labels) - 2} more" if len(labels) > 2 else "")
        raise UsageError(f"BASE and NEW share no cell (BASE: {cells(base)}; NEW: {cells(new)}); compare runs of "
                         "the same backends, tasks, dataset and --set values")
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
        for metric in chosen:
            row = compare_metric(metric, b, n, threshold, alpha, label, paired)
            if row is not None:
                result.rows.append(row)
    return result


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def _change_text(change: float | None) -> str:
    return "—" if change is None else f"{change:+.1%}"


def _ratio_text(row: Row) -> str:
    """``-4.1% [-6.0%, -2.2%]``: the change NEW/BASE - 1 and its interval."""
    text = _change_text(row.change)
    if row.ci is not None and row.change is not None:
        text += f" [{row.ci[0] - 1:+.1%}, {row.ci[1] - 1:+.1%}]"
    return text


def _p_text(p: float | None) -> str:
    return "—" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def _n_text(row: Row) -> str:
    return "—" if row.repeats is None else f"{row.repeats[0]}/{row.repeats[1]}"


BETTER_TEXT = {"higher": "↑ higher", "lower": "↓ lower", "": ""}
COLUMNS = ("cell", "metric", "better", "base", "new", "change [CI]", "p", "repeats", "verdict")


def _cells(r: Row) -> list[str]:
    return [r.cell, r.metric, BETTER_TEXT[r.better], r.base, r.new, _ratio_text(r), _p_text(r.p_value), _n_text(r)]


def rich_table(result: Comparison, title: str = "bench compare: BASE → NEW"):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", header_style="bold")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("cell", "metric", "better", "verdict") else "right",
                         overflow="fold")
    previous = None
    for r in result.rows:
        if previous is not None and r.cell != previous:
            table.add_section()
        verdict = Text(r.verdict, style=VERDICT_STYLE[r.verdict])
        if r.reason:
            verdict.append(f" ({r.reason})", style="dim")
        plain = _cells(r)
        plain[0] = r.cell if r.cell != previous else ""
        table.add_row(*map(Text, plain), verdict)  # Text: a "[k=v]" in a label is not markup
        previous = r.cell
    return table


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def headline(result: Comparison, fail_on: str = "slower") -> str:
    if result.regressed:
        return "❌ regression"
    if fail_on == "inconclusive" and result.inconclusive:
        return "❌ inconclusive"
    return "✅ no regression" + (" (some rows inconclusive)" if result.inconclusive else "")


def markdown(result: Comparison, fail_on: str = "slower", title: str = "fwbench compare") -> str:
    lines = [f"### {title}: {headline(result, fail_on)}", "", result.summary() + ".", "",
             "| " + " | ".join(COLUMNS) + " |", "|:--|:--|:--|--:|--:|--:|--:|--:|:--|"]
    for r in result.rows:
        verdict = f"{VERDICT_MARK[r.verdict]} {r.verdict}" + (f" ({r.reason})" if r.reason else "")
        lines.append("| " + " | ".join(_md(c) for c in [*_cells(r), verdict]) + " |")
    lines += [f"- {_md(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def add_compare_options(parser) -> None:
    """The judging options shared by `bench compare` and `bench ab`."""
    parser.add_argument("--threshold", default="5%",
                        help="smallest relative change that counts, as a percentage (default: 5%%)")
    parser.add_argument("--alpha", default="0.01",
                        help="significance level; intervals are at 1 - alpha (default: 0.01 → 99%%)")
    parser.add_argument("--format", choices=["text", "md"], default="text",
                        help="text (a table for the terminal) or md (for a pull-request comment / job summary)")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME",
                        help="compare only this metric (repeatable): " + ", ".join(METRIC_KEYS))
    parser.add_argument("--fail-on", choices=FAIL_ON, default="slower",
                        help="slower (default): exit 1 on a slower/regressed metric or a failed cell; "
                             "inconclusive: also when a metric is inconclusive")


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


def print_result(result: Comparison, fmt: str, fail_on: str, title: str = "bench compare: BASE → NEW") -> None:
    import sys

    from rich.text import Text

    from .display import make_console

    if fmt == "md":
        sys.stdout.write(markdown(result, fail_on))
        return
    console = make_console()
    console.print(rich_table(result, title))
    for note in result.notes:
        console.print(Text(note, style="dim"))
    bad = bool(result.failing(fail_on))
    console.print(Text((headline(result, fail_on).split(" ", 1)[1] + ": ") if bad or result.regressed else
                       "no regression: ", style="bold red" if bad else "green") + Text(result.summary()))
    for row in result.failing(fail_on):
        console.print(Text(f"  {row.verdict}: {row.cell} · {row.metric}" + (f" ({row.reason})" if row.reason else ""),
                           style="red"))


def exit_code(result: Comparison, fail_on: str, strict: bool = False) -> int:
    if strict and any(r.verdict == NOT_COMPARABLE for r in result.rows):
        return 1
    return 1 if result.failing(fail_on) else 0


def cmd_compare(args) -> int:
    """The ``bench compare`` handler: exit 1 on a regression (or per --fail-on), else 0."""
    import sys

    threshold, alpha, metrics = options(args)
    base, skipped_b = load_side([args.base], "BASE")
    new, skipped_n = load_side([args.new], "NEW")
    for message in skipped_b + skipped_n:
        print(f"bench: warning: {message}", file=sys.stderr)
    result = compare(base, new, threshold, alpha, metrics)
    print_result(result, args.format, args.fail_on)
    return exit_code(result, args.fail_on, getattr(args, "strict", False))
