"""Inference records: the merge of a cell's repeats and the terminal table of a run.

Merge (`merge_inference`, called by `fwbench.measure.repeats.merge_repeats`): per batch size, each repeat
(a fresh process) contributes its own p50 and p99 of single-call latency. The merged ``p50_s`` /
``p99_s`` are geometric means over repeats with 95% t intervals on their logarithms
(`fwbench.measure.statistics.repeat_interval`), the process being the unit (docs/statistics.md), widened
by the measured between-invocation spread (`INVOCATION_CV`) so that they hold across runs. Each
interval says what it covers (``p50_interval_covers``, ``p99_interval_covers``): the interval of
p99 bounds *a process's 99th-percentile call*, not any single call. The per-repeat values stay in
``repeat_p50_s`` / ``repeat_p99_s`` and the first repeat's own in-process figures in ``within_run``.
"""
from __future__ import annotations

import math
from statistics import median
from typing import Any

from rich.table import Table
from rich.text import Text

from ..measure.statistics import INVOCATION_CV, UNSTABLE_REPEAT_CV, repeat_interval
from ..records.record import (
    COLD_START,
    INFERENCE,
    INFERENCE_HEADLINE,
    LATENCY_P50,
    LATENCY_P99,
    PEAK_DEVICE,
    PEAK_HOST,
    REPEATS_N,
)

P50_COVERS = ("the median call latency of one process of this cell on this machine, across invocations: "
              "over {n} processes (geometric mean, t interval on logs) widened by a between-invocation "
              "spread of {cv:.0%}")
P99_COVERS = ("the 99th-percentile call latency of one process ({calls} calls each) across invocations: over "
              "{n} processes (geometric mean, t interval on logs) widened by a between-invocation spread of "
              "{cv:.0%}; not a bound on any single call")


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def is_inference(record: dict[str, Any]) -> bool:
    return record.get("scenario") == "inference" or bool((record.get("metrics") or {}).get(INFERENCE))


def _interval(values: list[float | None], between_cv: float = 0.0) -> tuple[Any, list[float]]:
    kept = [v for v in values if v is not None and v > 0]
    return repeat_interval(kept, between_cv=between_cv), kept


