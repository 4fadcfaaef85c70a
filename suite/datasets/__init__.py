"""Datasets: downloaded (verified, cached) and packaged (offline). See `base.Dataset`."""
from __future__ import annotations

from .base import Arrays, Dataset, default_data_dir

__all__ = ["Arrays", "Dataset", "default_data_dir"]
