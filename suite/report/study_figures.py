"""The figures of the report's Studies section: one function per study kind (`fwbench.studies.spec`).

Each takes the records of one study run (every one carries ``study``: its label, order...) and
returns ``{"title", "uri", "alt", "caption", "width"}`` dicts. Backends keep their colours from
`cells.backend_color`; the variants of a study (its cell labels) get colours of their own
(`variant_colors`), the same in every figure of the study.
"""
from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ..records.record import STEP_TIME, TEST_ACCURACY
from .cells import backend_color, backend_order, is_ok, metric, number
from .plotting import (
    backend_legend,
    compact,
    figure_item,
    grouped_bars,
    literal,
    new_figure,
    report_style,
    under_width,
)

#: Variant colours: hues the backends do not use (blue, red-orange, amber, green are theirs), so
#: a variant is never mistaken for a backend; each variant also gets its own marker.
VARIANT_PALETTE = ("#6A3D9A", "#1A1A1A", "#E7298A", "#17A2B8", "#A6761D", "#8C8C8C", "#9A9A2A", "#B07AA1")
VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def label_of(r: dict) -> str:
    return str((r.get("study") or {}).get("label"))


def order_of(r: dict) -> int:
    return int((r.get("study") or {}).get("order") or 0)


def labels(records: list[dict]) -> list[str]:
    """The study's cell labels in the study's order."""
    return [lab for lab, _ in sorted({label_of(r): order_of(r) for r in records}.items(), key=lambda kv: kv[1])]


def variant_colors(names: list[str]) -> dict[str, str]:
    return {name: VARIANT_PALETTE[i % len(VARIANT_PALETTE)] for i, name in enumerate(names)}


def variant_markers(names: list[str]) -> dict[str, str]:
    return {name: VARIANT_MARKERS[i % len(VARIANT_MARKERS)] for i, name in enumerate(names)}


def history(r: dict) -> list[dict]:
    h = metric(r, "history")
    return [row for row in h if isinstance(row, dict)] if isinstance(h, list) else []


def series(r: dict, key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in history(r):
        xv, yv = number(row.get(x)), number(row.get(key))
        if xv is not None and yv is not None:
            xs.append(xv)
            ys.append(yv)
    return xs, ys


def _find(records: list[dict], label: str, backend: str) -> dict | None:
    return next((r for r in records if label_of(r) == label and str(r.get("backend")) == backend), None)


def _percent_axis(ax, top: float = 1.02) -> None:
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, top)


def _variant_legend(fig, colors: dict[str, str], extra: list | None = None) -> None:
    markers = variant_markers(list(colors))
    handles = [Line2D([], [], color=c, lw=2.2, marker=markers[n], ms=5, label=literal(n)) for n, c in colors.items()]
    fig.legend(handles=handles + (extra or []), loc="outside lower center", ncols=min(len(handles) + len(extra or []), 7))


def _curves_per_backend(records: list[dict], names: list[str], rows: list[tuple[str, str, str]],
                        title: str, x: str = "epoch") -> object:
    """Panels: one column per backend, one row per ``(history key, y label, kind)``; lines per variant."""
    backends = backend_order(records)
    colors, markers = variant_colors(names), variant_markers(names)
    fig = new_figure(min(13.0, max(6.5, 3.3 * len(backends) + 1.0)), 2.9 * len(rows) + 1.0)
    axes = fig.subplots(len(rows), len(backends), squeeze=False, sharex="col", sharey="row")
    for col, b in enumerate(backends):
        for row, (key, ylabel, kind) in enumerate(rows):
            ax = axes[row][col]
            for name in names:
                r = _find(records, name, b)
                if r is None or not is_ok(r):
                    continue
                xs, ys = series(r, key, x)
                if xs:
                    ax.plot(xs, ys, "-", marker=markers[name], ms=3.5, lw=1.8, color=colors[name])
            if row == 0:
                ax.set_title(literal(b), color=backend_color(b))
            if row == len(rows) - 1:
                ax.set_xlabel("epoch" if x == "epoch" else "training time (s)")
            if col == 0:
                ax.set_ylabel(ylabel)
            if kind == "percent":
                _percent_axis(ax)
            elif kind == "log":
                ax.set_yscale("log")
            if x == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(literal(title))
    _variant_legend(fig, colors)
    return fig


