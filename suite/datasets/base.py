"""The dataset contract: real data as NumPy arrays, loaded without any framework helper."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Environment variable that moves the dataset cache (``--data-dir`` wins over it).
DATA_DIR_ENV = "FWBENCH_DATA_DIR"


def default_data_dir() -> Path:
    """``$FWBENCH_DATA_DIR``, else ``$XDG_CACHE_HOME/fwbench/data``, else ``~/.cache/fwbench/data``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fwbench" / "data"


@dataclass(frozen=True)
class Arrays:
    """A dataset split in two. Images ``(N, C, H, W)`` uint8 or float; labels int64 ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    synthetic: bool = False


class Dataset(ABC):
    """A named dataset. ``offline`` datasets ship inside an installed package."""

    name: str = ""
    description: str = ""
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    offline: bool = False
    #: Largest raw pixel value (for ``normalize = "scale"``).
    max_value: float = 255.0
    #: Samples in the training split before ``train_limit`` and ``validation_split``; lets a plan
    #: refuse a batch larger than what is left before any cell starts. None: unknown until loaded.
    train_size: int | None = None

    def files(self) -> list[str]:
        """File names this dataset keeps in its cache folder (empty for packaged ones)."""
        return []

    def is_cached(self, data_dir: Path) -> bool:
        return all((data_dir / self.name / f).is_file() for f in self.files())

    def fetch(self, data_dir: Path, *, progress: bool = True, force: bool = False) -> Path:
        """Download into ``data_dir / name`` (verified); packaged datasets need nothing.

        ``force=True`` downloads again even when a verified copy is cached.
        """
        return data_dir / self.name

    @abstractmethod
    def load(self, data_dir: Path) -> Arrays:
        """Load from the cache (never downloads: `fetch` does). Raises `DatasetError` with the fix."""
