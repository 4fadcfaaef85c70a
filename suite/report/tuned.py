"""The report's "As written and at its best" section: `bench tune`'s judgement, from the records.

The decision is `fwbench.run.tuning.judge`'s, made again from the records themselves (a results
folder without ``tune.json`` reads the same); only the tolerance the run used is read from
``tune.json`` beside the records, when there is one.
"""
from __future__ import annotations

from typing import Any

from ..run.tuning import config_label, is_tune_record, judge, run_tolerance
from . import tables
from .cells import backend_color, number


def _rate(t: dict[str, Any] | None) -> tuple[str, str]:
    """``(samples/s, "95% CI lo–hi")`` of one tried configuration."""
    if not t:
        return "—", ""
    ci = t.get("ci95")
    interval = (f"95% CI {tables.fmt_count(number(ci[0]))}–{tables.fmt_count(number(ci[1]))}"
                if isinstance(ci, list) and len(ci) == 2 and all(number(v) is not None for v in ci) else "")
    return tables.fmt_count(number(t.get("samples_per_s"))), interval


def tuned_rows(records: list[dict[str, Any]], tolerance: float | None = None) -> list[dict[str, Any]]:
    """One row per backend × task of a `bench tune` run: as written, at its best, speed-up and why."""
    tuned = [r for r in records if is_tune_record(r)]
    if not tuned:
        return []
    tolerance = run_tolerance(tuned) if tolerance is None else tolerance
    rows = []
    for e in judge(tuned, tolerance=tolerance):
        written, best = e["as_written"], e["best"]
        where = " · ".join(filter(None, [str(e["task"]), e.get("dataset"), e.get("device")]))
        w_thr, w_ci = _rate(written)
        b_thr, b_ci = _rate(best)
        cost = e["accuracy_cost_points"]
        rows.append({
            "backend": str(e["backend"]), "color": backend_color(e["backend"]),
            "where": where + (f" [{e['settings']}]" if e.get("settings") else ""),
            "written": config_label(written["config"]) if written else "—", "written_thr": w_thr,
            "written_ci": w_ci, "written_acc": tables.fmt_percent(number((written or {}).get("test_accuracy"))),
            "best": config_label(best["config"]) if best else "—", "best_thr": b_thr, "best_ci": b_ci,
            "best_acc": tables.fmt_percent(number((best or {}).get("test_accuracy"))),
            "stays": best is not None and best is written,
            "speedup": f"{e['speedup']:.2f}×" if e["speedup"] else "—",
            "accuracy": "—" if cost is None else f"{-cost:+.2f} points" if cost else "none",
            "tried": len(e["tried"]), "why": e["why"], "tolerance": f"{tolerance:g}"})
    return rows
