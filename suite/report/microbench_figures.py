"""Figures of the micro-benchmarks: conv2d GFLOP/s with the machine's peak as the roof, optimizer
update time and convergence, parameter scaling (MLP vs CNN against the input size).

These tasks come from other plugins; the figures read only ``metrics["cases"]`` (and
``metrics["convergence"]``, ``peak_gflops``), so they render whenever such records are present.
"""
from __future__ import annotations

import math
from collections import defaultdict

import matplotlib as mpl
from matplotlib.lines import Line2D

from ..records.record import CASES, CONVERGENCE, STEP_TIME
from .cells import (
    backend_color,
    backend_order,
    by_group,
    group_label,
    is_ok,
    metric,
    number,
    section_of,
)
from .plotting import (
    backend_legend,
    figure_item,
    grid_shape,
    grouped_bars,
    literal,
    new_figure,
    report_style,
    under_width,
)

# ---------------------------------------------------------------------------------------------
# 4. conv2d sweep (GFLOP/s per shape and pass, machine peak as the roof)
# ---------------------------------------------------------------------------------------------

def cases_of(r, *required: str) -> list[dict]:
    cases = metric(r, CASES)
    if not isinstance(cases, list):
        return []
    return [c for c in cases if isinstance(c, dict) and all(k in c for k in required)]


def peak_gflops(r) -> float | None:
    for source in (r.get("metrics") or {}, r.get("env") or {}):
        v = number(source.get("peak_gflops"))
        if v is not None:
            return v
        v = number(source.get("peak_flops"))
        if v is not None:
            return v / 1e9
    return None


def gflops_ci(case: dict) -> tuple[float | None, float | None]:
    """The case's CI in GFLOP/s: ``ci95`` is read as GFLOP/s when it brackets ``gflops``, else as seconds."""
    g, ci = number(case.get("gflops")), case.get("ci95")
    if g is None or not (isinstance(ci, list | tuple) and len(ci) == 2):
        return None, None
    lo, hi = number(ci[0]), number(ci[1])
    if lo is None or hi is None:
        return None, None
    if lo <= g * 1.000001 and hi >= g * 0.999999:
        return lo, hi
    t = number(case.get("median_s"))
    if t and lo > 0 and hi > 0 and lo <= t <= hi:
        return g * t / hi, g * t / lo
    return None, None


def conv2d_records(records: list[dict]) -> list[dict]:
    return [r for r in records if is_ok(r) and cases_of(r, "shape", "pass", "gflops")]


def conv2d_figures(records: list[dict]) -> list[dict]:
    out = []
    with mpl.rc_context(report_style()):
        for gkey, members in by_group(conv2d_records(records)).items():
            backends = backend_order(members)
            cases = [c for r in members for c in cases_of(r, "shape", "pass", "gflops")]
            passes = list(dict.fromkeys(str(c["pass"]) for c in cases))
            shapes = list(dict.fromkeys(str(c["shape"]) for c in cases))
            peaks = [p for p in map(peak_gflops, members) if p]
            fig = new_figure(min(13.0, max(6.0, 0.5 * len(shapes) * len(backends) + 2) * min(2, len(passes))),
                              3.8 * math.ceil(len(passes) / 2) + 0.6)
            rows, cols = grid_shape(len(passes), 2)
            axes = fig.subplots(rows, cols, squeeze=False).ravel()
            all_values = []
            for ax, p in zip(axes, passes, strict=False):
                values = {}
                for r in members:
                    for c in cases_of(r, "shape", "pass", "gflops"):
                        g = number(c["gflops"])
                        if str(c["pass"]) == p and g is not None:
                            values[(str(c["shape"]), str(r.get("backend")))] = (g, *gflops_ci(c))
                            all_values.append(g)
                grouped_bars(ax, shapes, backends, values)
                if peaks:
                    peak = max(peaks)
                    ax.axhline(peak, color="0.15", ls="--", lw=1.2)
                    ax.annotate(f"machine peak {peak:,.0f} GFLOP/s", (0.99, peak), xycoords=("axes fraction", "data"),
                                ha="right", va="bottom", fontsize=8, color="0.15")
                ax.set_title(literal(f"pass: {p}"))
                ax.set_ylabel("GFLOP/s (higher is better)")
                ax.set_xlabel("input shape (N,C,H,W) × filters")
            if all_values and min(all_values) > 0 and (max(all_values + peaks) / min(all_values)) > 50:
                for ax in axes[:len(passes)]:
                    ax.set_yscale("log")
            for ax in axes[len(passes):]:
                ax.set_visible(False)
            fig.suptitle(literal(f"conv2d · {group_label(gkey)}"))
            extra = [Line2D([], [], color="0.15", ls="--", label="roofline (measured peak)")] if peaks else []
            backend_legend(fig, backends, extra, bottom=True)
            out.append(figure_item(fig, f"conv2d GFLOP/s · {group_label(gkey)}",
                                   "conv2d throughput per shape and pass",
                                   "Achieved GFLOP/s per shape and pass (error bars: 95% CI); the dashed line is "
                                   "the machine's measured peak, the roof no kernel can pass."))
    return out


