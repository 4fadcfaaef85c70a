"""Refusals before any cell starts: every error that depends only on the spec and the dataset's
metadata (class lists, shapes, batch against split sizes, BatchNorm on one sample), and models or
inputs whose estimated memory exceeds the machine's.

`refuse_before_cells` raises `fwbench.errors.SpecError` (one line naming the file, the key and
the fix; exit 2). The cell itself still checks the same things on the loaded data: this module
moves the verdict before the first cell, it does not replace the cell's own guard.
"""
from __future__ import annotations

import math
import os

from ..errors import SpecError
from ..layers import BatchNorm
from ..model import ModelInfo, analyze

#: Arrays a training step keeps per parameter: the value, its gradient and up to two optimizer
#: slots (Adam's m and v).
PARAM_COPIES = 4
#: Per activation float: the forward output and its gradient in backward.
ACTIVATION_COPIES = 2


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def input_shape(task, dataset) -> tuple[int, ...]:
    """The shape of one sample: ``dataset.shape`` for synthetic data, else the dataset's own."""
    return tuple(task.dataset.shape) or tuple(dataset.input_shape)


def _check_dataset_keys(task, dataset) -> None:
    source, spec = task.source, task.dataset
    if spec.shape and spec.name != "synthetic":
        raise SpecError(source, "dataset.shape", f"{list(spec.shape)}: only the synthetic dataset takes a "
                        f"shape; {spec.name!r} is always {list(dataset.input_shape)}. Remove dataset.shape "
                        "(or use name = \"synthetic\")")
    if spec.shape and (len(spec.shape) not in (1, 3) or any(int(d) < 1 for d in spec.shape)):
        raise SpecError(source, "dataset.shape", f"{list(spec.shape)}: give (C, H, W) or (features,) "
                        "with every dimension >= 1")
    if spec.classes:
        from ..datasets.subset import ClassSubset

        ClassSubset(dataset, spec.classes, source)  # validates the list without loading anything


def training_samples(task, dataset) -> int | None:
    """Samples left for training after ``train_limit`` and ``validation_split`` (as
    `fwbench.datasets.pipeline.prepare` computes them), or None when the dataset's size is not known."""
    n = dataset.train_size
    if n is None or task.dataset.classes:  # a class subset: known only once loaded
        return None
    if task.dataset.train_limit is not None:
        n = min(n, task.dataset.train_limit)
    return n - round(n * task.dataset.validation_split)


def one_value_batchnorm(info: ModelInfo) -> str | None:
    """The path of a BatchNorm that sees one value per channel per sample (flat features, 1x1)."""
    for li in info.walk():
        if isinstance(li.layer, BatchNorm) and math.prod(li.in_shape[1:]) == 1:
            return li.path
    return None


def _check_batches(task, dataset, info: ModelInfo) -> None:
    source, batch = task.source, task.training.batch_size
    left = training_samples(task, dataset)
    if left is not None and batch > left:
        raise SpecError(source, "training.batch_size", f"{batch} is larger than the {left} training samples "
                        f"left of {dataset.name!r} after train_limit and validation_split; lower it or "
                        "use more data")
    bn = one_value_batchnorm(info)
    if batch == 1 and bn is not None:
        raise SpecError(source, "training.batch_size", f"1 with a batchnorm over features (layer {bn}): the "
                        "batch variance of one value is undefined; use batch_size >= 2 or remove the "
                        "batchnorm (docs/conformance.md)")


def memory_estimate(task, info: ModelInfo, shape: tuple[int, ...], train_samples: int | None) -> int:
    """Bytes a cell needs at least: parameters with gradients and optimizer slots, one batch's
    activations and their gradients, and the float64 training split the input pipeline keeps."""
    itemsize = 8 if task.training.dtype == "float64" else 4
    params = sum(math.prod(p.shape) for p in info.params)
    activations = (info.activation_floats + math.prod(shape)) * task.training.batch_size
    data = (train_samples or task.training.batch_size) * math.prod(shape) * 8
    return PARAM_COPIES * params * itemsize + ACTIVATION_COPIES * activations * itemsize + data


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def refuse_before_cells(registry, task, limit: int | None = None) -> None:
    """Refuse ``task`` (`SpecError`) when it cannot run on its dataset or on this machine.

    Args:
        registry: where the dataset is looked up (an unknown one is left to the dataset check).
        task: a training `TaskSpec`.
        limit: memory in bytes a cell may use; default: this machine's physical memory.
    """
    dataset = registry.datasets.get(task.dataset.name)
    if dataset is None:
        return
    _check_dataset_keys(task, dataset)
    shape = input_shape(task, dataset)
    classes = len(task.dataset.classes) or dataset.num_classes or None
    info = analyze(task.model, shape, classes, task.source)
    if not any(p.trainable for p in info.params):
        raise SpecError(task.source, "model.layers", "the model has no parameter to train; add a dense or "
                        "conv2d layer")
    _check_batches(task, dataset, info)
    limit = limit or machine_memory()
    if limit:
        need = memory_estimate(task, info, shape, training_samples(task, dataset))
        if need > limit:
            big = max(info.walk(), key=lambda li: sum(math.prod(p.shape) for p in li.params)
                      + math.prod(li.out_shape), default=None)
            where = f"; the largest layer is layer {big.path} ({big.layer.kind})" if big is not None else ""
            raise SpecError(task.source, "model", f"needs at least {_gib(need)} (parameters, optimizer state, "
                            f"one batch of activations and the training split) but this machine has "
                            f"{_gib(limit)}{where}; make the model, the input or the batch smaller")

