"""Framework-neutral checkpoints: the .npz format, `model.init_from`, evaluation-only runs, and
weights saved by one backend loaded into another through the real CLI."""
from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fwbench.errors import SpecError
from fwbench.records.checkpoints import (
    META_KEY,
    apply_init_from,
    load_checkpoint,
    merge_weights,
    resolve_init_from,
    save_checkpoint,
)
from fwbench.spec import task_from_dict

CNN = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same", "activation": "relu"},
       {"type": "batchnorm"}, {"type": "maxpool", "size": 2}, {"type": "flatten"},
       {"type": "dense", "units": 10, "activation": "softmax"}]


def _weights(rng) -> dict[str, np.ndarray]:
    return {"0.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
            "0.bias": rng.normal(size=4).astype(np.float32),
            "1.gamma": np.ones(4, np.float32), "1.running_var": rng.random(4).astype(np.float32),
            "4.weight": rng.normal(size=(64, 10)).astype(np.float32)}


def test_round_trip_keeps_every_array_bit_for_bit_and_the_metadata(tmp_path):
    weights = _weights(np.random.default_rng(0))
    path = save_checkpoint(tmp_path / "sub" / "w.npz", weights, backend="torch", task="cnn", config={"a": 1},
                           input_shape=(1, 8, 8), num_classes=10, dataset="digits")
    checkpoint = load_checkpoint(path)
    assert sorted(checkpoint.weights) == sorted(weights)
    for name, value in weights.items():
        assert checkpoint.weights[name].dtype == value.dtype
        np.testing.assert_array_equal(checkpoint.weights[name], value)
    meta = checkpoint.meta
    assert (meta["format"], meta["backend"], meta["task"], meta["dtype"]) == ("fwbench-checkpoint", "torch", "cnn",
                                                                              "float32")
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10 and meta["config"] == {"a": 1}
    # plain NumPy reads it without fwbench, and without pickles
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw[META_KEY]))["dataset"] == "digits"
    assert not [p for p in tmp_path.joinpath("sub").iterdir() if p.name.startswith(".tmp")]


def test_merge_loads_matching_arrays_and_keeps_the_init_for_the_rest():
    rng = np.random.default_rng(1)
    saved = _weights(rng)
    initial = {"0.weight": np.zeros((4, 1, 3, 3), np.float64), "0.bias": np.zeros(4),
               "4.weight": np.zeros((16, 10)), "5.bias": np.zeros(10)}
    merged, loaded, skipped = merge_weights(initial, saved)
    assert loaded == ["0.weight", "0.bias"]
    assert merged["0.weight"].dtype == np.float64
    np.testing.assert_allclose(merged["0.weight"], saved["0.weight"])
    assert not merged["4.weight"].any() and not merged["5.bias"].any()
    reasons = {s["name"]: s["reason"] for s in skipped}
    assert reasons["4.weight"].startswith("shape mismatch") and reasons["5.bias"].startswith("not in the checkpoint")
    assert reasons["1.gamma"].startswith("the model has no array")


def test_init_from_resolves_next_to_the_spec_then_the_cwd(tmp_path, monkeypatch):
    specs, elsewhere = tmp_path / "specs", tmp_path / "cwd"
    specs.mkdir()
    elsewhere.mkdir()
    save_checkpoint(specs / "a.npz", {"x": np.ones(2)}, backend="numpy", task="t")
    save_checkpoint(elsewhere / "b.npz", {"x": np.ones(2)}, backend="numpy", task="t")
    monkeypatch.chdir(elsewhere)
    source = str(specs / "task.toml")
    assert resolve_init_from("a.npz", source) == (specs / "a.npz").resolve()
    assert resolve_init_from("b.npz", source) == (elsewhere / "b.npz").resolve()
    raw = {"dataset": {"name": "digits"}, "model": {"layers": CNN, "init_from": "a.npz"},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 8, "epochs": 0}}
    spec = task_from_dict(raw, source)
    assert spec.model.init_from == str((specs / "a.npz").resolve())  # stored resolved, absolute


@pytest.mark.parametrize("content", [None, b"this is not a zip file", b""], ids=["missing", "garbage", "empty"])
def test_a_missing_or_unreadable_checkpoint_is_one_line_naming_key_path_and_fix(tmp_path, content):
    path = tmp_path / "w.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        resolve_init_from(str(path), str(tmp_path / "task.toml"))
    message = str(info.value)
    assert "\n" not in message and "[model.init_from]" in message and str(path) in message
    assert "bench run --save-weights" in message


def test_apply_init_from_reports_what_was_loaded_and_skipped(tmp_path):
    saved = _weights(np.random.default_rng(2))
    path = save_checkpoint(tmp_path / "w.npz", saved, backend="jax", task="t", cell_id="c1")
    initial = {"0.weight": np.zeros((4, 1, 3, 3), np.float32), "9.weight": np.zeros((3, 3), np.float32)}
    weights, facts = apply_init_from(path, initial)
    assert facts["loaded"] == ["0.weight"] and facts["source"]["backend"] == "jax"
    assert {s["name"] for s in facts["skipped"]} >= {"9.weight", "4.weight"}
    np.testing.assert_array_equal(weights["0.weight"], saved["0.weight"])
    with zipfile.ZipFile(path, "a") as archive:  # a corrupt member: one SpecError, not a traceback
        archive.writestr("broken.npy", b"nope")
    with pytest.raises(SpecError, match=r"\[model.init_from\]: cannot read checkpoint"):
        apply_init_from(path, initial)