# ---------------------------------------------------------------------------------------------
# 5. Optimizer step time and convergence
# ---------------------------------------------------------------------------------------------

def optimizer_records(records: list[dict]) -> list[dict]:
    return [r for r in records if is_ok(r) and (cases_of(r, "optimizer", "params", "median_s")
                                                 or isinstance(metric(r, CONVERGENCE), dict))]


def optimizer_figures(records: list[dict]) -> list[dict]:
    out = []
    with mpl.rc_context(report_style()):
        for gkey, members in by_group(optimizer_records(records)).items():
            backends = backend_order(members)
            optimizers = list(dict.fromkeys(
                [str(c["optimizer"]) for r in members for c in cases_of(r, "optimizer", "params", "median_s")]
                + [str(k) for r in members for k in (metric(r, CONVERGENCE) or {})]))
            rows, cols = grid_shape(len(optimizers), 4)
            if any(cases_of(r, "optimizer", "params", "median_s") for r in members):
                fig = new_figure(min(13.0, 3.3 * cols), 3.2 * rows + 0.6)
                axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
                for ax, opt in zip(axes, optimizers, strict=False):
                    for i, r in enumerate(members):
                        pts = sorted((number(c["params"]), number(c["median_s"]))
                                     for c in cases_of(r, "optimizer", "params", "median_s")
                                     if str(c["optimizer"]) == opt)
                        pts = [(p, t) for p, t in pts if p and t]
                        if pts:
                            ax.plot(*zip(*pts, strict=True), "o-", color=backend_color(r.get("backend")),
                                    ms=4 + under_width(i, len(members)), lw=1.6 + under_width(i, len(members)))
                    ax.set(xscale="log", yscale="log", title=literal(opt), xlabel="parameters")
                    if ax.get_subplotspec().is_first_col():
                        ax.set_ylabel("update time, s (lower is better)")
                for ax in axes[len(optimizers):]:
                    ax.set_visible(False)
                fig.suptitle(literal(f"Optimizer step time · {group_label(gkey)}"))
                backend_legend(fig, backends, bottom=True)
                out.append(figure_item(fig, f"Optimizer step time · {group_label(gkey)}",
                                       "optimizer update time versus parameter count",
                                       "Median time of one optimizer update against the number of "
                                       "parameters (log–log)."))
            conv = [r for r in members if isinstance(metric(r, CONVERGENCE), dict)]
            if conv:
                names = list(dict.fromkeys(str(k) for r in conv for k in metric(r, CONVERGENCE)))
                rows, cols = grid_shape(len(names), 4)
                fig = new_figure(min(13.0, 3.3 * cols), 3.2 * rows + 0.6)
                axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
                for ax, opt in zip(axes, names, strict=False):
                    for i, r in enumerate(conv):
                        losses = [number(v) for v in (metric(r, CONVERGENCE) or {}).get(opt) or []]
                        xs = [k for k, v in enumerate(losses) if v is not None]
                        if xs:
                            ax.plot(xs, [losses[k] for k in xs], color=backend_color(r.get("backend")),
                                    lw=1.6 + under_width(i, len(conv)))
                    ax.set(title=literal(opt), xlabel="step")
                    if all(v > 0 for r in conv for v in map(number, (metric(r, CONVERGENCE) or {}).get(opt) or [])
                           if v is not None):
                        ax.set_yscale("log")
                    if ax.get_subplotspec().is_first_col():
                        ax.set_ylabel("loss")
                for ax in axes[len(names):]:
                    ax.set_visible(False)
                fig.suptitle(literal(f"Convergence per optimizer · {group_label(gkey)}"))
                backend_legend(fig, backends, bottom=True)
                out.append(figure_item(fig, f"Convergence · {group_label(gkey)}", "loss per step for each optimizer",
                                       "Loss per step from the same initial weights, one panel per optimizer."))
    return out


