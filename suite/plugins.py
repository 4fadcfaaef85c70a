"""The plugin manager: loads every plugin from the ``fwbench`` entry-point group, built-ins included.

A plugin that fails to import or to register is reported (``bench list`` shows why) instead of
taking the whole command down with it.
"""
from __future__ import annotations

import functools
import os
import warnings
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .registry import Registry

ENTRY_POINT_GROUP = "fwbench"
#: Comma-separated plugin names (entry-point names) to skip, e.g. ``FWBENCH_BLOCK_PLUGINS=jax``.
BLOCK_ENV = "FWBENCH_BLOCK_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or failed while registering."""


#: plugin name -> one-line reason, for plugins that could not be loaded
BROKEN_PLUGINS: dict[str, str] = {}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("fwbench")
    pm.add_hookspecs(hookspecs)
    for name in filter(None, os.environ.get(BLOCK_ENV, "").split(",")):
        pm.set_blocked(name.strip())
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the CLI
            BROKEN_PLUGINS[ep.name] = f"cannot load {ep.value!r}: {_describe(exc)}"
            warnings.warn(f"fwbench plugin {ep.name!r} {BROKEN_PLUGINS[ep.name]}", PluginWarning, stacklevel=2)
    pm.check_pending()
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Ask every plugin to register; each hook runs with ``registry.current_plugin`` set for errors."""
    pm = pm or get_plugin_manager()
    registry = Registry()
    for hook_name in ("fwbench_register_backends", "fwbench_register_tasks", "fwbench_register_studies",
                      "fwbench_register_datasets", "fwbench_register_executors"):
        hook = getattr(pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order = load order
            name = pm.get_name(impl.plugin) or repr(impl.plugin)
            registry.current_plugin = name
            try:
                impl.function(register=registry)
            except Exception as exc:  # noqa: BLE001
                BROKEN_PLUGINS[name] = f"failed in {hook_name}: {_describe(exc)}"
                warnings.warn(f"fwbench plugin {name!r} {BROKEN_PLUGINS[name]}", PluginWarning, stacklevel=2)
    registry.current_plugin = "?"
    return registry


@functools.cache
def get_registry() -> Registry:
    return build_registry()
