"""``bench compare BASE NEW``: the flags (the judging ones shared with ``bench ab``); `fwbench.gate.compare` judges."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..gate.compare import FAIL_ON, METRIC_KEYS


def add_parser(subparsers) -> None:
    """Register ``bench compare``."""
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


def add_compare_options(parser: argparse.ArgumentParser) -> None:
    """The judging options shared by `bench compare` and `bench ab`."""
    parser.add_argument("--threshold", default="5%",
                        help="smallest relative change that counts: a percentage (5%%) or a fraction (0.05); "
                             "a change is called when its interval clears half of it (default: 5%%)")
    parser.add_argument("--alpha", default="0.01",
                        help="family-wise significance level over all rows (Holm); each row's interval is at "
                             "its Holm level, labelled (default: 0.01)")
    parser.add_argument("--format", choices=["text", "md"], default="text",
                        help="text (a table for the terminal) or md (for a pull-request comment / job summary)")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME",
                        help="compare only this metric (repeatable): " + ", ".join(METRIC_KEYS))
    parser.add_argument("--fail-on", choices=FAIL_ON, default="slower",
                        help="slower (default): exit 1 on a slower/regressed metric, a failed cell or a row "
                             "that cannot be judged; inconclusive: also when a metric is inconclusive")
    parser.add_argument("--allow-no-evidence", action="store_true",
                        help="do not fail on rows that cannot be judged (too few repeats, a missing metric, a "
                             "cell broken in BASE or new in NEW); for interactive use, not for a gate")
    parser.add_argument("--allow-env-change", action="store_true",
                        help="do not fail when paired cells ran with a different batch size, dtype, threads, "
                             "CPU model, device or parameter count")


def cmd_compare(args: argparse.Namespace) -> int:
    """Judge NEW against BASE (`fwbench.gate.compare`); exit 1 on a failing row."""
    from ..gate.compare import cmd_compare as compare

    return compare(args)
