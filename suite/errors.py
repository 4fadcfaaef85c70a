"""The error hierarchy. Every user-facing error is one line that names what was received and the fix.

The CLI turns `UsageError` (and its children) into that one line on stderr and exit code 2.
"""
from __future__ import annotations


class FwbenchError(Exception):
    """Base of every error fwbench raises on purpose."""


class UsageError(FwbenchError):
    """Bad input from the user: a flag, a spec file, an override. CLI exit code 2."""


class SpecError(UsageError):
    """A task spec is invalid. The message names the file, the key and the fix."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        where = f"{source} [{key}]" if key else source
        super().__init__(f"{where}: {message}")


class UnknownNameError(UsageError):
    """A name (backend, task, dataset, layer...) that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...], hint: str = ""):
        self.kind, self.name = kind, name
        known_text = ", ".join(sorted(known)) or "(none registered)"
        extra = f"; {hint}" if hint else ""
        super().__init__(f"unknown {kind} {name!r}; expected one of: {known_text}{extra}")


class DatasetError(UsageError):
    """A dataset cannot be loaded (offline with no cache, checksum mismatch on every mirror...)."""


class BackendUnavailable(UsageError):
    """A backend whose framework is not installed (or a device that is not visible)."""


class DeviceError(UsageError):
    """A device was asked for that this backend cannot see."""


class WeightsError(FwbenchError, KeyError, ValueError):
    """Canonical weights that do not match the model's parameter table (`fwbench.model.check_weights`):
    a missing or unknown name, or a wrong shape. One type for every backend and every caller; it is a
    `KeyError` and a `ValueError` too, as the backends' own checks raised before."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
