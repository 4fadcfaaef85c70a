"""How a comparison (`fwbench.gate.compare.Comparison`) is shown: the terminal table, the Markdown of a
pull-request comment / job summary, the headline and the list of failing rows."""
from __future__ import annotations

from .verdicts import (
    ENV_CHANGED,
    FAILED,
    FASTER,
    IMPROVED,
    INCONCLUSIVE,
    NO_EVIDENCE,
    NOT_COMPARABLE,
    REGRESSED,
    SLOWER,
    UNCHANGED,
)

VERDICT_STYLE = {FASTER: "bold green", IMPROVED: "bold green", SLOWER: "bold red", REGRESSED: "bold red",
                 FAILED: "bold red", UNCHANGED: "dim", INCONCLUSIVE: "yellow", NOT_COMPARABLE: "bold red",
                 NO_EVIDENCE: "bold red", ENV_CHANGED: "bold red"}
VERDICT_MARK = {FASTER: "🟢", IMPROVED: "🟢", SLOWER: "🔴", REGRESSED: "🔴", FAILED: "🔴", UNCHANGED: "⚪",
                INCONCLUSIVE: "🟡", NOT_COMPARABLE: "⚠️", NO_EVIDENCE: "⚠️", ENV_CHANGED: "⚠️"}
BETTER_TEXT = {"higher": "↑ higher", "lower": "↓ lower", "": ""}
COLUMNS = ("cell", "metric", "better", "base", "new", "change [CI, level]", "p", "repeats", "verdict")


def _change_text(change: float | None) -> str:
    return "—" if change is None else f"{change:+.1%}"


def _bound(change: float) -> str:
    """An interval's end as a change; beyond +999% (few repeats at a small level) just ``>+999%``."""
    return ">+999%" if change > 9.99 else f"{change:+.1%}"


def ratio_text(row) -> str:
    """``-4.1% [-6.0%, -2.2%] 99.2%``: the change NEW/BASE - 1, its interval and the interval's level."""
    text = _change_text(row.change)
    if row.ci is not None and row.change is not None:
        text += f" [{_bound(row.ci[0] - 1)}, {_bound(row.ci[1] - 1)}]"
        if row.level is not None:
            text += f" {row.level * 100:.4g}%"
    return text


def _p_text(p: float | None) -> str:
    return "—" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def _n_text(row) -> str:
    return "—" if row.repeats is None else f"{row.repeats[0]}/{row.repeats[1]}"


def _cells(r) -> list[str]:
    return [r.cell, r.metric, BETTER_TEXT[r.better], r.base, r.new, ratio_text(r), _p_text(r.p_value), _n_text(r)]


def rich_table(result, title: str = "bench compare: BASE → NEW"):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", header_style="bold")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("cell", "metric", "better", "verdict") else "right",
                         overflow="fold")
    previous = None
    for r in result.rows:
        if previous is not None and r.cell != previous:
            table.add_section()
        verdict = Text(r.verdict, style=VERDICT_STYLE[r.verdict])
        if r.reason:
            verdict.append(f" ({r.reason})", style="dim")
        plain = _cells(r)
        plain[0] = r.cell if r.cell != previous else ""
        table.add_row(*map(Text, plain), verdict)  # Text: a "[k=v]" in a label is not markup
        previous = r.cell
    return table


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def headline(result, fail_on: str = "slower") -> str:
    failing = result.failing(fail_on)
    if result.regressed:
        return "❌ regression"
    if any(r.verdict in (NO_EVIDENCE, NOT_COMPARABLE) for r in failing):
        return "❌ no evidence"
    if any(r.verdict == ENV_CHANGED for r in failing):
        return "❌ settings differ"
    if failing:
        return "❌ inconclusive"
    return "✅ no regression" + (" (some rows inconclusive)" if result.inconclusive else "")


def markdown(result, fail_on: str = "slower", title: str = "fwbench compare") -> str:
    lines = [f"### {title}: {headline(result, fail_on)}", "", result.summary() + ".", "",
             "| " + " | ".join(COLUMNS) + " |", "|:--|:--|:--|--:|--:|--:|--:|--:|:--|"]
    for r in result.rows:
        verdict = f"{VERDICT_MARK[r.verdict]} {r.verdict}" + (f" ({r.reason})" if r.reason else "")
        lines.append("| " + " | ".join(_md(c) for c in [*_cells(r), verdict]) + " |")
    lines += [f"- {_md(n)}" for n in result.notes]
    if result.tuned:
        lines += ["", "**As written / at its best** (`bench tune`):", ""] + [f"- {_md(t)}" for t in result.tuned]
    return "\n".join(lines) + "\n"


def print_result(result, fmt: str, fail_on: str, title: str = "bench compare: BASE → NEW") -> None:
    import sys

    from rich.text import Text

    from ..run.display import make_console

    if fmt == "md":
        sys.stdout.write(markdown(result, fail_on))
        return
    console = make_console()
    console.print(rich_table(result, title))
    for note in result.notes:
        console.print(Text(note, style="dim"))
    if result.tuned:
        console.print(Text("as written / at its best (bench tune):", style="bold"))
        for line in result.tuned:
            console.print(Text(f"  {line}"))
    failing = result.failing(fail_on)
    console.print(Text((headline(result, fail_on).split(" ", 1)[1] + ": ") if failing else "no regression: ",
                       style="bold red" if failing else "green") + Text(result.summary()))
    for row in failing:
        console.print(Text(f"  {row.verdict}: {row.cell} · {row.metric}" + (f" ({row.reason})" if row.reason else ""),
                           style="red"))
