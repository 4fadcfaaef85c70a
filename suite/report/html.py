"""Assemble the report's sections and render them into one self-contained HTML file with Jinja2."""
from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..records.record import TEST_ACCURACY, THROUGHPUT
from ..records.results import dumps
from ..version import __version__
from . import figures, latency, microbench_figures, tables
from .cells import (
    backend_color,
    backend_order,
    is_ok,
    metric,
    number,
    run_ids,
    short_settings_label,
    sweeps,
)
from .frontends import frontend_grids
from .studies import study_blocks
from .tuned import tuned_rows

#: (id, heading) of every section, in order. Every report has all of them.
SECTIONS = (
    ("summary", "Summary"),
    ("studies", "Studies"),
    ("performance", "Throughput, accuracy and memory"),
    ("tuned", "As written and at its best"),
    ("inference", "Inference latency and energy"),
    ("frontends", "Frontend × engine"),
    ("learning-curves", "Learning curves"),
    ("conv2d", "conv2d sweep"),
    ("optimizers", "Optimizers"),
    ("sweeps", "Hyper-parameter sweeps"),
    ("cnn", "CNN filters and confusion matrices"),
    ("scaling", "Parameter scaling"),
    ("environment", "Environment"),
    ("warnings", "Warnings"),
)
SECTION_IDS = tuple(sid for sid, _ in SECTIONS)

INTROS = {
    "summary": "One row per cell, grouped by task · dataset · device. Bold green = best of its group "
               "(accuracy and throughput: highest; time and memory: lowest).",
    "studies": "Named experiments run with `bench study`: what each one shows, its cells per backend "
               "(test accuracy, and what matters for the study underneath), and the plot that makes its point.",
    "performance": "Each bar is one cell; cells with the same settings sit side by side.",
    "tuned": "`bench tune`: each cell as written (fp32, the backend's default execution mode, data on the host) "
             "beside the fastest configuration tried whose test accuracy stays within the run's tolerance; it "
             "wins only when its 95% interval lies above the as-written one's, else the cell as written stays.",
    "inference": "`bench run --scenario inference`: the model in eval mode answering one call at a time, "
                 "per batch size (docs/inference.md). Intervals are over repeats (processes); the p99 interval "
                 "bounds a process's 99th-percentile call, not any single call.",
    "frontends": "The same task written in each frontend (raw framework, Keras, Flax) and run on each "
                 "engine: throughput with its 95% interval and test accuracy, then each frontend's overhead "
                 "over the raw engine (step-time ratio; 1.00× = none) with a bootstrap 95% interval over "
                 "both cells' step times. Compare only cells measured side by side on one machine.",
    "learning-curves": "Loss and accuracy per epoch, one colour per backend.",
    "conv2d": "Convolution kernels alone: achieved GFLOP/s per input shape and pass.",
    "optimizers": "Optimizer updates alone: time per update as the model grows, and convergence.",
    "sweeps": "Cells of the same task that differ only in their overrides.",
    "cnn": "What the first convolution learned, and where each model still confuses classes.",
    "scaling": "How parameters and step time grow with the input size, MLP against CNN.",
    "environment": "What ran where: versions, threads, BLAS kernel, CPU and compile mode per backend.",
    "warnings": "Everything that makes a number less trustworthy, and every file that could not be read.",
}

EMPTY = {
    "summary": "No records were found; `bench run` writes them (one JSON file per cell).",
    "studies": "No study in these results; `bench study lr_sweep --profile quick` runs one "
               "(`bench list studies` shows them all).",
    "performance": "No successful training cell; `bench run --task mlp_mnist` measures throughput, "
                   "accuracy and memory.",
    "tuned": "No `bench tune` cell in these results; `bench tune -b torch -t mlp_mnist --dataset digits --repeat 3` "
             "runs each cell as written and in every precision, execution mode and placement it has.",
    "inference": "No inference cell; `bench run --scenario inference -t mlp_mnist --dataset mnist_5k` measures "
                 "latency per batch size.",
    "frontends": "No frontend cell (Keras or Flax) in these results; `bench run -b jax,keras,flax -t mlp_mnist "
                 "--set backend.engine=jax` puts Keras and Flax beside raw JAX.",
    "learning-curves": "No record has a per-epoch history; training cells from `bench run` record one "
                       "row per epoch.",
    "conv2d": "No conv2d sweep records (task family \u201cconv2d\u201d, with GFLOP/s per shape and pass) "
              "in these results; run a conv2d task with `bench run --task <conv2d task>` to fill this section.",
    "optimizers": "No optimizer benchmark records (step time per parameter count, convergence per "
                  "optimizer) in these results; run an optimizer task with `bench run` to fill this section.",
    "sweeps": "No sweep: no task was run with several settings; `bench run --set optimizer.lr=0.1,0.01,0.001` "
              "produces one.",
    "cnn": "No convolutional model among these results; `bench run --task cnn_mnist --dataset digits` "
           "records first-layer filters and a confusion matrix.",
    "scaling": "No records vary the input size; a scaling task (or one task run at several "
               "`--set dataset.shape=...`) fills this section.",
    "environment": "No record carries an environment manifest (cells that never started have none).",
    "warnings": "No warnings: every file was readable, every cell ran, and every timing was stable.",
}