def test_zero_epochs_evaluates_the_given_weights_without_training():
    from fwbench.backend import BuildRequest
    from fwbench.datasets.pipeline import Prepared
    from fwbench.model import analyze, initial_weights
    from fwbench.training import evaluate, train
    from fwbench_numpy.backend import NumpyBackend

    raw = {"dataset": {"name": "synthetic"}, "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]},
           "optimizer": {"name": "sgd", "lr": 0.5}, "training": {"batch_size": 4, "epochs": 0}}
    task = task_from_dict(raw, "<test>")
    info = analyze(task.model, (1, 2, 2), 3)
    weights = initial_weights(task.model, info, 0)
    trainer = NumpyBackend().build(BuildRequest(task, info, weights, "cpu", 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 20)
    data = Prepared(x, y, x[:5], y[:5], x[5:], y[5:], ("a", "b", "c"), False, {})
    result = train(task, trainer, data, info)
    assert result.metrics["epochs_run"] == 0 and result.metrics["steps"] == 0 and result.metrics["history"] == []
    assert result.metrics["test_accuracy"] == evaluate(trainer, x[5:], y[5:], 100)["accuracy"]
    np.testing.assert_array_equal(result.final_weights["1.weight"], weights["1.weight"])
    assert any("evaluation only" in w for w in result.warnings)


TASK = """
[dataset]
name = "digits"
validation_split = 0.2
normalize = "scale"
train_limit = 400

[model]
init = "he_uniform"
layers = [
  { type = "conv2d", filters = 4, kernel = 3, padding = "same", activation = "relu" },
  { type = "batchnorm" },
  { type = "maxpool", size = 2 },
  { type = "flatten" },
  { type = "dense", units = 10, activation = "softmax" },
]

[optimizer]
name = "adam"
lr = 0.01

[training]
batch_size = 32
epochs = 2
"""


def _record(out: Path) -> dict:
    (path,) = [p for p in out.rglob("*.json") if p.name != "run.json"]
    return json.loads(path.read_text())


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_weights_saved_by_numpy_give_torch_the_same_test_accuracy(bench, tmp_path):
    """The real CLI: `bench run --save-weights`, then an evaluation-only run (`training.epochs = 0`)
    of another backend from that checkpoint: same data, same weights -> the same test accuracy."""
    spec = tmp_path / "tiny_cnn.toml"
    spec.write_text(TASK)
    trained = bench("run", "--backend", "numpy", "--task", str(spec), "--peak", "off", "--no-progress",
                    "--out", str(tmp_path / "a"), "--save-weights", "weights")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    first = _record(tmp_path / "a")
    checkpoint = Path(first["weights_path"])
    assert checkpoint == tmp_path / "weights" / f"{first['cell_id']}.npz" and checkpoint.is_file()
    assert load_checkpoint(checkpoint).meta["backend"] == "numpy"

    again = bench("run", "--backend", "torch", "--task", str(spec), "--peak", "off", "--no-progress",
                  "--out", str(tmp_path / "b"), "--set", "training.epochs=0",
                  "--set", f"model.init_from={checkpoint}")
    assert again.returncode == 0, again.stdout + again.stderr
    second = _record(tmp_path / "b")
    assert second["status"] == "ok" and second["metrics"]["epochs_run"] == 0
    assert sorted(second["init_from"]["loaded"]) == sorted(["0.weight", "0.bias", "1.gamma", "1.beta",
                                                           "1.running_mean", "1.running_var", "4.weight", "4.bias"])
    assert second["init_from"]["skipped"] == []
    assert abs(second["metrics"]["test_accuracy"] - first["metrics"]["test_accuracy"]) <= 0.001


def test_a_missing_checkpoint_stops_bench_run_with_one_line(bench, tmp_path):
    result = bench("run", "--backend", "numpy", "--task", "mlp_mnist", "--dataset", "digits", "--peak", "off",
                   "--set", "model.init_from=nowhere/w.npz")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "[model.init_from]" in line and "nowhere/w.npz" in line and "--save-weights" in line


def test_canonical_weights_are_checked_by_the_core_with_one_error_type():
    import numpy as np
    from fwbench.errors import WeightsError
    from fwbench.model import analyze, check_weights, initial_weights
    raw = {"dataset": {"name": "synthetic"}, "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]},
           "optimizer": {"name": "sgd", "lr": 0.5}, "training": {"batch_size": 4, "epochs": 0}}
    model = task_from_dict(raw, "<test>").model
    info = analyze(model, (1, 2, 2), 3)
    weights = initial_weights(model, info, 0)
    check_weights(info, weights)  # the table itself passes
    with pytest.raises(WeightsError, match=r"missing \['1.bias'\], unknown \['bogus'\]"):
        check_weights(info, {"1.weight": weights["1.weight"], "bogus": np.zeros(1)})
    with pytest.raises(WeightsError, match=r"'1.weight' has shape \(3, 4\), expected \(4, 3\)"):
        check_weights(info, {**weights, "1.weight": weights["1.weight"].T})
    assert issubclass(WeightsError, KeyError) and issubclass(WeightsError, ValueError)
