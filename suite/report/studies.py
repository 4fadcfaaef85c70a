"""The report's Studies section: one block per study run (`fwbench.studies.spec`), built from its records.

A block has the study's title and kind, the teacher's description (plain text, escaped by the
template: paragraphs, and ``- `` lines as lists), a table (one row per variant, one column per
backend) and the figures of its kind (`study_figures`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..records.record import STEP_TIME, TEST_ACCURACY
from .cells import backend_color, backend_order, is_ok, metric, number
from .study_figures import (
    gap_values,
    grad_norm_table,
    label_of,
    labels,
    order_of,
    study_figures,
    variant_colors,
)
from .tables import fmt_count, fmt_percent, fmt_sig


def is_study(record: dict[str, Any]) -> bool:
    return isinstance(record.get("study"), dict) and bool(record["study"].get("name"))


def paragraphs(text: str) -> list[dict[str, Any]]:
    """Plain text -> ``[{"kind": "p", "text"}, {"kind": "ul", "items"}]`` (blank lines part paragraphs)."""
    blocks: list[dict[str, Any]] = []
    for chunk in str(text or "").strip().split("\n\n"):
        lines = [ln.strip() for ln in chunk.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        if all(ln.startswith("- ") for ln in lines) or (lines[0].startswith("- ") and len(lines) > 1):
            items: list[str] = []
            for ln in lines:
                if ln.startswith("- "):
                    items.append(ln[2:])
                elif items:
                    items[-1] += " " + ln
            blocks.append({"kind": "ul", "items": items})
        else:
            blocks.append({"kind": "p", "text": " ".join(lines)})
    return blocks


def _detail(kind: str, r: dict[str, Any]) -> str:
    """The second line of a table cell: what matters for this kind of study."""
    seconds = number(metric(r, "train_time_s"))
    time_text = f"{fmt_sig(seconds, 's')} training" if seconds is not None else ""
    if kind == "regularization":
        pair = gap_values(r)
        if pair:
            train, val = pair
            return f"train {train:.1%} · val {val:.1%} · gap {train - val:.1%}"
    if kind == "architectures":
        median = number((metric(r, STEP_TIME) or {}).get("median"))
        step = f"{fmt_sig(median * 1e3, 'ms')}/step" if median is not None else ""
        return " · ".join(p for p in (f"{fmt_count(number(r.get('params')))} params", step) if p)
    if kind == "vanishing_gradients":
        layers, epochs, norms = grad_norm_table(r)
        if epochs and len(layers) > 1 and norms[-1, 0] > 0:
            return f"first/last layer gradient: {norms[-1, 0] / norms[-1, -1]:.1e}"
    if kind == "transfer":
        init = r.get("init_from") or {}
        if init:
            return f"{len(init.get('loaded') or [])} arrays loaded, {len(init.get('skipped') or [])} skipped · {time_text}"
    return time_text


def _table(kind: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    backends = backend_order(records)
    rows = []
    for name in labels(records):
        members = [r for r in records if label_of(r) == name]
        note = next((str(r["study"].get("note") or "") for r in members if r["study"].get("note")), "")
        cells = []
        for b in backends:
            r = next((m for m in members if str(m.get("backend")) == b), None)
            if r is None:
                cells.append({"text": "—", "detail": "", "bad": False})
            elif not is_ok(r):
                cells.append({"text": str(r.get("status")), "detail": str(r.get("error") or "")[:160], "bad": True})
            else:
                cells.append({"text": fmt_percent(number(metric(r, TEST_ACCURACY))), "detail": _detail(kind, r),
                              "bad": False})
        rows.append({"label": name, "note": note, "cells": cells})
    return {"backends": [{"name": b, "color": backend_color(b)} for b in backends], "rows": rows}


def study_blocks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One block per (study, run) among ``records``, in the order the runs were made."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if is_study(r):
            runs[(str(r["study"]["name"]), str(r.get("run_id")))].append(r)
    blocks = []
    for (name, run_id), members in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        members = sorted(members, key=order_of)
        info = members[0]["study"]
        kind = str(info.get("kind") or "sweep")
        title = str(info.get("title") or name)
        blocks.append({
            "anchor": f"study-{name}-{run_id}", "name": name, "run_id": run_id, "kind": kind, "title": title,
            "profile": str(info.get("profile") or "full"), "paragraphs": paragraphs(info.get("description", "")),
            "table": _table(kind, members), "figures": study_figures(kind, members, title),
            "variants": [{"name": n, "color": c} for n, c in variant_colors(labels(members)).items()],
        })
    return blocks
