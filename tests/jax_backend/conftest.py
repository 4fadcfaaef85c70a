"""The JAX backend's tests run only where jax and optax are installed."""
from __future__ import annotations

import importlib.util

if importlib.util.find_spec("jax") is None or importlib.util.find_spec("optax") is None:
    collect_ignore_glob = ["test_*.py"]
