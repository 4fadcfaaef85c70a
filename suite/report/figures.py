"""The report's figures of training cells: bars, learning curves, sweeps, CNN filters and confusion.

Every function takes records and returns a list of ``{"title", "uri", "alt", "caption", "width"}``
dicts (empty when the data it needs is absent). Colours come from `cells.backend_color`, so a
backend has the same colour in every figure. Micro-benchmark figures are in `microbench_figures`.
"""
from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ..records.record import PEAK_DEVICE, PEAK_HOST, REPEATS_N, TEST_ACCURACY, THROUGHPUT
from .cells import (
    backend_color,
    backend_order,
    by_group,
    group_key,
    group_label,
    is_conv,
    is_ok,
    metric,
    number,
    section_of,
    settings_label,
    short_settings_label,
    sweep_keys,
    sweeps,
)
from .plotting import (
    backend_legend,
    compact,
    figure_item,
    grid_shape,
    grouped_bars,
    literal,
    new_figure,
    report_style,
    under_width,
    wrap_label,
)

MAX_CURVE_FIGURES = 30
MIN_REPEATS_FOR_WHISKER = 3  # fewer repeats: the bar is marked, no whisker drawn
MAX_CNN_FIGURES = 24


# ---------------------------------------------------------------------------------------------
# 2. Throughput, accuracy and memory bars
# ---------------------------------------------------------------------------------------------

def _throughput_value(r):
    v = number(metric(r, THROUGHPUT))
    if v is None:
        return None
    ci = metric(r, "throughput_ci95") or [None, None]
    lo, hi = (number(ci[0]), number(ci[1])) if isinstance(ci, list) and len(ci) == 2 else (None, None)
    n = metric(r, REPEATS_N)
    if isinstance(n, int) and 1 < n < MIN_REPEATS_FOR_WHISKER:  # t with 1 df: ×12.7, says nothing
        return v, None, None, f"n={n}: no usable interval"
    return v, lo, hi


def _accuracy_value(r):
    v = number(metric(r, TEST_ACCURACY))
    return None if v is None else (v, None, None)


def _memory_value(r):
    v = number(metric(r, PEAK_DEVICE)) if r.get("device") == "gpu" else None
    v = v if v is not None else number(metric(r, PEAK_HOST))
    return None if v is None else (v / 2**20, None, None)


BAR_METRICS = (
    ("throughput", "Training throughput", "samples / s (higher is better)", _throughput_value, compact,
     ("Throughput from the median step of each repeat (a fresh process), combined over repeats; error bars are "
      "the 95% interval over repeats (within-run only for a single repeat); with 2 repeats the bar says so and "
      "no whisker is drawn (t with 1 degree of freedom), and a whisker above 1.5x the tallest bar is cut and "
      "marked ▲. The table lists the repeats and marks intervals wider than ±10%.")),
    ("accuracy", "Test accuracy", "test accuracy (higher is better)", _accuracy_value,
     lambda v: f"{v:.1%}", "Accuracy on the held-out test split after training (best weights restored)."),
    ("memory", "Peak memory", "MiB (lower is better)", _memory_value, lambda v: f"{v:,.0f}",
     "Peak resident memory of the cell's process (device memory on GPU), framework runtime included."),
)


