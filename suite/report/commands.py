"""The ``bench report`` and ``bench compare`` commands, registered through `fwbench_register_commands`."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UsageError

SUFFIX = {"html": ".html", "md": ".md", "csv": ".csv", "parquet": ".parquet"}


def add_commands(subparsers) -> None:
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

    from ..gate.compare import add_compare_options

    compare = subparsers.add_parser(
        "compare", help="compare two sets of records; exit 1 on a regression or a failed cell",
        description="Pair the cells of BASE and NEW by (backend, task, device, dataset, overrides) and judge "
                    "each metric over the repeats (one value per process): the ratio NEW/BASE with its interval, "
                    "faster / slower when significant and beyond the threshold, unchanged when the interval lies "
                    "within it, else inconclusive (with the smallest change it could have detected). A cell ok in BASE "
                    "and failed or missing in NEW is a regression; a row that cannot be judged or a pair run on "
                    "other settings fails too (see --allow-no-evidence, --allow-env-change). Holm's correction "
                    "holds --alpha over every row. Exit 1 on a failing row, else 0. See docs/statistics.md.")
    compare.add_argument("base", type=Path, metavar="BASE", help="record file or folder of the baseline")
    compare.add_argument("new", type=Path, metavar="NEW", help="record file or folder to judge")
    add_compare_options(compare)
    compare.set_defaults(handler=cmd_compare)


def cmd_report(args) -> int:
    from . import load_for_report, write_report

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


def cmd_compare(args) -> int:
    from ..gate.compare import cmd_compare as run

    return run(args)
