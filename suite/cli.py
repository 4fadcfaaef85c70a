"""The ``bench`` command. Bad input → one line on stderr naming the fix, exit code 2.

`build_parser` assembles the commands of `fwbench.commands` (one module per command) and the
plugins' (`fwbench_register_commands`); `main` runs the chosen one and maps errors to exit codes.
"""
from __future__ import annotations

import os
import sys

from .commands.common import (  # noqa: F401  (re-exported: the parser and argument types lived here)
    EXIT_CELL_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ArgumentParser,
    csv_list,
    positive_float,
    positive_int,
)
from .errors import FwbenchError, UsageError
from .version import __version__


def build_parser() -> ArgumentParser:
    """The ``bench`` parser: the core commands, then those plugins register (the built-ins' too)."""
    from .commands import check, data, doctor, info, run
    from .commands import list as list_command
    from .plugins import get_plugin_manager

    parser = ArgumentParser(prog="bench", description="Benchmark deep-learning frameworks on the same tasks.",
                            epilog="Run `bench COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"fwbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for command in (run, list_command, info, data, check, doctor):
        command.add_parser(sub)
    get_plugin_manager().hook.fwbench_register_commands(subparsers=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bench ARGV``; returns the exit code (0 ok, 1 a failed cell or check, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # name the sub-command whose help lists the right flags
            where = f"bench {args.command}" if getattr(args, "command", None) else "bench"
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `{where} --help`)")
        if not getattr(args, "handler", None):
            parser.print_help()
            return EXIT_OK if not argv else EXIT_USAGE
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FwbenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_CELL_FAILED
    except KeyboardInterrupt:
        resumable = args is not None and "resume" in vars(args)  # the commands that write records as they go
        print("bench: interrupted" + ("; finished records are kept (continue with --resume)" if resumable else ""),
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bench list --json | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
