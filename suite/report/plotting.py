"""Shared plotting machinery of the report: the style, an Agg-drawn `Figure`, PNG data URIs, bars.

No pyplot anywhere: figures are `matplotlib.figure.Figure` objects drawn by the Agg canvas, so
building a report never touches global figure state or a display.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .cells import backend_color

DPI = 110


def report_style() -> dict[str, Any]:
    import seaborn as sns

    style = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)}
    style.update({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"],
                  "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold",
                  "axes.titlesize": 11, "figure.titlesize": 12, "figure.titleweight": "bold",
                  "legend.frameon": False, "svg.fonttype": "none", "axes.edgecolor": ".6"})
    return style


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg canvas; no pyplot, so no global figure state and no display."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_item(fig: Figure, title: str, alt: str, caption: str = "") -> dict[str, str]:
    return {"title": title, "uri": to_data_uri(fig), "alt": alt, "caption": caption,
            "width": int(fig.get_figwidth() * DPI)}


def literal(text: Any) -> str:
    """Text from a record, shown literally by matplotlib (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def wrap_label(text: str, width: int = 18) -> str:
    import textwrap

    return literal("\n".join(textwrap.wrap(str(text), width, break_long_words=True)) or str(text))


def under_width(i: int, n: int) -> float:
    """Extra line width for the i-th of n lines: earlier lines wider, so identical curves stay visible."""
    return min(0.9, 2.7 / max(1, n - 1)) * (n - 1 - i)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def backend_legend(fig: Figure, backends: list[str], extra: list | None = None, *, bottom: bool = False) -> None:
    """One legend for the whole figure: above the panels, or below them when a title sits above."""
    handles = [Patch(facecolor=backend_color(b), label=literal(b)) for b in backends] + (extra or [])
    fig.legend(handles=handles, loc="outside lower center" if bottom else "outside upper center",
               ncols=legend_columns(fig, [h.get_label() for h in handles]))


def legend_columns(fig: Figure, labels: list[str]) -> int:
    """As many legend columns as fit the figure's width (so no label is cut at the edge)."""
    char_in = 0.6 * plt_rc_fontsize() / 72  # an average character's width, in inches
    entry_in = max((len(str(label)) for label in labels), default=1) * char_in + 0.9  # + patch, gaps
    fits = int(fig.get_figwidth() // entry_in)
    return max(1, min(len(labels), 8, fits))


def plt_rc_fontsize() -> float:
    """The legend's font size in points (matplotlib's rc setting)."""
    from matplotlib import font_manager, rcParams

    return font_manager.FontProperties(size=rcParams["legend.fontsize"]).get_size_in_points()


#: A whisker is clipped at this multiple of the tallest bar of its panel (and marked), so that one
#: wide interval never squashes the other bars.
WHISKER_CLIP = 1.5


def grouped_bars(ax, categories: list[str], backends: list[str],
                 values: dict[tuple[str, str], tuple],
                 label_fmt=None) -> None:
    """Bars per category (x) and backend (hue); ``values[(category, backend)] = (value, lo, hi)`` or
    ``(value, lo, hi, note)``: a note (e.g. ``n=2``) is printed on the bar instead of its interval.

    Whiskers above `WHISKER_CLIP` x the tallest bar are cut there and marked with a ▲.
    """
    width = 0.8 / max(1, len(backends))
    x = np.arange(len(categories))
    many = len(categories) * len(backends) > 12
    tallest = max((v[0] for v in values.values()), default=0.0)
    cap = WHISKER_CLIP * tallest if tallest > 0 else None
    clipped_any = False
    for i, b in enumerate(backends):
        xs, ys, errs, notes = [], [], [[], []], []
        for j, c in enumerate(categories):
            if (c, b) not in values:
                continue
            v, lo, hi, *rest = values[(c, b)]
            note = rest[0] if rest else None
            if note:
                lo = hi = None  # an interval that means nothing is not drawn
            if cap is not None and hi is not None and hi > cap:
                hi, clipped_any = cap, True
                ax.text(x[j] - 0.4 + width * (i + 0.5), cap, "▲", ha="center", va="bottom", fontsize=7,
                        color="0.25")
            xs.append(x[j] - 0.4 + width * (i + 0.5))
            ys.append(v)
            notes.append(note)
            errs[0].append(max(0.0, v - lo) if lo is not None else 0.0)
            errs[1].append(max(0.0, hi - v) if hi is not None else 0.0)
        if not xs:
            continue
        has_err = any(errs[0]) or any(errs[1])
        bars = ax.bar(xs, ys, width * 0.92, color=backend_color(b), label=literal(b),
                      yerr=errs if has_err else None, capsize=3 if has_err else 0,
                      error_kw={"elinewidth": 1, "ecolor": "0.25"})
        if label_fmt and not many:
            ax.bar_label(bars, labels=[label_fmt(v) + (f"\n{n}" if n else "") for v, n in zip(ys, notes, strict=True)],
                         fontsize=7.5, padding=2, color="0.25")
        elif any(notes):
            ax.bar_label(bars, labels=[n or "" for n in notes], fontsize=7, padding=2, color="0.25")
    if clipped_any and cap is not None:
        ax.set_ylim(top=cap * 1.08)
        ax.text(0.99, 0.99, "▲ interval clipped", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="0.25")
    ax.set_xticks(x, [wrap_label(c) for c in categories])
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.grid(axis="x", visible=False)
    if len(categories) > 4:
        ax.tick_params(axis="x", labelrotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


def compact(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"

