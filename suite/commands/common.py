"""What every ``bench`` command module shares: the parser class, the argument types, the exit codes."""
from __future__ import annotations

import argparse

from ..errors import UsageError

EXIT_OK, EXIT_CELL_FAILED, EXIT_USAGE = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with the fix) instead of usage + message."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def csv_list(text: str) -> list[str]:
    """``a, b,,c`` -> ``["a", "b", "c"]`` (a comma-separated flag such as ``--backend``)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_int(text: str) -> int:
    """An integer >= 1 (``--threads``, ``--repeat``...), else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``--timeout``), else argparse's one-line error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):  # nan and inf too
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def console():
    """The terminal console commands print their tables to (`fwbench.run.display.make_console`)."""
    from ..run.display import make_console

    return make_console()
