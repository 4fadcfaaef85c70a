"""The plugin manager: loads every plugin from the ``fwbench`` entry-point group, built-ins included."""
from __future__ import annotations

import functools
import os

import pluggy

from . import hookspecs
from .registry import Registry

ENTRY_POINT_GROUP = "fwbench"
#: Comma-separated plugin names (entry-point names) to skip, e.g. ``FWBENCH_BLOCK_PLUGINS=jax``.
BLOCK_ENV = "FWBENCH_BLOCK_PLUGINS"


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("fwbench")
    pm.add_hookspecs(hookspecs)
    for name in filter(None, os.environ.get(BLOCK_ENV, "").split(",")):
        pm.set_blocked(name.strip())
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Ask every plugin to register; each hook runs with ``registry.current_plugin`` set for errors."""
    pm = pm or get_plugin_manager()
    registry = Registry()
    for hook_name in ("fwbench_register_backends", "fwbench_register_tasks",
                      "fwbench_register_datasets", "fwbench_register_executors"):
        hook = getattr(pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order = load order
            registry.current_plugin = pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=registry)
    registry.current_plugin = "?"
    return registry


@functools.cache
def get_registry() -> Registry:
    return build_registry()