def merge_inference(m: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Merge ``metrics["inference"]`` of ``records`` (ok repeats, by repeat) into ``m``; warnings."""
    inference = m[INFERENCE]
    per_repeat = [((r.get("metrics") or {}).get(INFERENCE) or {}).get("batches") or [] for r in records]
    warnings: list[str] = []
    for index, row in enumerate(inference.get("batches") or []):
        rows = [rs[index] if index < len(rs) else {} for rs in per_repeat]
        # latencies hold across invocations: the repeats' spread plus the measured between-invocation one
        p50, p50s = _interval([_num(r.get("p50_s")) for r in rows], INVOCATION_CV)
        p99, p99s = _interval([_num(r.get("p99_s")) for r in rows], INVOCATION_CV)
        if p50.n < 2:
            continue
        row["within_run"] = {k: row.get(k) for k in ("p50_s", "p90_s", "p99_s", "mean_s", "calls", "cv")}
        batch = row["batch_size"]
        calls = min(int(r.get("calls") or 0) for r in rows)
        row.update(
            p50_s=p50.center, p50_ci95=[p50.low, p50.high], p99_s=p99.center, p99_ci95=[p99.low, p99.high],
            p90_s=math.exp(sum(math.log(v) for v in [_num(r.get("p90_s")) or p50.center for r in rows]) / len(rows)),
            repeat_p50_s=p50s, repeat_p99_s=p99s, repeats_n=p50.n, interval="repeats", cv_between_repeats=p50.cv,
            p50_interval_covers=P50_COVERS.format(n=p50.n, cv=INVOCATION_CV),
            p99_interval_covers=P99_COVERS.format(n=p99.n, calls=calls, cv=INVOCATION_CV),
            throughput_samples_per_s=batch / p50.center,
            throughput_ci95=[batch / p50.high, batch / p50.low] if p50.low and p50.high else None,
        )
        energies = [(r.get("energy") or {}) for r in rows]
        per_unit = [e.get("joules_per_unit") for e in energies if e.get("available")]
        if len(per_unit) >= 2 and row.get("energy", {}).get("available"):
            ci, kept = _interval(per_unit)
            row["energy"].update(joules_per_unit=ci.center, joules_per_unit_ci95=[ci.low, ci.high],
                                 repeat_joules_per_unit=kept)
        if p50.cv is not None and p50.cv > UNSTABLE_REPEAT_CV:
            n = p50.n
            warnings.append(f"inference batch {batch} p50: unstable between repeats (CV {p50.cv:.1%} over {n} "
                            f"processes > {UNSTABLE_REPEAT_CV:.0%}); add repeats (--repeat {max(2 * n, n + 2)}) "
                            "or use a quieter machine")
    from .scenario import headline

    inference.update(headline(inference.get("batches") or []))
    colds = [_num(((r.get("metrics") or {}).get(INFERENCE) or {}).get(COLD_START)) for r in records]
    colds = [v for v in colds if v is not None]
    if colds:
        ci = repeat_interval(colds)
        inference[COLD_START] = median(colds)
        inference["cold_start_ci95"] = [ci.low, ci.high]
        inference["repeat_cold_start_s"] = colds
    for key in INFERENCE_HEADLINE:
        if key in inference:
            m[key] = inference[key]
    return warnings


def repeat_values(record: dict[str, Any]) -> dict[str, float | None]:
    """The per-repeat numbers of an inference record kept in ``metrics["repeats"]`` (for compare)."""
    from .scenario import headline

    m = record.get("metrics") or {}
    inference = {**headline((m.get(INFERENCE) or {}).get("batches") or []), **(m.get(INFERENCE) or {})}
    return {LATENCY_P50: _num(inference.get(LATENCY_P50)), LATENCY_P99: _num(inference.get(LATENCY_P99)),
            COLD_START: _num(inference.get(COLD_START))}


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1e3:.3f}" if value < 0.01 else f"{value * 1e3:.2f}" if value < 1 else f"{value * 1e3:,.0f}"


def inference_table(records: list[dict[str, Any]], title: str = "Inference") -> Table | None:
    """One row per (cell, batch size): p50 (95% CI over repeats), p99, throughput, J/sample."""
    from ..records.record import backend_label
    from ..run.display import STATUS_STYLE

    records = [r for r in records if is_inference(r)]
    if not records:
        return None
    table = Table(title=title + " (latency of one call, logits on the host)", header_style="bold",
                  title_justify="left")
    for name in ("backend", "task · dataset · device", "status", "batch", "p50 ms (95% CI) ×repeats",
                 "p99 ms (95% CI)", "samples/s at p50", "J/sample", "cold start s", "peak MiB"):
        table.add_column(name, justify="left" if name in ("backend", "status") or "task" in name else "right")
    for r in records:
        m = r.get("metrics") or {}
        inference = m.get(INFERENCE) or {}
        where = f"{r.get('task', '?')} · {r.get('dataset') or '?'} · {r.get('device', '?')}"
        status = Text(r.get("status", "?"), style=STATUS_STYLE.get(r.get("status"), ""))
        rows = inference.get("batches") or [{}]
        for i, row in enumerate(rows):
            ci, ci99 = row.get("p50_ci95"), row.get("p99_ci95")
            p50 = _ms(row.get("p50_s"))
            if ci and None not in ci:
                p50 += f" ({_ms(ci[0])}–{_ms(ci[1])})"
            n = row.get("repeats_n") or m.get(REPEATS_N)
            p50 += f" ×{n}" if n and n > 1 else (" ×1 (within-run)" if row.get("p50_s") else "")
            p99 = _ms(row.get("p99_s")) + (f" ({_ms(ci99[0])}–{_ms(ci99[1])})" if ci99 and None not in ci99 else "")
            energy = row.get("energy") or {}
            joules = f"{energy['joules_per_unit']:.3g}" if energy.get("available") else "—"
            thr = row.get("throughput_samples_per_s")
            first = i == 0
            peak = m.get(PEAK_DEVICE) or m.get(PEAK_HOST)
            table.add_row(Text(backend_label(r) if first else ""), Text(where if first else ""),
                          status if first else Text(""), str(row.get("batch_size", "—")), p50, p99,
                          f"{thr:,.0f}" if thr else "—", joules,
                          f"{inference[COLD_START]:.2f}" if first and inference.get(COLD_START) else "",
                          f"{peak / 2**20:,.0f}" if first and peak else "")
    reasons = sorted({str(e.get("reason")) for r in records for row in
                      ((r.get("metrics") or {}).get(INFERENCE) or {}).get("batches") or []
                      if not (e := row.get("energy") or {}).get("available", True)})
    if reasons:
        table.caption = "J/sample: " + "; ".join(reasons)
    return table
