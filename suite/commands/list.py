"""``bench list``: backends, tasks, datasets or studies, as a table or ``--json``."""
from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from .common import EXIT_OK, console

#: The columns of each listing (the table's header when there are no rows).
LIST_COLUMNS = {"backends": ("backend", "frontend", "engines", "status", "description"),
                "tasks": ("task", "dataset", "description", "file"),
                "studies": ("study", "kind", "cells", "title", "file"),
                "datasets": ("dataset", "shape", "where", "description")}


def add_parser(subparsers) -> None:
    """Register ``bench list``."""
    lst = subparsers.add_parser("list", help="list backends, tasks, datasets or studies (--json for scripts)")
    lst.add_argument("what", nargs="?", choices=["backends", "tasks", "datasets", "studies"], default="backends")
    lst.add_argument("--json", action="store_true", help="print the rows as JSON (for scripts)")
    lst.add_argument("--options", action="store_true",
                     help="with `backends`: one row per declared [backend] option (name, type, default, choices)")
    lst.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the rows of ``bench list WHAT`` (coloured availability for backends)."""
    from ..plugins import get_registry

    if args.options and args.what != "backends":
        raise UsageError(f"--options lists backend options; use `bench list backends --options`, not {args.what}")
    rows = option_rows(get_registry()) if args.options else list_rows(args.what, get_registry())
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    from rich.table import Table

    table = Table(header_style="bold")
    for column in rows[0] if rows else LIST_COLUMNS[args.what]:
        table.add_column(column)
    for row in rows:
        cells = [str(v) for v in row.values()]
        if args.what == "backends" and not args.options:
            colour = "green" if row["status"] == "available" else "red" if row["status"].startswith("broken") \
                else "yellow"
            cells[3] = f"[{colour}]{cells[3]}[/]"
        table.add_row(*cells)
    console().print(table)
    return EXIT_OK


def option_rows(registry) -> list[dict[str, str]]:
    """``bench list backends --options``: one row per declared option of every backend."""
    from ..options import declared

    rows = []
    for name, backend in sorted(registry.backends.items()):
        for option in declared(backend).values():
            row = option.as_dict()
            rows.append({"backend": name, "option": row["name"], "type": row["type"],
                         "default": json.dumps(row["default"]),
                         "choices": ", ".join(json.dumps(c) for c in row["choices"]) or f"any {row['type']}",
                         "help": row["help"]})
        if not declared(backend):
            rows.append({"backend": name, "option": "(none)", "type": "", "default": "", "choices": "",
                         "help": "takes no backend options"})
    return rows


def list_rows(what: str, registry) -> list[dict[str, str]]:
    """The rows of ``bench list WHAT`` (column name -> text), as printed or as ``--json``."""
    if what == "backends":
        from ..frontends import engines_text, frontend_name
        from ..plugins import BROKEN_PLUGINS

        rows = [{"backend": name, "frontend": frontend_name(backend), "engines": engines_text(backend),
                 "status": str(backend.availability()), "description": backend.description}
                for name, backend in sorted(registry.backends.items())]
        return rows + [{"backend": f"(plugin {name})", "frontend": "", "engines": "",
                        "status": f"broken: {reason}", "description": "reinstall or remove the package"}
                       for name, reason in sorted(BROKEN_PLUGINS.items())]
    if what == "tasks":
        from ..spec import read_toml

        rows = []
        for name, path in sorted(registry.task_files.items()):
            raw = read_toml(path)
            family = (raw.get("task") or {}).get("family", "train")
            dataset = raw.get("dataset", {}).get("name", "?") if family == "train" else f"— ({family})"
            rows.append({"task": name, "dataset": str(dataset),
                         "description": str(raw.get("task", {}).get("description", "")), "file": str(path)})
        return rows
    if what == "studies":
        from ..studies.spec import list_rows as study_rows

        return [dict(zip(LIST_COLUMNS["studies"], row, strict=True)) for row in study_rows(registry)]
    from ..datasets.base import default_data_dir

    data_dir = default_data_dir()
    return [{"dataset": name, "shape": "x".join(map(str, ds.input_shape)),
             "where": "ships in a package (offline)" if ds.offline else (
                 "cached" if ds.is_cached(data_dir) else f"download: bench data fetch {name}"),
             "description": ds.description}
            for name, ds in sorted(registry.datasets.items())]
