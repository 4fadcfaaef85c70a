"""Reusable scratch arrays, so a training step allocates (almost) nothing.

Every layer owns a `Workspace`. ``ws.get("out", shape)`` returns the same array on every call with
the same shape; a new shape (the last, smaller batch of an epoch, or an evaluation chunk) replaces
the old array, so each name holds at most one buffer and memory stays bounded by the largest batch.
"""
from __future__ import annotations

import numpy as np


class Workspace:
    """Named, reusable arrays of one dtype.

    Args:
        dtype: dtype of the arrays handed out (unless a call asks for another).
    """

    def __init__(self, dtype: np.dtype | str):
        self.dtype = np.dtype(dtype)
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str | None = None,
            zero: bool = False) -> np.ndarray:
        """The buffer ``name`` with ``shape``; (re)allocated only when the shape or dtype changed.

        Args:
            zero: fill with zeros when (re)allocated (e.g. a padded input whose border must stay 0).
                  The content of a reused buffer is whatever the caller left in it.
        """
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        arr = self._arrays.get(name)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            arr = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self._arrays[name] = arr
        return arr

    def nbytes(self) -> int:
        """Bytes held by this workspace."""
        return sum(a.nbytes for a in self._arrays.values())

    def clear(self) -> None:
        """Drop every buffer (they are reallocated on the next use)."""
        self._arrays.clear()
