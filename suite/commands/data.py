"""``bench data fetch NAME``: download and verify a dataset into the cache."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, ArgumentParser, console


def add_parser(subparsers) -> None:
    """Register ``bench data`` and its actions."""
    data = subparsers.add_parser("data", help="manage datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=ArgumentParser, required=True)
    fetch = data_sub.add_parser("fetch", help="download and verify a dataset into the cache")
    fetch.add_argument("name", help="dataset name (see `bench list datasets`)")
    fetch.add_argument("--data-dir", type=Path, default=None, help="cache folder")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.set_defaults(handler=cmd_data_fetch)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    """Fetch one dataset (nothing to do for one that ships in a package)."""
    from ..datasets.base import default_data_dir
    from ..plugins import get_registry

    dataset = get_registry().get_dataset(args.name)
    data_dir = args.data_dir or default_data_dir()
    if dataset.offline:
        console().print(f"{dataset.name} ships inside an installed package; nothing to download.")
        return EXIT_OK
    import inspect

    takes_force = "force" in inspect.signature(dataset.fetch).parameters
    where = dataset.fetch(data_dir, progress=True, **({"force": args.force} if takes_force else {}))
    console().print(f"{dataset.name}: ready in {where}")
    return EXIT_OK
