"""fwbench: compare deep-learning frameworks on the same, framework-neutral tasks.

The core (this package) imports no framework; backends live in plugins. The public surface for
plugin authors is `fwbench.backend` (Backend, Trainer, Availability), `fwbench.ops` (microbenchmark
operations), `fwbench.hookspecs` (the hooks) and `fwbench.hookimpl` (the marker); everything else
is internal and may move (see docs/architecture.md).
"""
from __future__ import annotations

from .hookspecs import hookimpl
from .version import __version__

__all__ = ["__version__", "hookimpl"]