def bar_figures(records: list[dict]) -> list[dict]:
    """One figure per metric, one panel per task · dataset · device, bars per setting and backend."""
    ok = [r for r in records if is_ok(r) and section_of(r) is None]
    out = []
    with mpl.rc_context(report_style()):
        for key, title, ylabel, getter, fmt, caption in BAR_METRICS:
            groups = {k: v for k, v in by_group(ok).items() if any(getter(r) for r in v)}
            if not groups:
                continue
            backends = backend_order([r for v in groups.values() for r in v])
            rows, cols = grid_shape(len(groups))
            widest = max(len({settings_label(r) for r in v}) for v in groups.values())
            panel_w = max(3.6, min(7.0, 1.2 + 0.55 * widest * len(backends)))
            fig = new_figure(min(13.0, panel_w * cols), 3.5 * rows + 0.5)
            axes = fig.subplots(rows, cols, squeeze=False).ravel()
            for ax, (gkey, members) in zip(axes, groups.items(), strict=False):
                varied = sweep_keys(members)
                categories = list(dict.fromkeys(short_settings_label(r, varied) for r in members))
                values = {(short_settings_label(r, varied), str(r.get("backend"))): getter(r)
                          for r in members if getter(r)}
                grouped_bars(ax, categories, backends, values, fmt)
                ax.set_title(literal(group_label(gkey)))
                ax.set_ylabel(ylabel)
                if key == "accuracy":
                    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
                    ax.set_ylim(0, 1.08)
                else:
                    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
                    ax.margins(y=0.12)
                if categories == ["defaults"]:
                    ax.set_xticks([])
            for ax in axes[len(groups):]:
                ax.set_visible(False)
            backend_legend(fig, backends)
            out.append(figure_item(fig, title, f"{title} per backend, task and setting", caption) | {"id": key})
    return out


# ---------------------------------------------------------------------------------------------
# 3. Learning curves
# ---------------------------------------------------------------------------------------------

def _history(r) -> list[dict]:
    h = metric(r, "history")
    return [row for row in h if isinstance(row, dict)] if isinstance(h, list) else []


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in history:
        y = number(row.get(key))
        x = number(row.get("epoch"))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def _best_epoch(r) -> int | None:
    es = metric(r, "early_stopping") or {}
    best = es.get("best_epoch") if isinstance(es, dict) else None
    if best is None:
        best = (metric(r, "best_val") or {}).get("epoch")
    return int(best) if isinstance(best, int | float) and best > 0 else None


def curve_figures(records: list[dict]) -> list[dict]:
    """Per task · dataset · device · setting: loss and accuracy per epoch, one colour per backend."""
    ok = [r for r in records if is_ok(r) and _history(r)]
    combos: dict[tuple, list[dict]] = {}
    others: dict[tuple, int] = {}
    for gkey, members in by_group(ok).items():
        labels = list(dict.fromkeys(settings_label(r) for r in members))
        chosen = "defaults" if "defaults" in labels else labels[0]
        combos[(gkey, chosen)] = [r for r in members if settings_label(r) == chosen]
        others[gkey] = len(labels) - 1
    out = []
    with mpl.rc_context(report_style()):
        for (gkey, setting), members in list(combos.items())[:MAX_CURVE_FIGURES]:
            backends = backend_order(members)
            fig = new_figure(11.0, 3.6)
            axes = fig.subplots(1, 2)
            for ax, (what, label) in zip(axes, (("loss", "cross-entropy loss"), ("accuracy", "accuracy")),
                                         strict=True):
                for i, r in enumerate(members):
                    color, h = backend_color(r.get("backend")), _history(r)
                    under = under_width(i, len(members))
                    for split, style in (("train", "--"), ("val", "-")):
                        xs, ys = _series(h, f"{split}_{what}")
                        if xs:
                            ax.plot(xs, ys, style, color=color, lw=(1.8 if split == "val" else 1.3) + under,
                                    marker="o" if len(xs) <= 30 else None, ms=3.5 + under,
                                    alpha=1.0 if split == "val" else 0.8)
                    best = _best_epoch(r)
                    xs, ys = _series(h, f"val_{what}")
                    if best is not None and best in xs:
                        ax.plot([best], [ys[xs.index(best)]], marker="*", ms=14, color=color, clip_on=False,
                                markeredgecolor="black", markeredgewidth=0.7, zorder=5, linestyle="none")
                ax.set_xlabel("epoch")
                ax.set_ylabel(label)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if what == "accuracy":
                    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            title = group_label(gkey) + ("" if setting == "defaults" else f" · {setting}")
            fig.suptitle(literal(title))
            extra = [Line2D([], [], color="0.3", ls="-", label="validation"),
                     Line2D([], [], color="0.3", ls="--", label="train"),
                     Line2D([], [], color="0.5", marker="*", ms=11, ls="none", markeredgecolor="black",
                            label="best epoch (early stopping)")]
            backend_legend(fig, backends, extra, bottom=True)
            more = others[gkey]
            out.append(figure_item(fig, title, f"learning curves of {title}",
                                   "Solid: validation; dashed: training (mean over the epoch's steps); "
                                   "★ the epoch whose weights early stopping kept."
                                   + (f" The {more} other setting(s) of this task are under "
                                      "Hyper-parameter sweeps." if more else "")))
    return out