def _bars(ax, records: list[dict], names: list[str], getter, fmt, ylabel: str) -> None:
    backends = backend_order(records)
    values = {}
    for r in records:
        if is_ok(r) and (v := getter(r)) is not None:
            values[(label_of(r), str(r.get("backend")))] = (v, None, None)
    grouped_bars(ax, names, backends, values, fmt)
    ax.set_ylabel(ylabel)


def _test_accuracy(r):
    return number(metric(r, TEST_ACCURACY))


def _step_ms(r):
    median = number((metric(r, STEP_TIME) or {}).get("median"))
    return None if median is None else median * 1e3


def _train_time(r):
    return number(metric(r, "train_time_s"))


def _accuracy_and_time(records: list[dict], names: list[str], title: str, caption: str,
                       per_step: bool = False) -> dict:
    """Final test accuracy next to the time in train steps (``per_step``: the median step)."""
    backends = backend_order(records)
    fig = new_figure(min(13.0, max(8.0, 1.6 + 0.9 * len(names) * len(backends))), 3.7)
    ax_acc, ax_time = fig.subplots(1, 2)
    _bars(ax_acc, records, names, _test_accuracy, lambda v: f"{v:.1%}", "final test accuracy")
    _percent_axis(ax_acc, 1.1)
    if per_step:
        _bars(ax_time, records, names, _step_ms, lambda v: f"{v:.3g}", "median train step (ms, lower is better)")
        ax_time.set_title("time per step (compilation excluded)")
    else:
        _bars(ax_time, records, names, _train_time, lambda v: f"{v:.3g}", "training time (s, lower is better)")
        ax_time.set_title("time spent in train steps")
    ax_time.margins(y=0.15)
    ax_acc.set_title("accuracy")
    fig.suptitle(literal(title))
    backend_legend(fig, backends, bottom=True)
    return figure_item(fig, title, "final test accuracy and training time per variant and backend", caption)


# ---------------------------------------------------------------------------------------------
# sweep: curves + final accuracy per setting
# ---------------------------------------------------------------------------------------------

def sweep_figures(records: list[dict], title: str) -> list[dict]:
    names = labels(records)
    with mpl.rc_context(report_style()):
        curves = _curves_per_backend(records, names, [("val_accuracy", "validation accuracy", "percent"),
                                                       ("train_loss", "training loss", "log")],
                                     "Learning curves per setting")
        timed = _curves_per_backend(records, names, [("val_accuracy", "validation accuracy", "percent")],
                                    "Accuracy against training time", x="train_time_s")
        return [
            figure_item(curves, "Learning curves per setting", "validation accuracy and training loss per epoch, "
                        "one line per setting, one panel per backend",
                        "One panel per backend, one colour per setting (the same in every panel). Training loss "
                        "(log scale): the mean over each epoch's steps."),
            figure_item(timed, "Accuracy against training time", "validation accuracy against seconds of training",
                        "The same validation accuracy with the seconds spent in train steps on the x axis: what a "
                        "setting costs, not only what it reaches."),
            _accuracy_and_time(records, names, "Final accuracy and training time",
                               "Test accuracy of the final weights, and the time spent in train steps."),
        ]


# ---------------------------------------------------------------------------------------------
# regularization: the train-validation gap
# ---------------------------------------------------------------------------------------------

def gap_values(r: dict) -> tuple[float, float] | None:
    """(train accuracy, validation accuracy) of the final weights, eval mode (history as fallback)."""
    train, val = number(metric(r, "final_train_accuracy")), number(metric(r, "final_val_accuracy"))
    if train is None or val is None:
        rows = history(r)
        if not rows:
            return None
        last = rows[-1]
        train = number(last.get("train_eval_accuracy", last.get("train_accuracy")))
        val = number(last.get("val_accuracy"))
    return None if train is None or val is None else (train, val)


