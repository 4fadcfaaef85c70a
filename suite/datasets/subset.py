"""``dataset.classes``: a dataset restricted to some of its classes, relabelled ``0..k-1``.

``classes = [6, 7, 8, 9]`` keeps the samples of those four classes (train and test split alike)
and calls them 0, 1, 2, 3 in that order, so the model ends in a 4-unit layer. Used by the
`transfer` study: learn digits 0-5, then reuse the features for the unseen digits 6-9.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SpecError
from .base import Arrays, Dataset


class ClassSubset(Dataset):
    """``base`` with only ``classes`` kept, relabelled by their position in ``classes``.

    Raises:
        SpecError: a class outside ``[0, base.num_classes)``, a repeated class, or fewer than two.
    """

    def __init__(self, base: Dataset, classes: tuple[int, ...], source: str = "<spec>"):
        classes = tuple(int(c) for c in classes)
        bad = [c for c in classes if not 0 <= c < base.num_classes]
        if bad:
            raise SpecError(source, "dataset.classes", f"{bad} are not classes of {base.name!r}; use labels "
                            f"0..{base.num_classes - 1}")
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise SpecError(source, "dataset.classes", f"{list(classes)}: give at least two different "
                            "class labels, each once")
        self.base, self.classes = base, classes
        self.name = f"{base.name}[{','.join(map(str, classes))}]"
        self.description = f"{base.name}, classes {list(classes)} only (relabelled 0..{len(classes) - 1})"
        self.input_shape, self.num_classes = base.input_shape, len(classes)
        self.offline, self.max_value = base.offline, base.max_value

    def files(self) -> list[str]:
        return self.base.files()

    def is_cached(self, data_dir: Path) -> bool:
        return self.base.is_cached(data_dir)

    def fetch(self, data_dir: Path, *, progress: bool = True, force: bool = False) -> Path:
        return self.base.fetch(data_dir, progress=progress, force=force)

    def load(self, data_dir: Path) -> Arrays:
        arrays = self.base.load(data_dir)
        relabel = np.full(max(self.base.num_classes, 1), -1, dtype=np.int64)
        relabel[list(self.classes)] = np.arange(len(self.classes))

        def keep(x, y):
            y = np.asarray(y, dtype=np.int64)
            mask = relabel[y] >= 0
            return x[mask], relabel[y[mask]]

        x_train, y_train = keep(arrays.x_train, arrays.y_train)
        x_test, y_test = keep(arrays.x_test, arrays.y_test)
        names = tuple(arrays.class_names[c] if c < len(arrays.class_names) else str(c) for c in self.classes)
        return Arrays(x_train, y_train, x_test, y_test, names, arrays.synthetic)