# ---------------------------------------------------------------------------------------------
# 8. Parameter scaling: params and step time vs input size, MLP vs CNN
# ---------------------------------------------------------------------------------------------

def scaling_points(records: list[dict]) -> list[dict]:
    """``{"backend", "model", "input", "params", "median_s"}`` from ``metrics.cases`` of scaling
    records, or from training records of one task run at several input sizes."""
    points = []
    for r in records:
        if not is_ok(r):
            continue
        for c in cases_of(r, "model", "input", "params", "median_s"):
            points.append({"backend": str(r.get("backend")), "model": str(c["model"]), "input": number(c["input"]),
                           "params": number(c["params"]), "median_s": number(c["median_s"])})
    trained: dict[str, set] = defaultdict(set)
    rows = []
    for r in records:
        shape = (r.get("data") or {}).get("input_shape")
        median = number((metric(r, STEP_TIME) or {}).get("median"))
        if is_ok(r) and section_of(r) is None and isinstance(shape, list) and shape and median:
            trained[str(r.get("task"))].add(number(shape[-1]))
            rows.append({"backend": str(r.get("backend")), "model": str(r.get("task")), "input": number(shape[-1]),
                         "params": number(r.get("params")), "median_s": median})
    varied = {t for t, sizes in trained.items() if len(sizes) > 1}
    points += [p for p in rows if p["model"] in varied]
    return [p for p in points if p["input"] is not None and p["params"] and p["median_s"]]


def scaling_figures(records: list[dict]) -> list[dict]:
    points = scaling_points(records)
    if not points:
        return []
    backends = backend_order(points)
    models = list(dict.fromkeys(p["model"] for p in points))
    styles = dict(zip(models, ["-", "--", ":", "-."] * 4, strict=False))
    markers = dict(zip(models, ["o", "s", "^", "D"] * 4, strict=False))
    with mpl.rc_context(report_style()):
        fig = new_figure(11.0, 3.9)
        ax_p, ax_t = fig.subplots(1, 2)
        for m in models:
            pts = sorted({(p["input"], p["params"]) for p in points if p["model"] == m})
            ax_p.plot(*zip(*pts, strict=True), styles[m], marker=markers[m], color="0.25", label=literal(m))
            for b in backends:
                pts = sorted((p["input"], p["median_s"] * 1e3) for p in points if p["model"] == m and p["backend"] == b)
                if pts:
                    ax_t.plot(*zip(*pts, strict=True), styles[m], marker=markers[m], color=backend_color(b))
        ax_p.set(yscale="log", xlabel="input size (pixels per side)", ylabel="trainable parameters",
                 title="Parameters vs input size")
        ax_t.set(yscale="log", xlabel="input size (pixels per side)", ylabel="step time, ms (lower is better)",
                 title="Step time vs input size")
        extra = [Line2D([], [], color="0.25", ls=styles[m], marker=markers[m], label=literal(m)) for m in models]
        backend_legend(fig, backends, extra)
        return [figure_item(fig, "Parameter scaling", "parameters and step time against input size",
                            "A dense layer's weights grow with the square of the input side; a convolution's do not.")]
