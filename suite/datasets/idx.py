"""The IDX format of MNIST and Fashion-MNIST (optionally gzipped), parsed and validated in NumPy.

Layout: a big-endian int32 magic (two zero bytes, a data-type byte 0x08 = unsigned byte, the
number of dimensions), one big-endian int32 per dimension, then the row-major data. Images have
magic 2051 (3 dims: N, rows, columns; 16-byte header), labels 2049 (1 dim: N; 8-byte header).
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
UBYTE = 0x08


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc})") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file and check it against its header.

    Args:
        path: the file (``.gz`` is gunzipped).
        magic: `IMAGES_MAGIC` or `LABELS_MAGIC`; it also fixes the number of dimensions.

    Returns:
        uint8 array with the shape the header gives, e.g. ``(N, 28, 28)`` or ``(N,)``.

    Raises:
        DatasetError: naming the file, for a wrong magic or data type, or a length that does
            not match the header (truncated file or trailing bytes).
    """
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    if raw[0:2] != b"\x00\x00" or raw[2] != UBYTE:
        got = int.from_bytes(raw[:4], "big")
        if raw[0:2] == b"\x00\x00":
            raise DatasetError(f"{path}: IDX data type byte 0x{raw[2]:02x}, expected 0x08 "
                               f"(unsigned byte)")
        raise DatasetError(f"{path}: not an IDX file (magic {got} = 0x{got:08x}, "
                           f"expected {magic} = 0x{magic:08x})")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DatasetError(f"{path}: IDX magic {got} ({raw[3]} dims), expected {magic} "
                           f"({magic & 0xFF} dims: {_kind(magic)})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing bytes"
        shape = " x ".join(str(d) for d in dims)
        raise DatasetError(f"{path}: {len(raw):,} bytes, but the IDX header ({shape}) needs "
                           f"{expected:,} ({what})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_images(path: Path, image_shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """IDX images as uint8 ``(N, 1, H, W)``; checks ``(H, W) == image_shape``."""
    images = read_idx(path, IMAGES_MAGIC)
    if images.shape[1:] != tuple(image_shape):
        raise DatasetError(f"{path}: images of {images.shape[1]}x{images.shape[2]}, "
                           f"expected {image_shape[0]}x{image_shape[1]}")
    return images[:, None, :, :]


def read_labels(path: Path, num_classes: int = 10) -> np.ndarray:
    """IDX labels as int64 ``(N,)``; checks every label is below ``num_classes``."""
    labels = read_idx(path, LABELS_MAGIC).astype(np.int64)
    if labels.size and labels.max() >= num_classes:
        raise DatasetError(f"{path}: label {int(labels.max())} out of range, expected 0.."
                           f"{num_classes - 1}")
    return labels


def _kind(magic: int) -> str:
    return {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(magic, "?")


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array (the inverse of `read_idx`; used to make test files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