def regularization_figures(records: list[dict], title: str) -> list[dict]:
    names = labels(records)
    backends = backend_order(records)
    out = []
    with mpl.rc_context(report_style()):
        fig = new_figure(12.0, 1.2 + 0.62 * len(names) * max(1, len(backends)) + 0.8)
        ax_pair, ax_gap = fig.subplots(1, 2, width_ratios=[1.35, 1])
        n_b = max(1, len(backends))
        step = 0.8 / n_b
        gaps = {}
        for i, name in enumerate(names):
            for j, b in enumerate(backends):
                r = _find(records, name, b)
                pair = gap_values(r) if r is not None and is_ok(r) else None
                if pair is None:
                    continue
                train, val = pair
                y = i - 0.4 + step * (j + 0.5)
                color = backend_color(b)
                ax_pair.plot([val, train], [y, y], "-", color=color, lw=3.2, alpha=0.45, solid_capstyle="round")
                ax_pair.plot([train], [y], "o", ms=8, markerfacecolor="white", markeredgecolor=color, mew=2)
                ax_pair.plot([val], [y], "o", ms=8, color=color)
                ax_pair.annotate(f"gap {train - val:+.1%}".replace("-", "−"), ((train + val) / 2, y),
                                 textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7.5, color="0.25")
                gaps[(name, b)] = (train - val, None, None)
        ax_pair.set_yticks(range(len(names)), [literal(n) for n in names])
        ax_pair.invert_yaxis()
        ax_pair.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        ax_pair.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}%"))
        ax_pair.set_xlabel("accuracy of the final weights (evaluation mode)")
        ax_pair.set_title("training (○) and validation (●) accuracy")
        ax_pair.grid(axis="y", visible=False)
        grouped_bars(ax_gap, names, backends, gaps, lambda v: f"{v:.1%}")
        ax_gap.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax_gap.set_ylabel("train − validation accuracy")
        ax_gap.set_title("the gap (lower: less overfitting)")
        ax_gap.axhline(0, color="0.4", lw=0.8)
        ax_gap.margins(y=0.15)
        fig.suptitle("The train–validation gap")
        markers = [Line2D([], [], ls="none", marker="o", ms=7, markerfacecolor="white", markeredgecolor="0.3",
                          mew=2, label="training"),
                   Line2D([], [], ls="none", marker="o", ms=7, color="0.3", label="validation")]
        backend_legend(fig, backends, markers, bottom=True)
        out.append(figure_item(fig, "The train–validation gap per variant",
                               "final training and validation accuracy per variant and backend, and their gap",
                               "Left: each bar runs from the validation accuracy (filled dot) to the training "
                               "accuracy (open dot) of the final weights, both in evaluation mode; its length is "
                               "the gap. Right: the gap per variant and backend. A negative gap: the network "
                               "does better on new digits than on the training digits' own labels (when some of "
                               "those are wrong, it declined to learn them)."))

        cols = min(len(names), 5)
        rows_n = math.ceil(len(names) / cols)
        fig = new_figure(min(13.0, 2.7 * cols + 0.6), 2.8 * rows_n + 1.0)
        axes = fig.subplots(rows_n, cols, squeeze=False, sharey=True)
        for ax, name in zip(axes.ravel(), names, strict=False):
            for i, b in enumerate(backends):
                r = _find(records, name, b)
                if r is None or not is_ok(r):
                    continue
                key = "train_eval_accuracy" if any("train_eval_accuracy" in h for h in history(r)) else "train_accuracy"
                under = under_width(i, len(backends))  # identical curves stay visible
                for what, style in ((key, "--"), ("val_accuracy", "-")):
                    xs, ys = series(r, what)
                    ax.plot(xs, ys, style, color=backend_color(b), lw=1.7 + under)
                best = (metric(r, "early_stopping") or {})
                xs, ys = series(r, "val_accuracy")
                if best.get("restored_best") and best.get("best_epoch") in xs:
                    k = xs.index(best["best_epoch"])
                    ax.plot([xs[k]], [ys[k]], marker="*", ms=13, color=backend_color(b), markeredgecolor="black",
                            markeredgewidth=0.6, ls="none", zorder=5)
            ax.set_title(literal(name))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        for ax in axes.ravel()[len(names):]:
            ax.set_visible(False)
        lows = [y for ax in axes.ravel() for line in ax.get_lines() for y in line.get_ydata()]
        if lows:  # zoom on the curves: the gap is a few points wide, 0-100% would flatten it
            axes[0][0].set_ylim(max(0.0, math.floor(20 * min(lows)) / 20 - 0.05), 1.02)
        axes[0][0].set_ylabel("accuracy")
        fig.suptitle("Training against validation accuracy, epoch by epoch")
        styles = [Line2D([], [], color="0.3", ls="--", label="training (eval mode)"),
                  Line2D([], [], color="0.3", ls="-", label="validation"),
                  Line2D([], [], color="0.5", marker="*", ms=11, ls="none", markeredgecolor="black",
                         label="epoch kept by early stopping")]
        backend_legend(fig, backends, styles, bottom=True)
        out.append(figure_item(fig, "The gap opening, epoch by epoch",
                               "training and validation accuracy per epoch for each variant",
                               "Dashed: accuracy on the training digits (their own labels); solid: on the "
                               "validation digits; one colour per backend. Where the lines part, the network "
                               "memorises; ★ the epoch whose weights early stopping kept."))
    return out