# ---------------------------------------------------------------------------------------------
# 6. Hyper-parameter sweeps
# ---------------------------------------------------------------------------------------------

def sweep_figures(records: list[dict]) -> list[dict]:
    out = []
    ok = [r for r in records if is_ok(r)]
    with mpl.rc_context(report_style()):
        for sweep in sweeps(ok):
            members, keys = sweep["records"], sweep["keys"]
            backends = backend_order(members)
            labels = list(dict.fromkeys(short_settings_label(r, keys) for r in members))
            values = {(short_settings_label(r, keys), str(r.get("backend"))): (v, None, None)
                      for r in members if (v := number(metric(r, TEST_ACCURACY))) is not None}
            fig = new_figure(min(12.0, max(5.5, 1.0 + 0.6 * len(labels) * len(backends))), 3.6)
            ax = fig.subplots()
            grouped_bars(ax, labels, backends, values, lambda v: f"{v:.1%}")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_ylim(0, 1.1)
            ax.set_ylabel("final test accuracy")
            ax.set_xlabel(literal(", ".join(keys)))
            fig.suptitle(literal(f"Sweep · {sweep['label']}"))
            backend_legend(fig, backends, bottom=True)
            out.append(figure_item(fig, f"Final accuracy per setting · {sweep['label']}",
                                   f"final test accuracy per value of {', '.join(keys)}",
                                   f"Test accuracy after training for each value of {', '.join(keys)}."))

            with_history = [r for r in members if _history(r)]
            if not with_history:
                continue
            import seaborn as sns

            colors = dict(zip(labels, sns.color_palette("viridis", len(labels)), strict=True))
            fig = new_figure(min(13.0, 3.4 * len(backends) + 0.8), 6.0)
            axes = fig.subplots(2, len(backends), squeeze=False, sharex=True, sharey="row")
            for col, b in enumerate(backends):
                for row, (what, ylabel) in enumerate((("val_loss", "validation loss"),
                                                      ("val_accuracy", "validation accuracy"))):
                    ax = axes[row][col]
                    for r in with_history:
                        if str(r.get("backend")) != b:
                            continue
                        xs, ys = _series(_history(r), what)
                        ax.plot(xs, ys, "o-", ms=3, lw=1.6, color=colors[short_settings_label(r, keys)])
                    if row == 0:
                        ax.set_title(literal(b), color=backend_color(b))
                    else:
                        ax.set_xlabel("epoch")
                        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
                    if col == 0:
                        ax.set_ylabel(ylabel)
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            fig.suptitle(literal(f"Curves per setting · {sweep['label']}"))
            handles = [Line2D([], [], color=c, marker="o", ms=4, label=literal(lab)) for lab, c in colors.items()]
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
            out.append(figure_item(fig, f"Curves per setting · {sweep['label']}",
                                   f"validation curves for each value of {', '.join(keys)}",
                                   "One panel per backend; one line per setting (same colours in every panel)."))
    return out


# ---------------------------------------------------------------------------------------------
# 7. CNN: first-layer filters and confusion matrices
# ---------------------------------------------------------------------------------------------

