"""The built-in studies: every ``*.toml`` file beside this module, registered as a plugin.

A study is data: named cells (a task + overrides) that run through the normal runner and end in a
report section a teacher can show (see `fwbench.studies.spec` for the file format). Run one with
``bench study NAME``; list them with ``bench list studies``.
"""
from __future__ import annotations

from pathlib import Path

from fwbench.hookspecs import hookimpl


@hookimpl
def fwbench_register_studies(register):
    register.study_dir(Path(__file__).parent)
