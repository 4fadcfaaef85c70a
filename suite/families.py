"""Task families: which loader turns a spec's ``[task] family`` into a spec object.

`fwbench.spec.load_task` dispatches through this registry, so the training-spec loader and the
microbenchmark loader (`fwbench.micro.spec`) never import each other. A loader is named as
``"module:function"`` (like an entry point) and imported on first use; a plugin may add a family
with `register`. Every loader has the signature
``loader(raw: dict, source: str, overrides: dict | None, profile: str | None, *, default_name: str)``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TRAIN = "train"
#: The built-in microbenchmark families (`fwbench.micro`).
MICRO = ("conv2d", "dense", "pooling", "batchnorm", "optim_step", "param_scaling")

_LOADERS: dict[str, str | Callable[..., Any]] = {
    TRAIN: "fwbench.spec:task_from_dict",
    **{family: "fwbench.micro.spec:bench_from_dict" for family in MICRO},
}


def families() -> tuple[str, ...]:
    """Every known family name, "train" first."""
    return tuple(_LOADERS)


def register(family: str, loader: str | Callable[..., Any]) -> None:
    """Add a family (``loader`` a callable or ``"module:function"``); a known name is refused."""
    if family in _LOADERS:
        raise ValueError(f"task family {family!r} is already registered")
    _LOADERS[family] = loader


def loader(family: str) -> Callable[..., Any]:
    """The loader of a known ``family`` (imported on first use). Raises KeyError for unknown ones."""
    found = _LOADERS[family]
    if isinstance(found, str):
        module, _, name = found.partition(":")
        found = getattr(importlib.import_module(module), name)
        _LOADERS[family] = found
    return found
