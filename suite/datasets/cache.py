"""The verified cache folder of one dataset, and its one-line errors (missing, corrupt).

Each dataset folder holds a ``.verified.json`` marker: for every file whose sha256 was checked,
its size, modification time (ns) and sha256. A file whose size and mtime still match the marker
is not hashed again, so `load` stays fast on big files; any change to the file (or a missing or
unreadable marker) means it is hashed once more. Files with no published checksum (the members
extracted from the CIFAR-10 archive) are checked against the sha256 recorded when they were
extracted from the verified archive.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import DatasetError
from . import download
from .download import OFFLINE_ALTERNATIVES

MARKER = ".verified.json"


class VerifiedCache:
    """The files of one dataset folder and what is known about their checksums."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    def _entries(self) -> dict:
        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict) -> None:
        """Atomic rewrite; a read-only cache only costs a re-hash next time, so errors are ignored."""
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".verified.", suffix=".tmp", dir=self.folder)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(tmp, self.marker)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def recorded_sha256(self, name: str) -> str | None:
        entry = self._entries().get(name)
        return entry.get("sha256") if isinstance(entry, dict) else None

    def record(self, name: str, sha256: str) -> None:
        """Remember that ``name`` (as it is now on disk) has this sha256."""
        st = (self.folder / name).stat()
        entries = self._entries()
        entries[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
        self._write(entries)

    def forget(self, name: str) -> None:
        entries = self._entries()
        if entries.pop(name, None) is not None:
            self._write(entries)

    def problem(self, name: str, size: int | None, sha256: str | None = None) -> str | None:
        """Why ``name`` is not a good copy ("missing", a size or sha256 mismatch), or None.

        Args:
            name: file name inside the folder.
            size: expected bytes, or None when unknown.
            sha256: expected checksum; None means "the one recorded at extraction", and a file
                with neither is only checked for its size.
        """
        path = self.folder / name
        try:
            st = path.stat()
        except OSError:
            return "missing"
        if not path.is_file():
            return "missing"
        if size is not None and st.st_size != size:
            return f"{st.st_size:,} bytes, expected {size:,}"
        entry = self._entries().get(name)
        entry = entry if isinstance(entry, dict) else {}
        expected = sha256 or entry.get("sha256")
        if expected is None:
            return None
        if (entry.get("sha256") == expected and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns):
            return None
        if download.sha256_file(path) != expected:
            return "sha256 mismatch"
        self.record(name, expected)
        return None


def missing_error(dataset: str, folder: Path, missing: list[str], download_size: str) -> DatasetError:
    """One line: which files are missing where, how to download them, what works offline."""
    return DatasetError(
        f"dataset '{dataset}' is not downloaded: missing {', '.join(missing)} in {Path(folder).absolute()}; "
        f"run `bench data fetch {dataset}` to download it ({download_size}), or {OFFLINE_ALTERNATIVES}"
    )


def corrupt_error(dataset: str, path: Path, reason: str) -> DatasetError:
    """One line: which cached file is corrupt and how to get a good copy."""
    return DatasetError(
        f"dataset '{dataset}': cached file {Path(path).absolute()} is corrupt ({reason}); delete it or run "
        f"`bench data fetch {dataset} --force` to download it again"
    )
