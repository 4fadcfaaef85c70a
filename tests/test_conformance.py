"""`bench check` passes for every installed backend on every shipped task (CPU), and can fail."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from fwbench.conformance.checks import compare
from fwbench.conformance.dropout import QUANTITIES as DROPOUT_CHECKS
from fwbench.conformance.runner import run_checks

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


#: Frontends on each engine: (backend, [backend] options, module that must be installed).
FRONTENDS = [("keras", {"engine": e}, e) for e in ("tensorflow", "jax", "torch")] + [("flax", {}, "flax")]


@pytest.mark.parametrize(("backend", "options", "module"), FRONTENDS,
                         ids=[f"{b}-{o.get('engine', 'jax')}" for b, o, _ in FRONTENDS])
def test_frontend_conforms_in_exact_mode(backend, options, module):
    """Keras on every installed engine and Flax, on the MLP (convolutions: the slow test)."""
    if importlib.util.find_spec(backend) is None or importlib.util.find_spec(module) is None:
        pytest.skip(f"{backend} or {module} is not installed")
    checks = run_checks([(backend, options)], ["mlp_mnist"])
    failed = [dataclasses.asdict(c) for c in checks if not c.passed]
    assert not failed, failed[:5]
    assert {c.task for c in checks} == {"mlp_mnist"}
    label = f"{backend}[{options.get('engine', 'jax')}]"
    assert {c.backend for c in checks} == {label}
    assert {"logits", "curve", "step:adam", "rule:rmsprop", "step:clip-norm"} <= {c.quantity for c in checks}


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "options", "module"), FRONTENDS,
                         ids=[f"{b}-{o.get('engine', 'jax')}" for b, o, _ in FRONTENDS])
def test_frontend_conforms_on_convolutions_batchnorm_and_residuals(backend, options, module):
    if importlib.util.find_spec(backend) is None or importlib.util.find_spec(module) is None:
        pytest.skip(f"{backend} or {module} is not installed")
    checks = run_checks([(backend, options)], ["cnn_mnist", "resnet_cifar"])
    failed = [dataclasses.asdict(c) for c in checks if not c.passed and not c.skipped]
    assert not failed, failed[:5]
    assert any(c.quantity == "grad:1.gamma" for c in checks)  # BatchNorm gradients are compared
    # frontends draw their own dropout masks (no use_dropout_masks seam): those two checks, and only
    # those, are listed as skipped with the reason, never passed silently
    skipped = {(c.task, c.quantity) for c in checks if c.skipped}
    assert skipped == {(t, q) for t in ("cnn_mnist", "resnet_cifar") for q in DROPOUT_CHECKS}


FIXTURES = Path(__file__).parent / "fixtures" / "conformance"
#: Outside specs of issue 21 that frontends failed (folded softmax, flatten order, TF's remapper).
FRONTEND_FIXTURES = ("softmax_on_last_residual", "flatten_last_channels_last", "conv_flatten_batchnorm",
                     "projected_residual_leaky_relu", "leaky_relu_float64_slope", "leaky_relu_at_zero",
                     "adagrad_initial_accumulator", "keras_sigmoid_output_tagged", "frozen_batchnorm_pointwise_conv",
                     "batchnorm_small_spread_float32", "batchnorm_constant_feature_float32",
                     "batchnorm_global_pool_relu_tie", "curve_loss_near_zero",
                     "step_noise_constant_features", "step_noise_constant_features_dropout")


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "options", "module"), FRONTENDS,
                         ids=[f"{b}-{o.get('engine', 'jax')}" for b, o, _ in FRONTENDS])
def test_frontend_passes_the_outside_specs(backend, options, module):
    """The conventions every backend follows (docs/conformance.md) hold for Keras and Flax too."""
    if importlib.util.find_spec(backend) is None or importlib.util.find_spec(module) is None:
        pytest.skip(f"{backend} or {module} is not installed")
    specs = [str(FIXTURES / f"{name}.toml") for name in FRONTEND_FIXTURES]
    checks = run_checks([(backend, options)], specs)
    failed = [dataclasses.asdict(c) for c in checks if not c.passed and not c.skipped]
    assert not failed, failed[:5]
    assert {c.task for c in checks} == set(specs)
    # every one of them is buildable; only the dropout checks are skipped (no mask seam), and only
    # on the fixture with a dropout layer
    skipped = {(Path(c.task).stem, c.quantity) for c in checks if c.skipped}
    assert skipped == {("step_noise_constant_features_dropout", q) for q in DROPOUT_CHECKS}


@pytest.mark.slow
def test_keras_on_tensorflow_native_mode_works_around_the_remapper_fault():
    """Keras' own LeakyReLU after a residual sum: TensorFlow's remapper fuses conv + add + LeakyRelu
    wrongly in float32 (logits off by 0.5); the backend turns it off for that pattern only. Fails if
    the workaround stops matching the pattern, or the fault takes another form."""
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        pytest.skip("keras or tensorflow is not installed")
    spec = str(FIXTURES / "projected_residual_leaky_relu.toml")
    checks = run_checks([("keras", {"engine": "tensorflow", "mode": "native"})], [spec])
    assert [c.quantity for c in checks if not c.passed] == []
    assert any(c.quantity == "logits" for c in checks)


def test_native_mode_lists_the_differing_conventions_instead_of_failing():
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
        pytest.skip("keras or jax is not installed")
    checks = run_checks([("keras", {"engine": "jax", "mode": "native"})], ["mlp_mnist"])
    assert all(c.passed for c in checks), [dataclasses.asdict(c) for c in checks if not c.passed][:3]
    notes = {c.quantity: c.note for c in checks if c.note}
    assert "rule:adam" in notes and "eps" in notes["rule:adam"]  # Keras' Adam really differs
    assert "weight_decay" in notes["rule:rmsprop"]
    assert "rule:sgd" not in notes  # plain SGD: Keras' decoupled decay equals L2, the same rule
    assert not any(q.startswith("grad:") or q == "logits" for q in notes)  # the model itself agrees


def test_compare_detects_a_real_difference():
    a = np.array([1.0, 2.0, 3.0])
    assert compare(a, a * (1 + 1e-6))[2]
    assert not compare(a, a * (1 + 1e-3))[2]
    assert not compare(a, a[:2])[2]
