"""``bench compare BASE NEW``: pair the cells of two sets of records and flag significant regressions.

Cells are paired by (backend, task, device, dataset, overrides). Per metric: base, new, relative
change and a verdict. Throughput is judged on the raw step times (two-sided Mann–Whitney U,
``p < alpha``) *and* the threshold; single-valued metrics (accuracy, memory, compile time) on the
threshold alone. A metric is *regressed* when it moved the wrong way by more than the threshold
(and significantly, where repeats exist); ``bench compare`` exits 1 if any metric regressed.
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

IMPROVED, REGRESSED, UNCHANGED, NOT_COMPARABLE = "improved", "regressed", "unchanged", "not comparable"
VERDICT_STYLE = {IMPROVED: "bold green", REGRESSED: "bold red", UNCHANGED: "dim", NOT_COMPARABLE: "yellow"}
VERDICT_MARK = {IMPROVED: "🟢", REGRESSED: "🔴", UNCHANGED: "⚪", NOT_COMPARABLE: "⚠️"}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _m(record: dict, key: str) -> Any:
    return (record.get("metrics") or {}).get(key)


def _raw_step_times(record: dict) -> list[float]:
    stats = _m(record, "step_time_s")
    raw = stats.get("raw") if isinstance(stats, dict) else None
    return [v for v in map(_num, raw or []) if v is not None and v > 0]


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
    raw: Callable[[dict], list[float]] | None = None  # repeats for the significance test
    raw_is_inverse: bool = False  # the repeats are times of a rate (lower time = higher value)
    optional: bool = False  # absent on both sides: not listed (e.g. device memory on CPU)


def _throughput(record: dict) -> float | None:
    value = _num(_m(record, "throughput_samples_per_s"))
    if value is None:
        stats = _m(record, "step_time_s")
        median = _num(stats.get("median")) if isinstance(stats, dict) else None
        batch = _num((((record.get("config") or {}).get("training")) or {}).get("batch_size"))
        value = batch / median if median and batch else None
    return value


METRICS: tuple[Metric, ...] = (
    Metric("throughput", "throughput (samples/s)", "higher", _throughput, _fmt_count,
           raw=_raw_step_times, raw_is_inverse=True),
    Metric("test_accuracy", "test accuracy", "higher", lambda r: _num(_m(r, "test_accuracy")), lambda v: f"{v:.2%}"),
    Metric("peak_host_bytes", "peak host memory", "lower", lambda r: _num(_m(r, "peak_host_bytes")),
           lambda v: f"{v / 2**20:,.1f} MiB"),
    Metric("peak_device_bytes", "peak device memory", "lower", lambda r: _num(_m(r, "peak_device_bytes")),
           lambda v: f"{v / 2**20:,.1f} MiB", optional=True),
    Metric("compile_s", "compile time", "lower", lambda r: _num(_m(r, "compile_s")), lambda v: f"{v:.3g} s"),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


@dataclass
class Row:
    cell: str
    metric: str
    better: str
    base: str
    new: str
    change: float | None
    p_value: float | None
    verdict: str
    reason: str = ""


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
        return self.count(REGRESSED) > 0

    def summary(self) -> str:
        parts = [f"{self.count(v)} {v}" for v in (REGRESSED, IMPROVED, UNCHANGED, NOT_COMPARABLE)]
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


def _verdict(change: float, better: str, threshold: float, significant: bool) -> str:
    good = change > 0 if better == "higher" else change < 0
    if not significant or abs(change) <= threshold:
        return UNCHANGED
    return IMPROVED if good else REGRESSED


def _mann_whitney(a: list[float], b: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:
        return 1.0
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else 1.0


def compare_metric(metric: Metric, base: dict, new: dict, threshold: float, alpha: float, label: str) -> Row | None:
    bv, nv = metric.value(base), metric.value(new)
    if bv is None and nv is None and metric.optional:
        return None
    row = Row(label, metric.label, metric.better, metric.text(bv) if bv is not None else "—",
              metric.text(nv) if nv is not None else "—", None, None, NOT_COMPARABLE)
    if bv is None or nv is None:
        row.reason = f"no {metric.key} in {'BASE' if bv is None else 'NEW'}"
        return row
    if bv == 0:
        row.change = None
        row.verdict = UNCHANGED if nv == 0 else NOT_COMPARABLE
        row.reason = "" if nv == 0 else "base is 0: no relative change"
        return row
    row.change = nv / bv - 1
    significant = True
    if metric.raw is not None:
        braw, nraw = metric.raw(base), metric.raw(new)
        if len(braw) < 2 or len(nraw) < 2:
            row.verdict = NOT_COMPARABLE
            row.reason = f"no raw repeats in {'BASE' if len(braw) < 2 else 'NEW'}"
            return row
        row.p_value = _mann_whitney(braw, nraw)
        significant = row.p_value < alpha
    row.verdict = _verdict(row.change, metric.better, threshold, significant)
    if row.verdict == UNCHANGED and abs(row.change) > threshold and not significant:
        row.reason = f"not significant (p={row.p_value:.2g} ≥ {alpha:g})"
    return row


def compare(base: list[dict], new: list[dict], threshold: float = 0.05, alpha: float = 0.01,
            metrics: Iterable[str] | None = None) -> Comparison:
    """Judge every metric of every paired cell. ``metrics`` limits the metric keys (default: all)."""
    chosen = [m for m in METRICS if metrics is None or m.key in set(metrics)]
    result = Comparison(threshold=threshold, alpha=alpha)
    counts_b, counts_n = _latest(base), _latest(new)
    for key, b, n in pair(base, new):
        label = cell_label(key)
        for side, records in (("BASE", counts_b), ("NEW", counts_n)):
            if key in records and records[key][1] > 1:
                result.notes.append(f"{label}: {records[key][1]} records in {side}; compared the latest")
        if b is None or n is None:
            missing = "BASE" if b is None else "NEW"
            result.rows.append(Row(label, "(cell)", "", "—" if b is None else str(b.get("status")),
                                   "—" if n is None else str(n.get("status")), None, None, NOT_COMPARABLE,
                                   f"missing in {missing}"))
            continue
        bad = [(side, r) for side, r in (("BASE", b), ("NEW", n)) if r.get("status") != "ok"]
        if bad:
            reason = "; ".join(f"{r.get('status')} in {side}" + (f": {r.get('error')}" if r.get("error") else "")
                               for side, r in bad)
            result.rows.append(Row(label, "(cell)", "", str(b.get("status")), str(n.get("status")), None, None,
                                   NOT_COMPARABLE, reason))
            continue
        for metric in chosen:
            row = compare_metric(metric, b, n, threshold, alpha, label)
            if row is not None:
                result.rows.append(row)
    return result


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def _change_text(change: float | None) -> str:
    return "—" if change is None else f"{change:+.1%}"


def _p_text(p: float | None) -> str:
    return "—" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


BETTER_TEXT = {"higher": "↑ higher", "lower": "↓ lower", "": ""}


def rich_table(result: Comparison):
    from rich.table import Table
    from rich.text import Text

    table = Table(title="bench compare: BASE → NEW", title_justify="left", header_style="bold")
    for name, justify in (("cell", "left"), ("metric", "left"), ("better", "left"), ("base", "right"),
                          ("new", "right"), ("change", "right"), ("p", "right"), ("verdict", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    previous = None
    for r in result.rows:
        if previous is not None and r.cell != previous:
            table.add_section()
        verdict = Text(r.verdict, style=VERDICT_STYLE[r.verdict])
        if r.reason:
            verdict.append(f" ({r.reason})", style="dim")
        plain = [r.cell if r.cell != previous else "", r.metric, BETTER_TEXT[r.better], r.base, r.new,
                 _change_text(r.change), _p_text(r.p_value)]
        table.add_row(*map(Text, plain), verdict)  # Text: a "[k=v]" in a label is not markup
        previous = r.cell
    return table


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def markdown(result: Comparison) -> str:
    head = "❌ regression" if result.regressed else "✅ no regression"
    lines = [f"### fwbench compare: {head}", "", result.summary() + ".", "",
             "| cell | metric | better | base | new | change | p | verdict |",
             "|:--|:--|:--|--:|--:|--:|--:|:--|"]
    for r in result.rows:
        verdict = f"{VERDICT_MARK[r.verdict]} {r.verdict}" + (f" ({r.reason})" if r.reason else "")
        cells = [r.cell, r.metric, BETTER_TEXT[r.better], r.base, r.new, _change_text(r.change),
                 _p_text(r.p_value), verdict]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    lines += [f"- {_md(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def cmd_compare(args) -> int:
    """The ``bench compare`` handler: exit 1 on any regression, else 0."""
    import sys

    from rich.text import Text

    from .display import make_console

    threshold = parse_threshold(args.threshold)
    alpha = parse_alpha(args.alpha)
    metrics = None
    if args.metric:
        unknown = sorted(set(args.metric) - set(METRIC_KEYS))
        if unknown:
            raise UsageError(f"--metric {unknown[0]!r}: unknown; expected one of: {', '.join(METRIC_KEYS)}")
        metrics = args.metric
    base, skipped_b = load_side([args.base], "BASE")
    new, skipped_n = load_side([args.new], "NEW")
    for message in skipped_b + skipped_n:
        print(f"bench: warning: {message}", file=sys.stderr)
    result = compare(base, new, threshold, alpha, metrics)
    if args.format == "md":
        sys.stdout.write(markdown(result))
    else:
        console = make_console()
        console.print(rich_table(result))
        for note in result.notes:
            console.print(Text(note, style="dim"))
        console.print(("[bold red]regression: [/]" if result.regressed else "[green]no regression: [/]")
                      + result.summary())
    if args.strict and any(r.verdict == NOT_COMPARABLE for r in result.rows):
        return 1
    return 1 if result.regressed else 0
