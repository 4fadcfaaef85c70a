"""``bench report``: write the report (`fwbench.report`) from result records."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError

#: The file suffix of each ``--format``.
SUFFIX = {"html": ".html", "md": ".md", "csv": ".csv", "parquet": ".parquet"}


def add_parser(subparsers) -> None:
    """Register ``bench report``."""
    report = subparsers.add_parser(
        "report", help="write a comparative report (HTML, Markdown, CSV or Parquet) from result records",
        description="Write one self-contained HTML page (inline CSS, embedded figures and data; opens from disk "
                    "with no network), a Markdown summary for CI comments, or the flattened table as CSV/Parquet.")
    report.add_argument("results", nargs="*", type=Path, default=[Path("results")], metavar="RESULTS",
                        help="record files or folders (default: results)")
    report.add_argument("-o", "--output", type=Path, default=None,
                        help="output file (default: report.html, or report.<format>)")
    report.add_argument("--format", choices=list(SUFFIX), default=None,
                        help="html (default), md, csv or parquet; default: from the --output suffix")
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Load the records (warning about unreadable files), write the report, say where."""
    from ..report import load_for_report, write_report

    fmt = args.format
    if fmt is None:
        suffix = args.output.suffix.lower() if args.output else ""
        fmt = {v: k for k, v in SUFFIX.items()}.get(suffix, "html")
    output = args.output or Path("report" + SUFFIX[fmt])
    missing = [p for p in args.results if not p.exists()]
    if missing:
        raise UsageError(f"{str(missing[0])!r}: no such file or folder; pass the results folder of a "
                         "`bench run` (default: results)")
    records, skipped = load_for_report(args.results)
    for message in skipped:
        print(f"bench: warning: {message}", file=sys.stderr)
    if not records:
        where = ", ".join(map(str, args.results))
        raise UsageError(f"no readable fwbench records in {where}; run `bench run --out {args.results[0]}` first")
    path = write_report(records, output, fmt, load_warnings=skipped)
    extra = f", {len(skipped)} file(s) skipped" if skipped else ""
    print(f"report: {path} ({len(records)} record(s){extra})")
    return 0
