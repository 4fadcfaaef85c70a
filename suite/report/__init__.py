"""The comparative report: one self-contained HTML page (or Markdown, CSV, Parquet) from result records.

    from fwbench.report import write_report
    write_report(records, "report.html")            # records: dicts as `fwbench.records.results.load_records` gives

The HTML page has inline CSS, figures as base64 PNG ``data:`` URIs and the records as JSON in a
``<script type="application/json" id="fwbench-data">``; it opens from disk with no network.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UsageError

FORMATS = ("html", "md", "csv", "parquet")


def load_for_report(paths: Iterable[str | Path] | str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records under ``paths`` and the messages of the files that were skipped (corrupt, truncated...)."""
    from ..records.results import load_records

    skipped: list[str] = []
    records = load_records(paths, skipped)
    return records, skipped


def results_frame(records: list[dict[str, Any]]):
    """One row per record, as `fwbench.records.results.load_results` gives (see `fwbench.records.results.flatten`)."""
    import pandas as pd

    from ..records.results import flatten

    return pd.DataFrame([flatten(r) for r in records])


def _to_parquet(frame, path: Path) -> None:
    """Parquet wants one type per column: columns that mix types are written as text."""
    import pandas as pd

    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            present = [v for v in frame[column] if not pd.isna(v)]
            kinds = {type(v) for v in present}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
                frame[column] = [None if pd.isna(v) else str(v) for v in frame[column]]
    frame.to_parquet(path, index=False)


def render(records: list[dict[str, Any]], fmt: str = "html", load_warnings: Iterable[str] = ()) -> str:
    """The report as text (``html`` or ``md``)."""
    from .cells import sort_records

    records = sort_records(records)
    if fmt == "html":
        from .html import render_html

        return render_html(records, list(load_warnings))
    if fmt == "md":
        from .tables import markdown_summary

        return markdown_summary(records, list(load_warnings))
    raise UsageError(f"render: format {fmt!r} is not text; expected html or md")


def write_report(records: Iterable[dict[str, Any]], path: str | Path, fmt: str | None = "html",
                 load_warnings: Iterable[str] = ()) -> Path:
    """Write the report of ``records`` to ``path`` as ``fmt`` (html, md, csv or parquet).

    Args:
        records: result records (dicts of the schema in `fwbench.records.results`).
        path: output file; its folder is created.
        fmt: html (default), md (summary table + warnings), csv or parquet (the flattened table);
            None picks it from the file suffix.
        load_warnings: messages about skipped input files, listed in the report's warnings.
    Returns:
        The path written.
    """
    path = Path(path)
    if fmt is None:
        fmt = {".md": "md", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower(), "html")
    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    records = list(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("csv", "parquet"):
        frame = results_frame(records)
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            _to_parquet(frame, path)
        return path
    text = render(records, fmt, load_warnings)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["FORMATS", "load_for_report", "render", "results_frame", "write_report"]
