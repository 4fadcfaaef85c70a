"""Terminal output with rich: live progress of a run and the results table at its end."""
from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..records import record as R
from ..records.record import backend_label

#: Overrides already shown elsewhere in the table (the dataset column) or set by the suite itself.
HIDDEN_OVERRIDES = ("dataset.name", "dataset.shape", "backend.engine")  # the engine is in the label
STATUS_STYLE = {"ok": "green", "failed": "bold red", "timeout": "bold red", "skipped": "yellow"}


def make_console(stderr: bool = False) -> Console:
    """A console that stays wide enough for the results table when output is piped to a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 150)


class RunDisplay:
    """Cells done/left, the running cell and its last progress line; one line per finished cell."""

    def __init__(self, total: int, console: Console | None = None, enabled: bool = True):
        self.console = console or make_console(stderr=True)
        self.enabled = enabled
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[detail]}"),
                                 console=self.console, transient=True, disable=not enabled)
        self.task_id = self.progress.add_task("cells", total=total, detail="")
        self.current = ""

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def started(self, cell) -> None:
        self.current = cell.label
        self.progress.update(self.task_id, description=cell.label, detail="starting")

    def output(self, line: str) -> None:
        if line.startswith("[fwbench] "):
            self.progress.update(self.task_id, detail=line.removeprefix("[fwbench] ")[:60])

    def finished(self, cell, record: dict[str, Any]) -> None:
        self.progress.advance(self.task_id)
        status = record.get("status", "?")
        text = Text.assemble((f"{status:>7} ", STATUS_STYLE.get(status, "")), cell.label)
        if record.get("error"):
            text.append(f" — {record['error']}", style="dim")
        warnings = len(record.get("warnings") or ())
        if warnings and cell.repeats == 1:
            text.append(f" ({warnings} warning(s), listed below the table)", style="yellow")
        elif warnings:  # judged again over all repeats: the table lists what still holds
            text.append(f" ({warnings} note(s) on this repeat, in its record under repeats/)", style="dim")
        self.console.print(text)


def format_value(value, spec: str, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def results_table(records: list[dict[str, Any]], title: str = "Results") -> Table:
    """One row per cell; errors and warnings go in `results_notes` below it (they are long)."""
    table = Table(title=title, header_style="bold", title_justify="left")
    for name in ("backend", "task · dataset · device", "status", "test acc", "params",
                 "samples/s (95% CI) ×repeats", "best window", "step ms", "1st step s", "epochs"):
        table.add_column(name, justify="left" if name in ("backend", "status") or "task" in name else "right",
                         overflow="fold")
    for r in records:
        m = r.get("metrics") or {}
        ci = m.get(R.THROUGHPUT_CI)
        thr = format_value(m.get(R.THROUGHPUT), ",.0f")
        if ci and None not in ci:
            thr += f" ({ci[0]:,.0f}–{ci[1]:,.0f})"
        n = m.get("repeats_n")
        thr += f" ×{n}" if n and n > 1 else (" ×1 (within-run)" if n == 1 and r.get("status") == "ok" else "")
        if m.get("throughput_wide"):
            thr += " ⚠wide"
        step = (m.get(R.STEP_TIME) or {}).get("median")
        overrides = " ".join(f"{k}={v}" for k, v in sorted((r.get("overrides") or {}).items())
                             if k not in HIDDEN_OVERRIDES)
        where = f"{r.get('task', '?')} · {r.get('dataset') or '?'}"
        where += " (synthetic)" if r.get("synthetic_data") else ""
        where += f" · {r.get('device', '?')}"
        if r.get("precision") not in (None, "fp32") and "precision=" not in overrides:
            where += f" · {r['precision']}"  # the policy in force (fwbench.precision)
        where += f" [{overrides}]" if overrides else ""
        status = r.get("status", "?") + (f" ({len(r['warnings'])}⚠)" if r.get("warnings") else "")
        table.add_row(
            Text(backend_label(r)), Text(where), Text(status, style=STATUS_STYLE.get(r.get("status"), "")),
            format_value(m.get(R.TEST_ACCURACY), ".2%"), format_value(r.get("params"), ","), thr,
            format_value(m.get(R.THROUGHPUT_BEST), ",.0f"),
            format_value(step * 1e3 if step else None, ".2f"), format_value(m.get(R.FIRST_STEP), ".3f"),
            format_value(m.get(R.EPOCHS), "d"),
        )
    return table


def results_notes(records: list[dict[str, Any]]) -> list[Text]:
    """Errors and warnings of each cell, one line each, for printing under the table."""
    lines = []
    for r in records:
        label = f"{r.get('backend')} · {r.get('task')}"
        if r.get("error"):
            style = "yellow" if r.get("status") == "skipped" else "red"
            lines.append(Text.assemble((f"{label}: ", "bold"), (r["error"], style)))
        for warning in r.get("warnings") or []:
            lines.append(Text.assemble((f"{label}: ", "bold"), ("⚠ " + warning, "yellow")))
    return lines