# ---------------------------------------------------------------------------------------------
# architectures: parameters, time, accuracy side by side
# ---------------------------------------------------------------------------------------------

def architecture_figures(records: list[dict], title: str) -> list[dict]:
    names = labels(records)
    backends = backend_order(records)
    with mpl.rc_context(report_style()):
        fig = new_figure(min(13.5, max(10.0, 2.0 + 1.0 * len(names) * len(backends))), 3.9)
        ax_p, ax_t, ax_a = fig.subplots(1, 3)
        _bars(ax_p, records, names, lambda r: number(r.get("params")), compact, "trainable parameters")
        ax_p.yaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
        ax_p.margins(y=0.15)
        ax_p.set_title("size")
        _bars(ax_t, records, names, _step_ms, lambda v: f"{v:.3g}", "median train step (ms, lower is better)")
        ax_t.margins(y=0.15)
        ax_t.set_title("cost")
        _bars(ax_a, records, names, _test_accuracy, lambda v: f"{v:.1%}", "final test accuracy")
        _percent_axis(ax_a, 1.1)
        ax_a.set_title("result")
        fig.suptitle("Parameters, step time and accuracy")
        backend_legend(fig, backends, bottom=True)
        side = figure_item(fig, "Parameters, step time and accuracy", "parameters, median step time and test "
                           "accuracy per architecture and backend",
                           "Every architecture trains on the same batches (same batch size): the step time is "
                           "comparable across architectures and backends.")
        curves = _curves_per_backend(records, names, [("val_accuracy", "validation accuracy", "percent")],
                                     "Accuracy against training time", x="train_time_s")
    return [side, figure_item(curves, "Accuracy against training time", "validation accuracy against seconds "
                              "of training per architecture", "One panel per backend; one colour per "
                              "architecture; a point per epoch.")]


# ---------------------------------------------------------------------------------------------
# vanishing gradients: per-layer gradient norm per epoch, log scale
# ---------------------------------------------------------------------------------------------

def _layer_order(paths) -> list[str]:
    def key(path: str):
        return tuple(int(p) if p.isdigit() else p for p in path.split("."))
    return sorted(set(paths), key=key)


def grad_norm_table(r: dict) -> tuple[list[str], list[int], np.ndarray]:
    """Layer paths (input to output), epochs, and norms ``(epochs, layers)`` (NaN where missing)."""
    rows = [row for row in history(r) if isinstance(row.get("grad_norms"), dict)]
    layers = _layer_order(p for row in rows for p in row["grad_norms"])
    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(rows)]
    norms = np.full((len(rows), len(layers)), np.nan)
    for i, row in enumerate(rows):
        for j, path in enumerate(layers):
            v = number(row["grad_norms"].get(path))
            if v is not None and v > 0:
                norms[i, j] = v
    return layers, epochs, norms


