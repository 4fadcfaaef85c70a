"""CIFAR-10, binary version: safe extraction of the archive and validated parsing of its batches.

Only the binary version is used: the "python version" is pickles, and unpickling downloaded data
runs code. A batch file is 10,000 records of 1 label byte followed by 3,072 pixel bytes (1,024
red, 1,024 green, 1,024 blue, each 32x32 row-major): exactly 30,730,000 bytes.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError

ARCHIVE_DIR = "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META = "batches.meta.txt"
#: Members that are extracted (flattened into the dataset folder) and loaded.
MEMBERS = (*TRAIN_BATCHES, TEST_BATCH, META)
#: Members of the real archive that are allowed but not extracted.
IGNORED_MEMBERS = ("readme.html",)
IMAGE_SHAPE = (3, 32, 32)
PIXEL_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + PIXEL_BYTES
RECORDS_PER_BATCH = 10_000
BATCH_BYTES = RECORDS_PER_BATCH * RECORD_BYTES  # 30,730,000


def read_batch(path: Path, records: int = RECORDS_PER_BATCH,
               num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: images uint8 ``(records, 3, 32, 32)`` and labels int64 ``(records,)``.

    Raises:
        DatasetError: naming the file, when its length is not ``records * 3,073`` bytes or a
            label is out of range.
    """
    path = Path(path)
    size = path.stat().st_size
    if size != records * RECORD_BYTES:
        raise DatasetError(f"{path}: {size:,} bytes, expected {records * RECORD_BYTES:,} "
                           f"({records:,} records of 1 label byte + {PIXEL_BYTES:,} pixel bytes)")
    table = np.fromfile(path, dtype=np.uint8).reshape(records, RECORD_BYTES)
    labels = table[:, 0].astype(np.int64)
    if labels.size and labels.max() >= num_classes:
        raise DatasetError(f"{path}: label {int(labels.max())} out of range, expected 0.."
                           f"{num_classes - 1}")
    images = np.ascontiguousarray(table[:, 1:]).reshape(records, *IMAGE_SHAPE)
    return images, labels


def read_class_names(path: Path, num_classes: int = 10) -> tuple[str, ...]:
    """Class names from ``batches.meta.txt``: one per line, blank lines ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text file of class names ({exc.reason})") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != num_classes:
        raise DatasetError(f"{path}: {len(names)} class names, expected {num_classes}")
    return names


def safe_extract(archive: Path, dest: Path, wanted: tuple[str, ...] = MEMBERS,
                 allowed: tuple[str, ...] = IGNORED_MEMBERS, prefix: str = ARCHIVE_DIR) -> list[Path]:
    """Extract ``prefix/<name>`` for each wanted name into ``dest/<name>`` (flattened).

    Every member must be the directory ``prefix`` or a regular file ``prefix/<name>`` with a name
    in ``wanted`` or ``allowed``; anything else (``../evil``, absolute paths, links, devices,
    unexpected names) rejects the whole archive before it can be written. Extraction also uses
    ``tarfile``'s ``filter="data"``, into a temporary folder inside ``dest`` that is removed
    afterwards; files only reach ``dest`` once every member has been checked.

    Returns:
        The extracted paths, in the order of ``wanted``.

    Raises:
        DatasetError: naming the archive and the offending member, or the missing members.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    expected = {f"{prefix}/{name}" for name in (*wanted, *allowed)}
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        found = set()
        try:
            with tarfile.open(archive, mode="r|gz") as tar:  # one streaming pass
                for member in tar:
                    _check_member(archive, member, expected, prefix)
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in wanted:
                        tar.extract(member, staging, filter="data")
                        found.add(name)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DatasetError(f"{archive}: not a readable .tar.gz archive ({exc})") from None
        missing = [name for name in wanted if name not in found]
        if missing:
            raise DatasetError(f"{archive}: the archive lacks {', '.join(f'{prefix}/{m}' for m in missing)}")
        for name in wanted:
            (staging / prefix / name).replace(dest / name)
        return [dest / name for name in wanted]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_member(archive: Path, member: tarfile.TarInfo, expected: set[str], prefix: str) -> None:
    if member.isdir() and member.name.rstrip("/") == prefix:
        return
    if member.name not in expected:
        raise DatasetError(f"{archive}: unexpected member {member.name!r}; refusing to extract "
                           f"(expected only files {prefix}/<name> with name in "
                           f"{', '.join(sorted(n.rsplit('/', 1)[-1] for n in expected))})")
    if not member.isfile():
        raise DatasetError(f"{archive}: member {member.name!r} is not a regular file "
                           f"(a link or device); refusing to extract")
