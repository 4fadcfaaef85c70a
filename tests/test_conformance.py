"""`bench check` passes for every installed backend on every shipped task (CPU), and can fail."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from fwbench.conformance import compare, run_checks

BACKENDS = {"numpy": "numpy", "torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_backend_conforms_on_every_shipped_task(backend):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed")
    checks = run_checks([backend], None)
    failed = [dataclasses.asdict(c) for c in checks if not c.passed]
    assert not failed, failed[:5]
    tasks = {c.task for c in checks}
    assert {"mlp_mnist", "cnn_mnist", "cnn_cifar", "resnet_cifar"} <= tasks
    quantities = {c.quantity for c in checks}
    assert {"logits", "loss", "rule:adam", "rule:rmsprop", "rule:clip-norm", "rule:task"} <= quantities
    if backend == "numpy":  # the reference: finite differences, not itself
        assert any(q.startswith("fd:") for q in quantities)
        assert not any(q.startswith(("grad:", "step:", "curve")) for q in quantities)
    else:
        assert {"curve", "step:adam", "step:momentum", "step:clip-norm", "step:task"} <= quantities
        assert any(q.startswith("grad:") for q in quantities)


def test_compare_detects_a_real_difference():
    a = np.array([1.0, 2.0, 3.0])
    assert compare(a, a * (1 + 1e-6))[2]
    assert not compare(a, a * (1 + 1e-3))[2]
    assert not compare(a, a[:2])[2]