def vanishing_figures(records: list[dict], title: str) -> list[dict]:
    names = labels(records)
    backends = backend_order(records)
    colors = variant_colors(names)
    out = []
    with mpl.rc_context(report_style()):
        fig = new_figure(min(13.0, max(6.5, 3.3 * len(backends) + 1.0)), 3.8)
        axes = fig.subplots(1, len(backends), squeeze=False, sharey=True)[0]
        for ax, b in zip(axes, backends, strict=True):
            for name in names:
                r = _find(records, name, b)
                if r is None or not is_ok(r):
                    continue
                layers, epochs, norms = grad_norm_table(r)
                if not epochs:
                    continue
                depth = np.arange(1, len(layers) + 1)
                ax.plot(depth, norms[0], "--", color=colors[name], lw=1.3, alpha=0.8)
                ax.plot(depth, norms[-1], "-", marker=variant_markers(names)[name], color=colors[name], lw=2.0, ms=4)
            ax.set_yscale("log")
            ax.set_xlabel("layer (1 = next to the input)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(literal(b), color=backend_color(b))
        axes[0].set_ylabel("gradient norm (log scale)")
        fig.suptitle("Gradient size through the layers")
        _variant_legend(fig, colors, [Line2D([], [], color="0.4", ls="--", label="first epoch"),
                                      Line2D([], [], color="0.4", ls="-", marker="o", ms=4, label="last epoch")])
        out.append(figure_item(fig, "Gradient norm per layer", "L2 norm of each layer's weight gradient against "
                               "its depth, first and last epoch",
                               "The size of each layer's weight gradient on a fixed training batch, from the layer "
                               "next to the input (1) to the output layer. Log scale: one grid line is a factor 10."))

        fig = new_figure(min(13.0, max(6.5, 3.3 * len(backends) + 1.2)), 2.8 * len(names) + 1.0)
        axes = fig.subplots(len(names), len(backends), squeeze=False, sharex=True, sharey=True)
        cmap = mpl.colormaps["viridis"]
        depth_max = 1
        for row, name in enumerate(names):
            for col, b in enumerate(backends):
                ax = axes[row][col]
                r = _find(records, name, b)
                if r is not None and is_ok(r):
                    layers, epochs, norms = grad_norm_table(r)
                    depth_max = max(depth_max, len(layers))
                    for j in range(len(layers)):
                        ax.plot(epochs, norms[:, j], "o-", ms=2.5, lw=1.5,
                                color=cmap(j / max(1, len(layers) - 1)))
                ax.set_yscale("log")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if row == 0:
                    ax.set_title(literal(b), color=backend_color(b))
                if col == 0:
                    ax.set_ylabel(literal(f"{name}\n‖gradient‖ (log)"), color=colors[name])
                if row == len(names) - 1:
                    ax.set_xlabel("epoch")
        fig.suptitle("Gradient norm of every layer, epoch by epoch")
        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(1, depth_max))
        fig.colorbar(sm, ax=axes, location="right", shrink=0.8, label="layer (1 = next to the input)")
        out.append(figure_item(fig, "Gradient norm per layer and epoch", "per-layer gradient norms per epoch, "
                               "one line per layer", "One line per layer, coloured from the input (dark) to the "
                               "output (yellow); one row per variant, one column per backend."))

        curves = _curves_per_backend(records, names, [("val_accuracy", "validation accuracy", "percent")],
                                     "What the gradients do to learning")
        out.append(figure_item(curves, "Validation accuracy", "validation accuracy per epoch per variant",
                               "10% is chance level for ten digits."))
    return out


# ---------------------------------------------------------------------------------------------
# transfer: scratch / frozen / fine-tune per backend, plus time
# ---------------------------------------------------------------------------------------------

def transfer_figures(records: list[dict], title: str) -> list[dict]:
    targets = [r for r in records if not (r.get("study") or {}).get("saves_weights")]
    names = labels(targets)
    with mpl.rc_context(report_style()):
        curves = _curves_per_backend(targets, names, [("val_accuracy", "validation accuracy", "percent")],
                                     "Learning the new task")
        out = [figure_item(curves, "Accuracy on the new task, epoch by epoch", "validation accuracy per epoch "
                           "for each way of starting, per backend",
                           "One panel per backend; one colour per way of starting (the same in every panel).")]
        out.append(_accuracy_and_time(targets, names, "Final accuracy and time per step",
                                      "Test accuracy on the new task after the last epoch, and the median time of "
                                      "one train step (frozen layers need no gradients); the training time of each "
                                      "cell, compilation included, is in the table.", per_step=True))
    return out


FIGURES = {
    "sweep": sweep_figures,
    "regularization": regularization_figures,
    "architectures": architecture_figures,
    "vanishing_gradients": vanishing_figures,
    "transfer": transfer_figures,
}


def study_figures(kind: str, records: list[dict], title: str) -> list[dict]:
    """The figures of one study run (empty when no cell finished)."""
    ok = [r for r in records if is_ok(r)]
    if not ok:
        return []
    return FIGURES.get(kind, sweep_figures)(records, title)


__all__ = ["FIGURES", "study_figures", "variant_colors"]
