"""The ONNX Runtime backend: the graph built from the spec answers like the NumPy float64 reference
in eval mode, it declines training (a skipped cell), and the inference check can fail."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench.conformance.checks import REFERENCE, check_one
from fwbench.plugins import get_registry
from fwbench.spec import load_task

pytestmark = pytest.mark.framework


@pytest.fixture(scope="module")
def backends():
    registry = get_registry()
    candidate, reference = registry.get_backend("onnxruntime"), registry.get_backend(REFERENCE)
    candidate.configure(device="cpu", threads=1)
    reference.configure(device="cpu", threads=1)
    return registry, candidate, reference


@pytest.mark.parametrize("name", ["mlp_mnist", "cnn_mnist", "resnet_cifar"])
def test_serves_the_reference_function_and_declines_training(backends, name):
    registry, candidate, reference = backends
    task = load_task(registry.get_task_file(name))
    checks = {c.quantity: c for c in check_one(name, task, candidate, reference)}
    assert checks["task"].skipped and "onnxruntime serves models only" in checks["task"].note
    inference = checks["inference"]
    assert inference.passed and not inference.skipped, inference
    assert inference.max_abs < 1e-4


def test_graph_is_plain_onnx_built_from_the_spec(backends):
    from fwbench.model import analyze, initial_weights
    from fwbench_onnxruntime.graph import build_model

    registry, _, _ = backends
    task = load_task(registry.get_task_file("cnn_mnist"))
    info = analyze(task.model, (1, 28, 28), 10, task.source)
    model = build_model(info, initial_weights(task.model, info, 0, "float32"))
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Identity"]
    assert "Softmax" not in ops and "Dropout" not in ops  # logits; dropout is the identity at eval
    assert {i.name for i in model.graph.initializer} == {p.name for p in info.params}


def test_a_backend_in_train_mode_at_inference_fails_the_check(backends):
    """The check is not blind: a candidate whose predict normalises with batch statistics fails."""
    registry, _, reference = backends
    numpy_backend = registry.get_backend("numpy")

    class TrainModeNumpy(type(numpy_backend)):
        name = "numpy-train-mode"

        def build(self, request):
            trainer = super().build(request)
            trainer.predict = lambda batch: trainer.model.forward(batch.x, training=True).copy()  # the bug
            return trainer

    task = load_task(registry.get_task_file("resnet_cifar"))  # BatchNorm layers
    checks = {c.quantity: c for c in check_one("resnet_cifar", task, TrainModeNumpy(), reference)
              if c.quantity == "inference"}
    assert not checks["inference"].passed


def test_float64_is_declined_with_the_reason(backends):
    from fwbench.backend import BuildRequest, Unsupported
    from fwbench.model import analyze, initial_weights

    registry, candidate, _ = backends
    task = load_task(registry.get_task_file("mlp_mnist"), {"dtype": "float64", "scenario": "inference"})
    info = analyze(task.model, (1, 28, 28), 10, task.source)
    with pytest.raises(Unsupported, match="float32 graphs only"):
        candidate.build(BuildRequest(task, info, initial_weights(task.model, info, 0, "float64"), "cpu", 10))


def test_predict_is_batch_size_agnostic(backends):
    from fwbench.backend import BuildRequest
    from fwbench.model import analyze, initial_weights

    registry, candidate, _ = backends
    task = load_task(registry.get_task_file("mlp_mnist"), {"scenario": "inference"})
    info = analyze(task.model, (1, 28, 28), 10, task.source)
    trainer = candidate.build(BuildRequest(task, info, initial_weights(task.model, info, 0, "float32"), "cpu", 10))
    x = np.random.default_rng(0).normal(size=(5, 1, 28, 28)).astype(np.float32)
    whole = trainer.predict(trainer.to_device(x, np.zeros(5, np.int64)))
    one = trainer.predict(trainer.to_device(x[:1], np.zeros(1, np.int64)))
    assert whole.shape == (5, 10) and np.allclose(whole[:1], one, atol=1e-6)


def test_training_cell_is_skipped_and_inference_cell_runs(bench, tmp_path):
    result = bench("run", "-b", "onnxruntime", "-t", "mlp_mnist", "--dataset", "digits", "--peak", "off",
                   "-o", str(tmp_path / "train"))
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout and "onnxruntime serves models only" in result.stdout
    result = bench("run", "-b", "onnxruntime", "-t", "mlp_mnist", "--dataset", "digits", "--peak", "off",
                   "--scenario", "inference", "--set", "inference.min_time_s=0.02", "-o", str(tmp_path / "serve"))
    assert result.returncode == 0, result.stderr + result.stdout
    from fwbench.records.results import load_records

    (record,) = load_records(tmp_path / "serve")
    assert record["status"] == "ok" and record["metrics"]["latency_p50_s"] > 0


def test_fuzzer_skips_training_and_checks_the_served_model(backends):
    """`bench check --random` with every backend: onnxruntime's training is skipped and its served
    model checked (the fuzzer called the training checks alone, and they crashed)."""
    from fwbench.conformance.fuzz import check_spec

    _, candidate, reference = backends
    raw = {"task": {"name": "r"}, "dataset": {"name": "digits", "classes": [0, 1], "train_limit": 2,
                                                "validation_split": 0.0},
           "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 2, "init": "he_normal"},
                                {"type": "residual", "layers": [{"type": "dense", "units": 2}], "activation": "relu"}]},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 1, "epochs": 1}}
    assert check_spec(raw, {"onnxruntime": candidate}, reference) == []


def test_fuzzer_fails_a_served_model_that_answers_wrong(backends, monkeypatch):
    from fwbench.conformance.fuzz import check_spec
    from fwbench_onnxruntime.trainer import OnnxTrainer

    _, candidate, reference = backends
    real = OnnxTrainer.predict
    monkeypatch.setattr(OnnxTrainer, "predict", lambda self, batch: real(self, batch) * 1.01)
    raw = {"task": {"name": "r"}, "dataset": {"name": "digits"},
           "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 8, "epochs": 1}}
    assert [c.quantity for c in check_spec(raw, {"onnxruntime": candidate}, reference)] == ["inference"]
