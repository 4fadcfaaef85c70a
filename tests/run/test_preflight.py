"""Bad input that depends only on the spec and the dataset's metadata is refused before any cell
(`fwbench.run.preflight`), with one line naming the key and the fix."""
from __future__ import annotations

import pytest
from fwbench.errors import SpecError
from fwbench.plugins import get_registry
from fwbench.run.preflight import memory_estimate, refuse_before_cells, training_samples
from fwbench.spec import task_from_dict

MLP = [{"type": "flatten"}, {"type": "dense", "units": 10}]


def task(dataset=None, layers=None, **training):
    return task_from_dict({"task": {"name": "t"}, "dataset": dataset or {"name": "digits"},
                           "model": {"layers": layers or MLP}, "optimizer": {"name": "sgd", "lr": 0.1},
                           "training": {"batch_size": 8, "epochs": 1, **training}}, "t.toml")


def refused(t, limit=None) -> str:
    with pytest.raises(SpecError) as info:
        refuse_before_cells(get_registry(), t, limit)
    return str(info.value)


def test_a_valid_spec_passes():
    refuse_before_cells(get_registry(), task())


def test_a_repeated_class_label_is_refused():
    msg = refused(task({"name": "digits", "classes": [1, 2, 2]}, [{"type": "flatten"}, {"type": "dense", "units": 3}]))
    assert "dataset.classes" in msg and "each once" in msg


def test_a_shape_for_a_dataset_that_ignores_it_is_refused():
    msg = refused(task({"name": "digits", "shape": [1, 4, 4]}))
    assert "dataset.shape" in msg and "only the synthetic dataset" in msg and "[1, 8, 8]" in msg


def test_a_negative_synthetic_dimension_is_refused():
    assert "every dimension >= 1" in refused(task({"name": "synthetic", "shape": [3, -2, 5]}))


def test_a_batch_larger_than_the_training_split_left_is_refused():
    t = task({"name": "digits", "train_limit": 100, "validation_split": 0.5}, batch_size=64)
    assert training_samples(t, get_registry().get_dataset("digits")) == 50
    msg = refused(t)
    assert "training.batch_size" in msg and "64" in msg and "50 training samples" in msg
    refuse_before_cells(get_registry(), task({"name": "digits", "train_limit": 100, "validation_split": 0.5},
                                             batch_size=50))


def test_batch_one_with_a_batchnorm_over_features_is_refused():
    layers = [{"type": "flatten"}, {"type": "dense", "units": 4}, {"type": "batchnorm"}, {"type": "dense", "units": 10}]
    assert "batchnorm over features (layer 2)" in refused(task(layers=layers, batch_size=1))
    refuse_before_cells(get_registry(), task(layers=layers, batch_size=2))
    image_bn = [{"type": "batchnorm"}, *MLP]  # 8x8 values per channel: defined with one sample
    refuse_before_cells(get_registry(), task(layers=image_bn, batch_size=1))


def test_a_model_over_the_machines_memory_is_refused_with_the_estimate_and_the_limit():
    huge = [{"type": "flatten"}, {"type": "dense", "units": 10**9}, {"type": "dense", "units": 10}]
    msg = refused(task(layers=huge), limit=64 * 2**30)
    assert "needs at least" in msg and "this machine has 64.0 GiB" in msg and "layer 1 (dense)" in msg
    wide = task({"name": "synthetic", "shape": [3, 50000, 50000]}, [{"type": "global_avg_pool"},
                                                                  {"type": "dense", "units": 10}])
    assert "needs at least" in refused(wide, limit=64 * 2**30)


def test_the_memory_estimate_counts_parameters_activations_and_data():
    from fwbench.model import analyze

    t = task(dtype="float32")
    info = analyze(t.model, (1, 8, 8), 10)
    params = 64 * 10 + 10
    activations = (64 + 10 + 64) * 8  # flatten + dense outputs + the input, per batch of 8
    assert memory_estimate(t, info, (1, 8, 8), 1000) == 4 * params * 4 + 2 * activations * 4 + 1000 * 64 * 8


def test_a_model_with_nothing_to_train_is_refused():
    assert "no parameter to train" in refused(task({"name": "synthetic", "shape": [10, 1, 1]}, [{"type": "flatten"}]))


def test_bench_run_refuses_before_any_cell_with_one_line(tmp_path, capsys):
    from fwbench.cli import main

    code = main(["run", "-b", "numpy", "-t", "mlp_mnist", "--dataset", "digits", "--set", "dataset.classes=[1,2,2]",
                 "--peak", "off", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "dataset.classes" in err[0]
    assert not any(tmp_path.iterdir())  # no run folder, no record
