"""fwbench: compare deep-learning frameworks on the same, framework-neutral tasks.

The core (this package) imports no framework; backends live in plugins.
"""
from __future__ import annotations

__version__ = "0.1.0"
