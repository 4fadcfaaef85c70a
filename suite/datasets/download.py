"""Verified download of one file from an ordered list of mirrors (standard library + rich).

A file is streamed into a temporary ``.part`` file inside the target folder while it is hashed,
then its size and sha256 are checked and it is renamed into place with `os.replace` (atomic), so
the cache never holds a half-written or unverified file. A wrong size or checksum counts as a
failed mirror, exactly like an HTTP error: some hosts answer a missing file with an HTML page and
status 200 (the original MNIST host does).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from ..errors import DatasetError
from ..version import __version__

#: ``FWBENCH_MIRRORS_<NAME>`` (comma- or space-separated base URLs) replaces a dataset's mirrors.
MIRRORS_ENV_PREFIX = "FWBENCH_MIRRORS_"
#: Named by every "cannot get the data" error: real data that ships inside installed packages.
OFFLINE_ALTERNATIVES = (
    "use real data that ships in installed packages: --dataset mnist_5k or --dataset digits "
    "(or --dataset synthetic to measure throughput only)"
)
USER_AGENT = f"fwbench/{__version__} (dataset download; Python-urllib)"
DEFAULT_TIMEOUT = 30.0  # seconds, for the connection and for each read
CHUNK_BYTES = 1 << 16
_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name (on the mirrors and in the cache), size and sha256.

    ``md5`` is the checksum upstream publishes, kept for reference; ``sha256`` is what is checked.
    """

    name: str
    size: int
    sha256: str
    md5: str = ""


class MirrorFailed(Exception):
    """One mirror did not deliver the right file; the message is a short reason."""


def mirrors_env_var(dataset: str) -> str:
    """``FWBENCH_MIRRORS_<NAME>`` for a dataset name, e.g. ``FWBENCH_MIRRORS_FASHION_MNIST``."""
    return MIRRORS_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", dataset.upper())


def resolve_mirrors(dataset: str, defaults: Sequence[str]) -> tuple[str, ...]:
    """The mirrors to try, in order: ``$FWBENCH_MIRRORS_<NAME>`` if set, else ``defaults``.

    Every base URL ends with ``/``; a file's URL is the base URL followed by the file name.
    """
    raw = os.environ.get(mirrors_env_var(dataset), "")
    bases = [m for m in re.split(r"[,\s]+", raw) if m] or list(defaults)
    return tuple(m if m.endswith("/") else m + "/" for m in bases)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(file: RemoteFile, mirrors: Sequence[str], folder: Path, *, dataset: str,
             progress: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download ``file`` into ``folder`` from the first mirror that serves it intact.

    Args:
        file: name, size and sha256 of the file.
        mirrors: base URLs (ending in ``/``) tried in order; http, https and file URLs.
        folder: the cache folder; created if needed. The result is ``folder / file.name``.
        dataset: the dataset's name, for messages.
        progress: show a progress bar on stderr when it is a terminal (a one-line note otherwise).
        timeout: seconds allowed for connecting and for each read.

    Raises:
        DatasetError: every mirror failed; one line naming the file, each mirror's reason, the
            folder where the file can be put by hand and the offline alternatives.
    """
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        try:
            _download_from(base + file.name, file, folder, progress=progress, timeout=timeout)
            return folder / file.name
        except MirrorFailed as exc:
            failures.append(f"{base} ({exc})")
    tried = "; ".join(failures) or "no mirrors configured"
    raise DatasetError(
        f"could not download {file.name} for dataset '{dataset}': {tried}; "
        f"put the file ({file.size:,} bytes, sha256 {file.sha256}) in {folder} by hand "
        f"or set {mirrors_env_var(dataset)} to other mirrors, or {OFFLINE_ALTERNATIVES}"
    )


def _download_from(url: str, file: RemoteFile, folder: Path, *, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``folder / file.name`` or raise `MirrorFailed` (no file left behind)."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise MirrorFailed(f"unsupported URL scheme {scheme!r}, expected http, https or file")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received = _stream(url, file, out, progress=progress, timeout=timeout)
        if received != file.size:
            raise MirrorFailed(f"got {received:,} bytes, expected {file.size:,}")
        if digest != file.sha256:
            raise MirrorFailed("sha256 mismatch")
        os.replace(tmp, folder / file.name)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, file: RemoteFile, out: BinaryIO, *, progress: bool,
            timeout: float) -> tuple[str, int]:
    """Copy the response body to ``out``; return (sha256 hex, bytes received)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind = response.headers.get("Content-Type", "") or ""
            of_kind = f" of {kind.split(';')[0]}" if "html" in kind or "text" in kind else ""
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) != file.size:
                raise MirrorFailed(f"serves {int(length):,} bytes{of_kind}, expected {file.size:,}")
            with _progress(progress, file, url) as advance:
                while chunk := response.read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > file.size:
                        raise MirrorFailed(f"serves more than {file.size:,} bytes{of_kind}")
                    digest.update(chunk)
                    out.write(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise MirrorFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise MirrorFailed(_short_reason(exc.reason, timeout)) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, truncated bodies
        raise MirrorFailed(_short_reason(exc, timeout)) from None
    return digest.hexdigest(), received


def _short_reason(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed after {len(reason.partial):,} bytes"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = str(reason) or type(reason).__name__
    return text if len(text) <= 80 else text[:77] + "..."


@contextmanager
def _progress(enabled: bool, file: RemoteFile, url: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``: a rich bar on a terminal, a one-line note on other streams."""
    if not enabled:
        yield lambda n: None
        return
    if not sys.stderr.isatty():
        print(f"fwbench: downloading {url} ({file.size:,} bytes)", file=sys.stderr, flush=True)
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"{file.name} from {urlsplit(url).netloc or url}", total=file.size)
        yield lambda n: bar.advance(task, n)
