"""The Flax backend's tests run only where flax, jax and optax are installed."""
from __future__ import annotations

import importlib.util

if any(importlib.util.find_spec(m) is None for m in ("flax", "jax", "optax")):
    collect_ignore_glob = ["test_*.py"]
