"""The Keras backend's tests run only where keras is installed."""
from __future__ import annotations

import importlib.util

if importlib.util.find_spec("keras") is None:
    collect_ignore_glob = ["test_*.py"]
