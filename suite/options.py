"""Declared backend options: what a backend's ``[backend]`` table (or ``--set backend.KEY=…``) may hold.

A backend lists its options as a tuple of `Option` in ``Backend.declared_options``; the core checks
every ``[backend]`` table against them when a run is planned, before any cell starts:

* a key that no selected backend declares → exit 2 with "did you mean …";
* a value outside an option's choices (or of the wrong type) → exit 2 naming the file or flag, the
  key and the accepted values.

A key that another backend in the run declares is not an error for a backend that lacks it: a grid
such as ``-b numpy,torch --set backend.compile=true,false`` gives torch two cells and numpy one
(`applicable_overrides`). ``bench list backends --options`` prints every declaration.

A trainer reads the parsed values with `option_values` instead of parsing ``task.backend`` itself.

Example (a backend's module)::

    from fwbench.options import Option

    class MyBackend(Backend):
        declared_options = (
            Option("compile", default=False, choices=(False, True),
                   help="wrap the train step in my_framework.compile"),
            Option("sleep", kind=float, default=0.0, help="seconds to sleep per step (tests)"),
        )
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import SpecError

#: ``--set backend.engine=…`` is understood by every backend: a raw backend runs on its own engine
#: only (`fwbench.frontends.runs_on_engine`), a frontend declares the engines it has.
ENGINE_KEY = "engine"


@dataclass(frozen=True)
class Option:
    """One option of a backend's ``[backend]`` table.

    Attributes:
        name: the key, e.g. ``"compile"`` (``--set backend.compile=…``).
        default: the value a cell gets when the key is absent.
        help: one line for ``bench list backends --options``.
        choices: the accepted values (strings compared case-insensitively); empty = any value of ``kind``.
        kind: the type of a free value (``float``, ``int``, ``str``, ``bool``); ignored when ``choices``
            is given.
    """

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    kind: type | None = None

    def accepted(self) -> str:
        """The accepted values, as a user writes them in TOML."""
        if self.choices:
            return ", ".join(_toml(c) for c in self.choices)
        return f"any {getattr(self.kind or type(self.default), '__name__', 'value')}"

    def parse(self, value: Any, where: str, backend: str) -> Any:
        """``value`` as this option holds it; raises `SpecError` naming ``where``, the key and the choices."""
        if self.choices:
            for choice in self.choices:
                if _same(value, choice):
                    return choice
            raise SpecError(where, f"backend.{self.name}",
                            f"{backend} does not accept {self.name} = {_toml(value)}; expected one of: "
                            f"{self.accepted()}")
        kind = self.kind or type(self.default)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        raise SpecError(where, f"backend.{self.name}",
                        f"{backend} takes {self.name} as {self.accepted()}, got {_toml(value)}")

    def as_dict(self) -> dict[str, Any]:
        """For ``bench list backends --options --json``."""
        kind = self.kind or type(self.default)
        return {"name": self.name, "type": getattr(kind, "__name__", str(kind)), "default": self.default,
                "choices": list(self.choices), "help": self.help}


def _same(value: Any, choice: Any) -> bool:
    if isinstance(choice, bool) or isinstance(value, bool):
        return value is choice
    if isinstance(choice, str) and isinstance(value, str):
        return value.lower() == choice.lower()
    return type(value) is type(choice) and value == choice


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def declared(backend) -> dict[str, Option]:
    """``{name: Option}`` of a backend (``declared_options``; none declared = no options)."""
    return {o.name: o for o in getattr(backend, "declared_options", ()) or ()}


def option_values(options: Iterable[Option], table: dict[str, Any] | None, where: str = "<spec>",
                  owner: str = "this backend") -> dict[str, Any]:
    """What a trainer (or an ``Ops``) reads: ``options``' values in ``table``, parsed, over the defaults.

    Keys ``options`` does not declare are ignored here: they belong to another backend of the run,
    and an unknown key was refused when the run was planned (`resolve_options`). A backend keeps
    its ``declared_options`` in a module without framework imports so its trainer can read them::

        values = option_values(OPTIONS, request.task.backend, request.task.source, "mybackend")
        if values["compile"]: ...

    Raises:
        SpecError: a value an option refuses (naming ``where``, the key and the accepted values).
    """
    table = table or {}
    return {o.name: o.parse(table[o.name], where, owner) if o.name in table else o.default for o in options}


def resolve_options(backend, table: dict[str, Any], where: str = "<spec>", *,
                    others: Iterable[Any] = ()) -> dict[str, Any]:
    """Check ``table`` (a task's ``[backend]`` table) against ``backend``'s declarations.

    Args:
        backend: a `fwbench.backend.Backend`.
        table: ``{key: value}`` as read from the spec and ``--set backend.*``.
        where: the file or flag the table came from (named in errors).
        others: the other backends of the run; a key one of them declares is not an error here
            (it is left out of the result).

    Returns:
        The declared options of ``backend``: the given values, parsed, over the defaults.

    Raises:
        SpecError: an unknown key (with the closest known ones) or a value the option refuses.
    """
    options = declared(backend)
    known_elsewhere = {name for other in others for name in declared(other)}
    for key in table:
        if key not in options and key != ENGINE_KEY and key not in known_elsewhere:
            raise SpecError(where, f"backend.{key}", _unknown_key(backend, key, set(options) | known_elsewhere))
    return option_values(options.values(), table, where, backend.name)


def _unknown_key(backend, key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if not known:
        return (f"unknown option {key!r}: {backend.name} takes no [backend] options; {hint}drop it "
                "(see `bench list backends --options`)")
    return (f"unknown option {key!r} for {backend.name}; {hint}known: {', '.join(sorted(known))} "
            "(see `bench list backends --options`)")


def applicable_overrides(backend, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` without the ``backend.*`` keys ``backend`` does not declare (they belong to
    another backend of the grid); ``backend.engine`` is kept (the frontend grid reads it)."""
    options = declared(backend)
    return {k: v for k, v in overrides.items()
            if not k.startswith("backend.") or k[len("backend."):] in options
            or k == f"backend.{ENGINE_KEY}"}
