"""Shared set-up for the TensorFlow backend tests: configure TensorFlow once, build trainers.

The folder is skipped where TensorFlow is not installed (each module also calls
``pytest.importorskip``). TensorFlow's import (~5-10 s) happens once per pytest process.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    import fwbench_tensorflow  # noqa: F401  (sets TF's log level before the tests import TF)


@pytest.fixture(scope="session")
def configured():
    """``(backend, facts)``: configured once per session, before any TensorFlow op runs (1 intra-op
    thread: the machine is shared)."""
    from fwbench_tensorflow.backend import TensorflowBackend

    backend = TensorflowBackend()
    return backend, backend.configure(device="cpu", threads=1)


@pytest.fixture
def backend(configured):
    return configured[0]


@pytest.fixture
def build(backend):
    """``build(task, input_shape, num_classes, weights=None, seed=0)`` -> (trainer, weights)."""
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights

    def _build(task, input_shape, num_classes, weights=None, seed=0):
        info = analyze(task.model, input_shape, num_classes)
        if weights is None:
            weights = initial_weights(task.model, info, seed, task.training.dtype)
        request = BuildRequest(task, info, weights, "cpu", num_classes)
        return backend.build(request), weights

    return _build


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
