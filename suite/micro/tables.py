"""Terminal tables of microbenchmark records: one table per task, one row per case, pass and backend."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from rich.table import Table


def _num(value, spec: str, scale: float = 1.0) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return format(value * scale if scale != 1.0 else value, spec)


def _unit(seconds: float) -> tuple[float, str]:
    if seconds >= 1:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def _time(seconds) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "—"
    scale, unit = _unit(seconds)
    return f"{seconds * scale:.4g} {unit}"


def _ci(case: dict[str, Any]) -> str:
    """``lo–hi`` in the unit of the median."""
    ci, median = case.get("ci95"), case.get("median_s")
    if not (isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)
            and isinstance(median, int | float)):
        return "—"
    scale, unit = _unit(median)
    return f"{ci[0] * scale:.4g}–{ci[1] * scale:.4g} {unit}"


#: family -> (header, how to read it from a case) for the columns that name a case.
KEY_COLUMNS = {
    "optim_step": (("optimizer", "optimizer"), ("params", "params")),
    "param_scaling": (("model", "model"), ("input", "input"), ("params", "params")),
}


def _family(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    return str(metrics.get("family") or ((record.get("config") or {}).get("task") or {}).get("family") or "")


def cases_tables(records: list[dict[str, Any]]) -> list[Table]:
    """One table per microbenchmark task in ``records`` (training records are skipped)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if isinstance((r.get("metrics") or {}).get("cases"), list):
            groups[str(r.get("task"))].append(r)
    tables = []
    for task, members in groups.items():
        family = _family(members[0])
        keys = KEY_COLUMNS.get(family, (("case", "name"), ("shape", "shape"), ("pass", "pass")))
        rate = "achieved_gflops" if family in KEY_COLUMNS else "gflops"
        peak = next((r["metrics"].get("peak_gflops") for r in members if r["metrics"].get("peak_gflops")), None)
        title = f"{task} ({family})" + (f" — machine peak {peak:,.1f} GFLOP/s" if peak else "")
        table = Table(title=title, header_style="bold", title_justify="left")
        for header, _ in keys:
            table.add_column(header, overflow="fold")
        for header in ("backend", "median", "95% CI", "CV", "inner", "GFLOP/s", "% peak", "GB/s", "1st call"):
            table.add_column(header, justify="left" if header == "backend" else "right")
        rows = []
        for r in members:
            for c in r["metrics"]["cases"]:
                rows.append((tuple(str(c.get(k, "")) for _, k in keys), str(r.get("backend")), c))
        order = {k: i for i, k in enumerate(dict.fromkeys(key for key, _, _ in rows))}
        for key, backend, c in sorted(rows, key=lambda row: (order[row[0]], row[1])):
            if c.get("error"):
                table.add_row(*key, backend, f"[red]{c['error'][:60]}[/]", *["" for _ in range(7)])
                continue
            table.add_row(*key, backend, _time(c.get("median_s")), _ci(c), _num(c.get("cv"), ".1%"),
                          _num(c.get("inner"), "d"), _num(c.get(rate), ",.2f"),
                          _num(c.get("percent_of_peak"), ".1f"), _num(c.get("gbps"), ",.2f"),
                          _time(c.get("first_call_s")))
        tables.append(table)
        conv = [(r.get("backend"), r["metrics"].get("convergence")) for r in members
                if r["metrics"].get("convergence")]
        if conv:
            tables.append(convergence_table(task, conv))
    return tables


def convergence_table(task: str, curves: list[tuple[str, dict[str, list[float]]]]) -> Table:
    """Final loss of each optimizer's convergence curve, per backend, and the largest spread."""
    names = list(dict.fromkeys(name for _, c in curves for name in c))
    table = Table(title=f"{task}: loss after the convergence run", header_style="bold", title_justify="left")
    table.add_column("optimizer")
    for backend, _ in curves:
        table.add_column(str(backend), justify="right")
    table.add_column("max rel. diff", justify="right")
    for name in names:
        finals = [c.get(name, [None])[-1] if c.get(name) else None for _, c in curves]
        known = [v for v in finals if isinstance(v, int | float)]
        spread = (max(known) - min(known)) / max(abs(min(known)), 1e-12) if len(known) > 1 else None
        table.add_row(name, *[_num(v, ".6f") for v in finals], _num(spread, ".1e"))
    return table