def code_spans(text: str) -> Markup:
    """Escape ``text`` and turn its `backtick` spans into <code> elements."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # unbalanced: no code spans
        return Markup.escape(text)
    return Markup("").join(Markup("<code>{}</code>").format(p) if i % 2 else Markup.escape(p)
                           for i, p in enumerate(parts))


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("fwbench.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["backend_color"] = backend_color
    env.filters["code_spans"] = code_spans
    return env


def _sweep_tables(records: list[dict]) -> list[dict]:
    out = []
    for sweep in sweeps([r for r in records if is_ok(r)]):
        members, keys = sweep["records"], sweep["keys"]
        backends = backend_order(members)
        settings = list(dict.fromkeys(short_settings_label(r, keys) for r in members))
        rows = []
        for s in settings:
            cells = []
            for b in backends:
                r = next((m for m in members if str(m.get("backend")) == b
                          and short_settings_label(m, keys) == s), None)
                acc = number(metric(r, TEST_ACCURACY)) if r else None
                thr = number(metric(r, THROUGHPUT)) if r else None
                cells.append({"acc": tables.fmt_percent(acc),
                              "thr": f"{tables.fmt_count(thr)} samples/s" if thr is not None else ""})
            rows.append({"setting": s, "cells": cells})
        out.append({"label": sweep["label"], "varied": keys, "rows": rows,
                    "backends": [{"name": b, "color": backend_color(b)} for b in backends]})
    return out


def _ms(seconds) -> float | None:
    value = number(seconds)
    return None if value is None else value * 1e3


def _conv2d_table(records: list[dict]) -> list[dict]:
    rows = []
    for r in microbench_figures.conv2d_records(records):
        peak = microbench_figures.peak_gflops(r)
        for c in microbench_figures.cases_of(r, "shape", "pass", "gflops"):
            g = number(c.get("gflops"))
            rows.append({"backend": str(r.get("backend")), "color": backend_color(r.get("backend")),
                         "shape": str(c["shape"]), "pass": str(c["pass"]),
                         "median": tables.fmt_sig(_ms(c.get("median_s")), "ms"),
                         "gflops": tables.fmt_sig(g), "peak": f"{100 * g / peak:.1f}%" if g and peak else "—"})
    return rows


def _header(records: list[dict]) -> dict[str, Any]:
    status = Counter(str(r.get("status")) for r in records)
    started = sorted(str(r["started_at"]) for r in records if r.get("started_at"))
    finished = sorted(str(r["finished_at"]) for r in records if r.get("finished_at"))
    hosts = sorted({str((r.get("env") or {}).get("hostname")) for r in records if (r.get("env") or {}).get("hostname")})
    cpus = sorted({str(((r.get("env") or {}).get("cpu") or {}).get("model")) for r in records
                   if ((r.get("env") or {}).get("cpu") or {}).get("model")})
    return {"run_ids": run_ids(records), "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "first": started[0][:16].replace("T", " ") if started else "",
            "last": finished[-1][:16].replace("T", " ") if finished else "",
            "status": sorted(status.items()), "cells": len(records), "hosts": hosts, "cpus": cpus,
            "backends": [{"name": b, "color": backend_color(b)} for b in backend_order(records)],
            "profiles": sorted({str(r.get("profile")) for r in records if r.get("profile")})}


def _embedded(records: list[dict]) -> Any:
    """The records as plain JSON values (no NaN, no NumPy), with ``_path`` kept as ``path``."""
    clean = []
    for r in records:
        r = {("path" if k == "_path" else k): v for k, v in r.items()}
        clean.append(json.loads(dumps(r)))
    return {"fwbench": __version__, "records": clean}


def build_context(records: list[dict], load_warnings: list[str] = ()) -> dict[str, Any]:
    records = list(records)
    figs = {
        "performance": figures.bar_figures(records),
        "inference": latency.latency_figures(records),
        "learning-curves": figures.curve_figures(records),
        "conv2d": microbench_figures.conv2d_figures(records),
        "optimizers": microbench_figures.optimizer_figures(records),
        "sweeps": figures.sweep_figures(records),
        "cnn": figures.cnn_figures(records),
        "scaling": microbench_figures.scaling_figures(records),
    }
    summary = tables.summary_groups(records)
    environment = tables.environment_table(records)
    warnings = tables.warning_list(records, load_warnings)
    sweep_tables = _sweep_tables(records)
    conv2d_rows = _conv2d_table(records)
    studies = study_blocks(records)
    grids = frontend_grids(records)
    tuned = tuned_rows(records)
    has_data = {
        "tuned": bool(tuned),
        "frontends": bool(grids),
        "summary": bool(summary), "environment": bool(environment["rows"]), "warnings": bool(warnings),
        "studies": bool(studies),
        **{k: bool(v) for k, v in figs.items()},
    }
    sections = [{"id": sid, "title": title, "intro": INTROS[sid], "figures": figs.get(sid, []),
                 "empty": None if has_data[sid] else EMPTY[sid]} for sid, title in SECTIONS]
    return {"header": _header(records), "sections": sections, "summary": summary, "columns": tables.COLUMNS,
            "environment": environment, "warnings": warnings, "sweep_tables": sweep_tables,
            "conv2d_rows": conv2d_rows, "latency": latency.latency_rows(records), "studies": studies, "frontend_grids": grids,
            "tuned_rows": tuned, "data": _embedded(records), "version": __version__,
            "section_titles": dict(SECTIONS),
            "warning_kinds": sorted(Counter(w["kind"] for w in warnings).items())}


def render_html(records: list[dict], load_warnings: list[str] = ()) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(**build_context(records, load_warnings))
