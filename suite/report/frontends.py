"""The report's frontend x engine view: per task, throughput and accuracy of every frontend (raw
framework, Keras, Flax) on every engine, and each frontend's overhead over the raw engine.

Overhead = median step time of the frontend's cell / median step time of the raw engine's cell
(same task, dataset, device and settings; 1.0 = no overhead, 3.0 = three times slower). Its 95%
interval, labelled with what it covers: over repeats when both cells ran ``--repeat`` 2 or more
times (a t interval on the log per-repeat medians, `fwbench.measure.statistics.ratio_interval`: the process
is the unit), else a percentile bootstrap over both cells' raw step times (`scipy.stats.bootstrap`,
independent samples), which covers only the step-to-step noise of the one run.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..records.record import RAW, STEP_TIME, TEST_ACCURACY, THROUGHPUT, engine_of, frontend_of
from . import tables
from .cells import is_ok, metric, number

#: Engines in display order (others follow alphabetically).
ENGINE_ORDER = ("numpy", "tensorflow", "jax", "torch")
FRONTEND_ORDER = (RAW, "keras", "flax")
BOOTSTRAP_RESAMPLES = 2000


def _group_key(record: dict[str, Any]) -> tuple:
    overrides = {k: v for k, v in (record.get("overrides") or {}).items()
                 if k not in ("backend.engine", "backend.mode", "backend.compile", "compile")}
    return (str(record.get("task")), str(record.get("dataset")), str(record.get("device")),
            json.dumps(overrides, sort_keys=True, default=str))


def _ordered(names, order) -> list[str]:
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def _step_times(record: dict[str, Any]) -> np.ndarray:
    raw = (metric(record, STEP_TIME) or {}).get("raw") or []
    return np.asarray([v for v in raw if number(v) is not None and v > 0], dtype=float)


def overhead_ratio(frontend: dict[str, Any], raw: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    """``{"ratio", "low", "high"}``: frontend / raw median step time with a 95% bootstrap interval
    (None without step times; no interval with fewer than 3 steps on a side)."""
    a, b = _step_times(frontend), _step_times(raw)
    if a.size == 0 or b.size == 0:
        return None
    over_repeats = all((metric(r, STEP_TIME) or {}).get("unit") == "repeat" for r in (frontend, raw))
    if over_repeats and a.size >= 2 and b.size >= 2:  # the process is the unit: a t interval on log medians
        from ..measure.statistics import ratio_interval

        found = ratio_interval(b, a, 0.95)
        return {"ratio": found.ratio, "low": found.low, "high": found.high, "over": "repeats"}
    ratio = float(np.median(a) / np.median(b))
    if a.size < 3 or b.size < 3:
        return {"ratio": ratio, "low": None, "high": None}
    from scipy.stats import bootstrap

    def statistic(x, y, axis=-1):
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    result = bootstrap((a, b), statistic, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
                       paired=False, confidence_level=0.95, method="percentile",
                       rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"ratio": ratio, "low": float(low), "high": float(high), "over": "steps (within run)"}


def _cell(record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None:
        return {"thr": "", "ci": "", "acc": "", "present": False}
    thr = number(metric(record, THROUGHPUT))
    ci = metric(record, "throughput_ci95") or []
    ci_text = (f"95% CI {tables.fmt_count(ci[0])}–{tables.fmt_count(ci[1])}"
               if len(ci) == 2 and None not in ci else "")
    mode = (record.get("backend_mode") or (record.get("compile_info") or {}).get("conventions") or "")
    return {"thr": f"{tables.fmt_count(thr)} samples/s" if thr is not None else "—", "ci": ci_text,
            "acc": tables.fmt_percent(number(metric(record, TEST_ACCURACY))), "present": True,
            "mode": mode if mode and mode != "exact" else ""}


def frontend_grids(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One grid per task · dataset · device · settings that has a non-raw frontend among its ok
    cells: ``rows`` (frontends) x ``engines`` cells, and ``overheads`` against the raw engine."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if is_ok(r) and (r.get("config") or {}).get("task", {}).get("family", "train") == "train":
            groups.setdefault(_group_key(r), []).append(r)
    grids = []
    for key, members in groups.items():
        if all(frontend_of(r) == RAW for r in members):
            continue
        by_cell: dict[tuple[str, str], dict] = {}
        for r in members:  # the latest record per frontend x engine
            k = (frontend_of(r), engine_of(r))
            if k not in by_cell or str(r.get("finished_at")) > str(by_cell[k].get("finished_at")):
                by_cell[k] = r
        engines = _ordered({e for _, e in by_cell}, ENGINE_ORDER)
        frontends = _ordered({f for f, _ in by_cell}, FRONTEND_ORDER)
        rows = [{"frontend": f, "cells": [_cell(by_cell.get((f, e))) for e in engines]} for f in frontends]
        overheads = []
        for f in frontends:
            if f == RAW:
                continue
            for e in engines:
                cell = by_cell.get((f, e))
                if cell is None:
                    continue
                raw = by_cell.get((RAW, e))
                found = overhead_ratio(cell, raw) if raw is not None else None
                overheads.append({
                    "frontend": f, "engine": e,
                    "ratio": f"{found['ratio']:.2f}×" if found else "—",
                    "interval": (f"{found['low']:.2f}–{found['high']:.2f} (95%, over {found['over']})"
                                 if found and found["low"] is not None else "too few steps for an interval"
                                 if found else ""),
                    "note": "" if raw is not None else f"no raw {e} cell to compare with",
                })
        task, dataset, device, settings = key
        label = f"{task} · {dataset} · {device}"
        extra = json.loads(settings)
        extra.pop("dataset.name", None)
        if extra:
            label += " [" + " ".join(f"{k}={v}" for k, v in sorted(extra.items())) + "]"
        grids.append({"label": label, "engines": engines, "rows": rows, "overheads": overheads})
    return grids