def _filter_mosaic(filters: np.ndarray) -> tuple[np.ndarray, bool]:
    """Tile OIHW filters into one image (NaN gaps); each filter scaled to its own range.

    Returns ``(image, rgb)``: ``(rows*(H+1)-1, cols*(W+1)-1)`` for one channel (values in [-1, 1])
    or ``(..., 3)`` in [0, 1] for three-channel filters.
    """
    o, i, h, w = filters.shape
    rgb = i == 3
    cols = min(o, max(4, math.ceil(math.sqrt(o * 2))))
    rows = math.ceil(o / cols)
    shape = (rows * (h + 1) - 1, cols * (w + 1) - 1) + ((3,) if rgb else ())
    image = np.full(shape, np.nan if not rgb else 1.0)
    for k in range(o):
        r, c = divmod(k, cols)
        f = filters[k]
        if rgb:
            f = f.transpose(1, 2, 0)
            span = f.max() - f.min()
            tile = (f - f.min()) / span if span > 0 else np.full_like(f, 0.5)
        else:
            f = f.mean(axis=0)
            scale = np.abs(f).max()
            tile = f / scale if scale > 0 else f
        image[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = tile
    return image, rgb


def cnn_figures(records: list[dict]) -> list[dict]:
    import seaborn as sns

    out = []
    chosen = [r for r in records if is_ok(r) and is_conv(r)
              and (metric(r, "first_layer_filters") or metric(r, "confusion_matrix"))]
    with mpl.rc_context(report_style()):
        for r in chosen[:MAX_CNN_FIGURES]:
            filters = metric(r, "first_layer_filters")
            confusion = metric(r, "confusion_matrix")
            fig = new_figure(11.0, 4.4)
            panels = [p for p in ("filters", "confusion") if (filters if p == "filters" else confusion)]
            subfigs = fig.subfigures(1, len(panels), width_ratios=[1.25, 1][:len(panels)], squeeze=False)[0]
            for sub, panel in zip(subfigs, panels, strict=True):
                ax = sub.subplots()
                if panel == "filters":
                    arr = np.asarray(filters, dtype=float)
                    if arr.ndim != 4:
                        ax.text(0.5, 0.5, "filters are not OIHW", ha="center", transform=ax.transAxes)
                        continue
                    image, rgb = _filter_mosaic(arr)
                    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad="white")
                    ax.imshow(image, cmap=None if rgb else cmap, vmin=-1, vmax=1, interpolation="nearest")
                    ax.set_axis_off()
                    o, i, h, w = arr.shape
                    note = "" if i in (1, 3) else f", mean over {i} input channels"
                    ax.set_title(f"first-layer filters ({o} × {h}×{w}{note})", fontsize=10)
                else:
                    cm = np.asarray(confusion, dtype=float)
                    names = [str(n) for n in (metric(r, "class_names") or range(len(cm)))][:len(cm)]
                    if len(names) < len(cm):
                        names += [str(k) for k in range(len(names), len(cm))]
                    rows = cm.sum(axis=1, keepdims=True)
                    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
                    sns.heatmap(frac, ax=ax, cmap="Blues", vmin=0, vmax=1,
                                annot=cm.astype(int) if len(cm) <= 12 else False, fmt="d",
                                annot_kws={"fontsize": 7}, square=True,
                                cbar_kws={"label": "row fraction", "shrink": 0.8},
                                xticklabels=[wrap_label(n, 10) for n in names],
                                yticklabels=[wrap_label(n, 10) for n in names],
                                linewidths=0.3, linecolor="white")
                    ax.set_xlabel("predicted")
                    ax.set_ylabel("true")
                    ax.tick_params(axis="both", labelsize=8)
                    ax.set_title("confusion matrix (test split)", fontsize=10)
            title = f"{r.get('backend')} · {group_label(group_key(r))}"
            label = settings_label(r)
            if label != "defaults":
                title += f" · {label}"
            fig.suptitle(literal(title), color=backend_color(r.get("backend")))
            out.append(figure_item(fig, title, f"first-layer filters and confusion matrix of {title}",
                                   "Filters: each scaled to its own range (red positive, blue negative). "
                                   "Confusion matrix: counts, coloured by the fraction of each true class."))
    return out
