"""`bench check --set precision=…`: each backend against the NumPy reference of the same policy,
with tolerances from the unit roundoff; a backend whose policy is broken fails, naming the check."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fwbench.conformance.precision import iter_precision_checks, normwise, tolerances
from fwbench.conformance.runner import check_precision
from fwbench.errors import UsageError
from fwbench.model import analyze
from fwbench.precision import policy
from fwbench.spec import load_task


def test_tolerances_grow_with_unit_roundoff_depth_and_reduction_length():
    mlp = load_task("tasks/mlp_mnist.toml")
    cnn = load_task("tasks/cnn_mnist.toml")
    mlp_info = analyze(mlp.model, (1, 28, 28), 10)
    cnn_info = analyze(cnn.model, (1, 28, 28), 10)
    bf16_fwd, bf16_grad = tolerances(policy("bf16"), mlp_info, 8)
    fp16_fwd, _ = tolerances(policy("fp16"), mlp_info, 8)
    assert bf16_fwd == pytest.approx(8 * fp16_fwd)  # u: 2^-8 against 2^-11
    assert bf16_grad > bf16_fwd
    cnn_fwd, cnn_grad = tolerances(policy("bf16"), cnn_info, 8)
    assert cnn_fwd > bf16_fwd and cnn_grad > bf16_grad  # deeper, and long conv reductions


def test_normwise_fails_on_nan_shape_and_a_real_difference():
    a = np.array([1.0, 2.0, 3.0])
    assert normwise(a, a * (1 + 1e-3), 1e-2)[2]
    assert not normwise(a, a * 1.1, 1e-2)[2]
    assert not normwise(a, np.array([1.0, np.nan, 3.0]), 1.0)[2]
    assert not normwise(a, a[:2], 1.0)[2]


def test_bench_check_reads_the_precision_and_refuses_a_bad_one():
    assert check_precision(["backend.mode=native", "precision=bf16"]) == "bf16"
    assert check_precision(["training.precision=fp16"]) == "fp16"
    assert check_precision([]) == "fp32"
    with pytest.raises(UsageError, match="one of: fp32, tf32, bf16, fp16"):
        check_precision(["precision=fp8"])


@pytest.mark.framework
def test_torch_passes_under_fp16_and_fails_naming_the_check_when_its_policy_is_broken(monkeypatch):
    torch = pytest.importorskip("torch")
    checks = [c for _, found in iter_precision_checks("torch", ["mlp_mnist"], precision="fp16") for c in found]
    assert checks and all(c.passed for c in checks), [dataclasses.asdict(c) for c in checks if not c.passed]
    assert {"fp16:logits", "fp16:loss", "fp16:grad:1.weight", "fp16:step"} <= {c.quantity for c in checks}

    from fwbench_torch import trainer

    # broken on purpose: the fp16 policy computes in bfloat16 (unit roundoff 8x the claimed one)
    monkeypatch.setitem(trainer.AUTOCAST_DTYPES, "float16", torch.bfloat16)
    broken = [c for _, found in iter_precision_checks("torch", ["mlp_mnist"], precision="fp16") for c in found]
    failed = {c.quantity for c in broken if not c.passed}
    assert "fp16:logits" in failed, [dataclasses.asdict(c) for c in broken]
    assert all("normwise error above" in c.note for c in broken if not c.passed)


@pytest.mark.framework
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_fp16_step_fails_when_the_scaled_gradients_are_applied(monkeypatch, optimizer):
    """``fp16:step`` linearises an adaptive rule (`linearised`) so that its bound is the gradient's;
    a step taken with the loss-scaled gradients (GradScaler's unscaling skipped) still fails it,
    with the gradients themselves passing."""
    torch = pytest.importorskip("torch")
    from fwbench.conformance.precision import check_one
    from fwbench.plugins import get_registry

    task = load_task("tasks/mlp_mnist.toml", {"optimizer.name": optimizer, "training.precision": "fp16"})
    registry = get_registry()

    def step_rows():
        found = check_one("mlp_mnist", task, registry.get_backend("torch"), registry.get_backend("numpy"))
        return {c.quantity: c.passed for c in found if c.quantity == "fp16:step" or "grad:" in c.quantity}

    assert all(step_rows().values())
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda self, opt, *a, **k: opt.step())
    monkeypatch.setattr(torch.amp.GradScaler, "update", lambda self, *a, **k: None)
    rows = step_rows()
    assert rows.pop("fp16:step") is False
    assert rows and all(rows.values())  # the gradients of one backward are unscaled: they still pass
