"""Tables of the report: the summary (HTML rows and Markdown), the environment manifest, warnings."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..records.record import (
    COMPILE,
    INTERVAL,
    PEAK_DEVICE,
    PEAK_HOST,
    REPEATS_N,
    STEP_TIME,
    TEST_ACCURACY,
    THROUGHPUT,
    THROUGHPUT_BEST,
    THROUGHPUT_WIDE,
    WITHIN_RUN_ONLY,
)
from .cells import (
    backend_color,
    backend_order,
    by_group,
    cell_label,
    group_label,
    is_ok,
    metric,
    number,
    section_of,
    settings_label,
)


def fmt_count(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def fmt_sig(value: float | None, unit: str = "") -> str:
    """Three significant digits (``0.137 ms``, ``61.9 ms``, ``1,234 ms``)."""
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def fmt_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def fmt_mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f} MiB"


def _throughput(r):
    return number(metric(r, THROUGHPUT))


def repeats_note(r) -> str:
    """``3 repeats`` or ``1 repeat: within-run CI only``; ``wide`` when the interval is > ±10%."""
    n = metric(r, REPEATS_N)
    if metric(r, INTERVAL) == WITHIN_RUN_ONLY or n == 1:
        return "1 repeat: within-run CI only"
    if not n:
        return ""
    return f"{n} repeats" + (" · ⚠ wide" if metric(r, THROUGHPUT_WIDE) else "")


def _throughput_ci(r) -> str:
    ci = metric(r, "throughput_ci95")
    note = repeats_note(r)
    if isinstance(ci, list) and len(ci) == 2 and all(number(v) is not None for v in ci):
        return f"95% CI {fmt_count(ci[0])}–{fmt_count(ci[1])}" + (f" ({note})" if note else "")
    return note


def _best_ci(r) -> str:
    """The best-window throughput's interval: the speed least disturbed by neighbours."""
    ci = metric(r, "throughput_best_ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(number(v) is not None for v in ci):
        return f"95% CI {fmt_count(ci[0])}–{fmt_count(ci[1])}"
    return ""


def _step_ms(r):
    median = number((metric(r, STEP_TIME) or {}).get("median"))
    return None if median is None else median * 1e3


def _peak_memory(r):
    device = number(metric(r, PEAK_DEVICE))
    if device is not None and r.get("device") == "gpu":
        return device
    return number(metric(r, PEAK_HOST))


def _memory_note(r) -> str:
    device = number(metric(r, PEAK_DEVICE))
    return "device" if device is not None and r.get("device") == "gpu" else "host RSS"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    value: Callable[[dict], float | None]
    text: Callable[[float | None], str]
    better: str | None  # "max", "min" or None (no highlight)
    note: Callable[[dict], str] | None = None


COLUMNS = (
    Column("test_accuracy", "test acc.", lambda r: number(metric(r, TEST_ACCURACY)), fmt_percent, "max"),
    Column("params", "params", lambda r: number(r.get("params")), fmt_count, None),
    Column("throughput", "samples/s", _throughput, fmt_count, "max", _throughput_ci),
    Column("throughput_best", "samples/s (best window)", lambda r: number(metric(r, THROUGHPUT_BEST)),
           fmt_count, "max", _best_ci),
    Column("step_ms", "step (median)", _step_ms, lambda v: fmt_sig(v, "ms"), "min"),
    Column("peak_memory", "peak memory", _peak_memory, fmt_mib, "min", _memory_note),
    Column("compile_s", "compile", lambda r: number(metric(r, COMPILE)), lambda v: fmt_sig(v, "s"), "min"),
)


def _best(rows: list[dict], column: Column) -> float | None:
    """The best value of a column among the ok cells of a group (None when fewer than two)."""
    values = [column.value(r) for r in rows if is_ok(r)]
    values = [v for v in values if v is not None]
    if column.better is None or len(values) < 2 or len(set(values)) < 2:
        return None
    return max(values) if column.better == "max" else min(values)


def summary_groups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary table as groups (task · dataset · device) of rows (one per cell), best marked.

    Each row: backend, color, settings, status, reason, cells ``[{text, note, best}]`` (aligned with
    `COLUMNS`); failed, skipped and timed-out cells carry their reason instead of numbers.
    """
    groups = []
    for key, members in by_group(records).items():
        best = {c.key: _best(members, c) for c in COLUMNS}
        rows = []
        for r in members:
            cells = []
            for c in COLUMNS:
                value = c.value(r)
                cells.append({"text": c.text(value), "note": c.note(r) if c.note and value is not None else "",
                              "best": best[c.key] is not None and value is not None and
                              math.isclose(value, best[c.key])})
            rows.append({"backend": str(r.get("backend")), "color": backend_color(r.get("backend")),
                         "section": section_of(r) if is_ok(r) else None,
                         "version": r.get("backend_version") or "", "settings": settings_label(r),
                         "status": str(r.get("status")), "reason": r.get("error") or "",
                         "warnings": len(r.get("warnings") or []), "synthetic": bool(r.get("synthetic_data")),
                         "cells": cells})
        groups.append({"label": group_label(key), "rows": rows})
    return groups


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def markdown_summary(records: list[dict[str, Any]], load_warnings: list[str] = ()) -> str:
    """The summary table and every warning as GitHub-flavoured Markdown (for CI comments)."""
    from .cells import run_ids

    runs = ", ".join(f"`{r}`" for r in run_ids(records)) or "—"
    lines = ["## fwbench results", "",
             f"Runs: {runs} · {len(records)} cell(s). **Bold** = best of its task · dataset · device.", ""]
    header = ["backend", "task · dataset · device", "settings", "status", *[c.header for c in COLUMNS]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":--"] * 4 + ["--:"] * len(COLUMNS)) + "|")
    for group in summary_groups(records):
        for row in group["rows"]:
            status = row["status"] + (f" ({row['warnings']} ⚠)" if row["warnings"] else "")
            if row["status"] != "ok":
                values = [f"{row['reason'] or row['status']}"] + [""] * (len(COLUMNS) - 1)
            elif row["section"]:
                values = [f"{row['section']} benchmark (see the HTML report)"] + [""] * (len(COLUMNS) - 1)
            else:
                values = [f"**{c['text']}**" if c["best"] else c["text"] for c in row["cells"]]
            cells = [row["backend"], group["label"], row["settings"], status, *values]
            lines.append("| " + " | ".join(_md_escape(v) for v in cells) + " |")
    notes = warning_list(records, load_warnings)
    if notes:
        lines += ["", f"### Warnings ({len(notes)})", ""]
        lines += [f"- **{_md_escape(w['source'])}** ({w['kind']}): {_md_escape(w['text'])}" for w in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Environment manifest and warnings
# ---------------------------------------------------------------------------------------------

def _blas(env: dict) -> str:
    parts = []
    for lib in env.get("blas") or []:
        if not isinstance(lib, dict):
            continue
        name = lib.get("internal_api") or lib.get("user_api") or "?"
        text = f"{name} {lib.get('version', '')}".strip()
        if lib.get("architecture"):
            text += f" ({lib['architecture']})"
        if lib.get("num_threads") is not None:
            text += f", {lib['num_threads']} thr"
        parts.append(text)
    return "; ".join(parts)


def _cpu(env: dict) -> str:
    cpu = env.get("cpu") or {}
    if not cpu:
        return ""
    text = str(cpu.get("model") or "?")
    if cpu.get("logical_cores"):
        text += f", {cpu['logical_cores']} logical cores"
    if cpu.get("affinity") and cpu.get("affinity") != cpu.get("logical_cores"):
        text += f" ({cpu['affinity']} usable)"
    if cpu.get("flags"):
        text += " · " + " ".join(map(str, cpu["flags"]))
    return text


def _threads(r: dict) -> str:
    env = r.get("env") or {}
    backend = env.get("backend") or {}
    text = str(env.get("threads") or "")
    extra = [f"{k}={backend[k]}" for k in ("threads", "interop_threads", "intra_op_threads",
                                           "inter_op_threads") if backend.get(k) is not None]
    return f"{text} ({', '.join(extra)})" if extra and text else text or ", ".join(extra)


def _compile(r: dict) -> str:
    info = r.get("compile_info") or {}
    if not info:
        return ""
    mode = info.get("mode", "?")
    extra = [f"{k}={v}" for k, v in info.items() if k not in ("mode", "compile_s") and not isinstance(v, dict | list)]
    return str(mode) + (f" ({', '.join(map(str, extra))})" if extra else "")


def _framework_versions(r: dict) -> str:
    backend = (r.get("env") or {}).get("backend") or {}
    parts = [f"{k.removesuffix('_version')} {v}" for k, v in backend.items()
             if isinstance(v, str) and (k.endswith("_version") or k in ("jax", "jaxlib", "optax", "tensorflow",
                                                                         "keras", "numpy", "torch"))]
    return ", ".join(parts) or str(r.get("backend_version") or "")


ENV_FACTS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("version", lambda r: str(r.get("backend_version") or "")),
    ("framework", _framework_versions),
    ("device", lambda r: str(r.get("device") or "") + (
        f" ({(r.get('env') or {}).get('backend', {}).get('device_name')})"
        if ((r.get("env") or {}).get("backend") or {}).get("device_name") else "")),
    ("threads", _threads),
    ("BLAS", lambda r: _blas(r.get("env") or {})),
    ("CPU", lambda r: _cpu(r.get("env") or {})),
    ("compile mode", _compile),
    ("Python", lambda r: str((r.get("env") or {}).get("python") or "")),
    ("NumPy", lambda r: str((r.get("env") or {}).get("numpy") or "")),
    ("OS", lambda r: str((r.get("env") or {}).get("os") or "")),
    ("host", lambda r: str((r.get("env") or {}).get("hostname") or "")),
    ("fwbench", lambda r: " ".join(filter(None, [
        str((r.get("env") or {}).get("fwbench") or ""),
        str(((r.get("env") or {}).get("git") or {}).get("commit", ""))[:10],
        "(dirty)" if ((r.get("env") or {}).get("git") or {}).get("dirty") else ""]))),
)


def environment_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Facts (rows) × backends (columns); distinct values of one backend's cells joined by " / "."""
    with_env = [r for r in records if r.get("env")]
    backends = backend_order(with_env)
    rows = []
    for fact, getter in ENV_FACTS:
        values = []
        for b in backends:
            seen: list[str] = []
            for r in with_env:
                if str(r.get("backend")) == b:
                    v = getter(r)
                    if v and v not in seen:
                        seen.append(v)
            values.append(" / ".join(seen) or "—")
        if any(v != "—" for v in values):
            rows.append({"fact": fact, "cells": values})
    details = []
    for b in backends:
        first = next(r for r in with_env if str(r.get("backend")) == b)
        env = first.get("env") or {}
        details.append({"backend": b, "color": backend_color(b),
                        "facts": sorted((str(k), _short(v)) for k, v in (env.get("backend") or {}).items()),
                        "env_vars": sorted((str(k), str(v)) for k, v in (env.get("env_vars") or {}).items())})
    return {"backends": [{"name": b, "color": backend_color(b)} for b in backends], "rows": rows,
            "details": details}


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def classify_warning(text: str) -> str:
    lowered = text.lower()
    if "synthetic" in lowered:
        return "synthetic data"
    if "unstable" in lowered:
        return "unstable"
    if "varies within the run" in lowered:
        return "within-run spread"
    if "too fast" in lowered:
        return "too fast"
    if "too short" in lowered:
        return "too short"
    if "diverged" in lowered:
        return "diverged"
    if "parameter count" in lowered:
        return "model"
    return "other"


def warning_list(records: list[dict[str, Any]], load_warnings=()) -> list[dict[str, str]]:
    """Every warning: unreadable files, failed/skipped cells, and each record's own warnings."""
    out = [{"source": "results files", "kind": "unreadable file", "text": str(w)} for w in load_warnings]
    for r in records:
        label = cell_label(r)
        if r.get("status") != "ok":
            out.append({"source": label, "kind": str(r.get("status")),
                        "text": str(r.get("error") or "no reason given")})
        texts = [str(w) for w in r.get("warnings") or []]
        if r.get("synthetic_data") and not any("synthetic" in t.lower() for t in texts):
            texts.append("synthetic data: accuracy is meaningless, throughput only")
        out += [{"source": label, "kind": classify_warning(t), "text": t} for t in texts]
    return out
