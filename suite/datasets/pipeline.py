"""The suite's input pipeline: split, normalise, shuffle, augment and batch in NumPy, seeded.

Every backend sees identical batches in identical order. Augmentation is redrawn each epoch from
``(seed, epoch)``. Training drops the last incomplete batch (so jit-compiled steps keep one shape).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import DatasetSpec
from .base import Arrays, Dataset


@dataclass(frozen=True)
class Prepared:
    """Normalised float arrays ready for batching; shapes ``(N, C, H, W)`` and ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    synthetic: bool
    normalization: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _limit(x, y, n, rng):
    if n is None or n >= len(x):
        return x, y
    keep = np.sort(rng.permutation(len(x))[:n])
    return x[keep], y[keep]


def prepare(arrays: Arrays, dataset: Dataset, spec: DatasetSpec, seed: int, dtype: str) -> Prepared:
    rng = np.random.default_rng(seed)
    x_train, y_train = _limit(arrays.x_train, arrays.y_train, spec.train_limit, rng)
    x_test, y_test = _limit(arrays.x_test, arrays.y_test, spec.test_limit, rng)
    n_val = round(len(x_train) * spec.validation_split)
    order = rng.permutation(len(x_train))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_train, y_train = x_train[train_idx], y_train[train_idx]

    if spec.label_noise:
        y_train = noisy_labels(y_train, spec.label_noise, dataset.num_classes, seed)
    x_train, x_val, x_test = (a.astype(np.float64) for a in (x_train, x_val, x_test))
    norm: dict = {"method": spec.normalize}
    if spec.normalize == "scale":
        scale = float(dataset.max_value)
        x_train, x_val, x_test = x_train / scale, x_val / scale, x_test / scale
        norm["scale"] = scale
    elif spec.normalize == "standard":  # per channel, statistics of the training split only
        axes = (0, 2, 3) if x_train.ndim == 4 else (0,)
        mean = x_train.mean(axis=axes, keepdims=True)
        std = x_train.std(axis=axes, keepdims=True) + 1e-7
        x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
        norm.update(mean=mean.ravel().tolist(), std=std.ravel().tolist())
    cast = lambda a: np.ascontiguousarray(a, dtype=dtype)
    return Prepared(cast(x_train), y_train.astype(np.int64), cast(x_val), y_val.astype(np.int64),
                    cast(x_test), y_test.astype(np.int64), arrays.class_names, arrays.synthetic, norm)


def noisy_labels(y: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """A copy of ``y`` with ``round(fraction * N)`` labels (chosen at random, seeded) replaced by a
    different class, uniformly among the ``num_classes - 1`` others."""
    rng = np.random.default_rng([seed, 2024])
    y = np.array(y, copy=True)
    flip = rng.permutation(len(y))[:round(fraction * len(y))]
    y[flip] = (y[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
    return y


def augment(x: np.ndarray, ops: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """``hflip``: mirror half the images; ``crop``: pad 4 (zeros) and crop back at a random offset."""
    if not ops or x.ndim != 4:
        return x
    x = x.copy()
    n, _, h, w = x.shape
    if "hflip" in ops:
        flip = rng.random(n) < 0.5
        x[flip] = x[flip, :, :, ::-1]
    if "crop" in ops:
        pad = 4
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
        for i in range(n):
            x[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return x


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
                  ops: tuple[str, ...] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled (and augmented) full training batches for one epoch."""
    rng = np.random.default_rng([seed, epoch])  # shuffles, then augments (same stream)
    return [(augment(x[idx], ops, rng), y[idx]) for idx in _full_batches(rng.permutation(len(x)), batch_size)]


def epoch_indices(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The sample indices of each full batch of one epoch: the order of `epoch_batches`."""
    return _full_batches(np.random.default_rng([seed, epoch]).permutation(n), batch_size)


def _full_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``order`` cut into full batches of ``batch_size`` (the last partial batch is dropped)."""
    return [order[b * batch_size:(b + 1) * batch_size] for b in range(len(order) // batch_size)]


def check_fits(needed: int, free: int | None, device: str) -> None:
    """Refuse ``dataset.placement = "device"`` when the split (``needed`` bytes) will not fit in
    the ``free`` bytes of the device (None: unknown, not refused)."""
    from ..errors import UsageError

    if free is not None and needed > free:
        raise UsageError(f"[dataset.placement] = \"device\": the training split needs {needed / 2**30:.2f} GiB "
                         f"and the {device} has {free / 2**30:.2f} GiB free; use placement = \"host\" "
                         "or fewer samples (dataset.train_limit)")


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Fixed-order evaluation batches; the last one may be smaller."""
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
