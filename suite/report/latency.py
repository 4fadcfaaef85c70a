"""The report's inference view: latency against batch size per task, and its table.

One figure per task · dataset · device: batch size on the x axis (log 2), latency of one call on
the y axis (log), per backend a p50 line (with its 95% interval over repeats as error bars) and a
shaded p99 band from p50 up to p99 (the tail of the calls; the dashed edge is p99). The figure is
inline SVG, each backend's line and band carrying an id (``p50-<n>-<backend>``,
``p99band-<n>-<backend>``), so the page stays self-contained and a browser test can find them.
"""
from __future__ import annotations

import io
import re
from typing import Any

from markupsafe import Markup

from ..inference.records import is_inference
from ..records.record import COLD_START, INFERENCE
from .cells import backend_color, backend_order, by_group, group_label, is_ok
from .plotting import literal, new_figure, report_style


def inference_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if is_ok(r) and is_inference(r)]


def _rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = ((record.get("metrics") or {}).get(INFERENCE) or {}).get("batches") or []
    return sorted((b for b in rows if b.get("p50_s") and b.get("p99_s")), key=lambda b: b["batch_size"])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def _svg(fig) -> Markup:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", facecolor="white")
    text = buf.getvalue()
    return Markup(text[text.index("<svg"):])  # matplotlib escapes the labels it writes as XML text


def latency_figures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One figure item per task · dataset · device with inference records (SVG, ids per backend)."""
    import matplotlib as mpl
    from matplotlib.ticker import FuncFormatter, LogLocator

    groups = by_group(inference_records(records))
    out = []
    with mpl.rc_context(report_style()):
        for n, (key, members) in enumerate(groups.items()):
            fig = new_figure(7.0, 3.8)
            ax = fig.subplots()
            backends = backend_order(members)
            for backend in backends:
                for r in (m for m in members if str(m.get("backend")) == backend):
                    rows = _rows(r)
                    if not rows:
                        continue
                    x = [b["batch_size"] for b in rows]
                    p50 = [b["p50_s"] * 1e3 for b in rows]
                    p99 = [b["p99_s"] * 1e3 for b in rows]
                    color = backend_color(backend)
                    band = ax.fill_between(x, p50, p99, color=color, alpha=0.18, linewidth=0)
                    band.set_gid(f"p99band-{n}-{_slug(backend)}")
                    edge, = ax.plot(x, p99, color=color, linewidth=1, linestyle="--")
                    edge.set_gid(f"p99-{n}-{_slug(backend)}")
                    low = [p - b["p50_ci95"][0] * 1e3 if (b.get("p50_ci95") or [None])[0] else 0
                           for p, b in zip(p50, rows)]
                    high = [b["p50_ci95"][1] * 1e3 - p if (b.get("p50_ci95") or [None, None])[1] else 0
                            for p, b in zip(p50, rows)]
                    line = ax.errorbar(x, p50, yerr=[low, high], color=color, marker="o", markersize=4,
                                       linewidth=1.8, capsize=2, label=literal(backend))
                    line.lines[0].set_gid(f"p50-{n}-{_slug(backend)}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_major_locator(LogLocator(base=10))
            ax.set_xlabel("batch size (samples per call)")
            ax.set_ylabel("latency per call (ms)")
            ax.set_title(literal(group_label(key)))
            ax.legend(loc="upper left", fontsize=8)
            title = f"Latency vs batch size · {group_label(key)}"
            out.append({"title": title, "svg": _svg(fig), "alt": f"{title}: p50 lines and p99 bands per backend",
                        "caption": "Lines: p50 (median call) with its 95% interval over repeats; shaded: "
                                   "from p50 up to p99 (dashed), the slowest 1% of calls. Log scales.",
                        "id": f"latency-{n}", "width": int(fig.get_figwidth() * fig.dpi)})
    return out


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1e3:.3g}"


def latency_rows(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The inference table: one row per (cell, batch size); ``energy`` says whether any row has
    joules (the column is shown only then) and ``energy_reasons`` why the others have none."""
    rows, reasons = [], set()
    for r in inference_records(records):
        inference = (r.get("metrics") or {}).get(INFERENCE) or {}
        for b in _rows(r):
            energy = b.get("energy") or {}
            if energy and not energy.get("available"):
                reasons.add(str(energy.get("reason")))
            ci, ci99 = b.get("p50_ci95") or [None, None], b.get("p99_ci95") or [None, None]
            rows.append({
                "backend": str(r.get("backend")), "color": backend_color(r.get("backend")),
                "where": group_label((str(r.get("task")), str(r.get("dataset")), str(r.get("device")))),
                "batch": b["batch_size"], "p50": _ms(b["p50_s"]),
                "p50_ci": f"{_ms(ci[0])}–{_ms(ci[1])}" if None not in ci else "within-run",
                "p99": _ms(b["p99_s"]), "p99_ci": f"{_ms(ci99[0])}–{_ms(ci99[1])}" if None not in ci99 else "",
                "throughput": f"{b['throughput_samples_per_s']:,.0f}" if b.get("throughput_samples_per_s") else "—",
                "joules": f"{energy['joules_per_unit']:.3g}" if energy.get("available") else "—",
                "cold": f"{inference[COLD_START]:.2f}" if inference.get(COLD_START) else "—",
                "covers": b.get("p99_interval_covers", ""),
            })
    return {"rows": rows, "energy": any(row["joules"] != "—" for row in rows), "energy_reasons": sorted(reasons)}
