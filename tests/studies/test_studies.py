"""Studies: the file format and its one-line errors, planning and dependency order, the features
studies use (freezing in the spec, gradient norms, label noise, class subsets), the report
section of every kind, and `bench study` end to end."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from fwbench.errors import SpecError
from fwbench.model import analyze
from fwbench.plugins import get_registry
from fwbench.spec import task_from_dict
from fwbench.studies.command import StudyExecutor, plan_cells
from fwbench.studies.spec import STUDY_KINDS, load_study

STUDY = """
[study]
title = "A test study"
kind = "transfer"
description = "Line one.\\n\\n- item <b>one</b>\\n- item two"

[profiles.quick]
"training.epochs" = 1

[[cells]]
label = "pretrain"
task = "mlp_mnist"
save_weights = true
set = { "dataset.name" = "digits" }

[[cells]]
label = "finetune"
task = "mlp_mnist"
set = { "dataset.name" = "digits", "model.init_from" = "@pretrain", "model.frozen" = ["1"] }

[[cells]]
label = "lr"
task = "mlp_mnist"
set = { dataset = { name = "digits" } }
grid = { "optimizer.lr" = [0.1, 0.01] }
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# The file format
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(get_registry().study_files))
@pytest.mark.parametrize("profile", [None, "quick"])
def test_every_shipped_study_validates(name, profile):
    registry = get_registry()
    study = load_study(registry.get_study_file(name), registry, profile)
    assert study.info.kind in STUDY_KINDS and study.info.description.strip() and len(study.cells) >= 2


def test_the_required_studies_ship():
    assert {"lr_sweep", "batch_size", "optimizers", "regularization", "architectures", "vanishing_gradients",
            "transfer"} <= set(get_registry().study_files)


def test_grids_expand_profiles_apply_and_references_resolve(tmp_path):
    study = load_study(write(tmp_path, STUDY), get_registry(), "quick")
    assert [c.label for c in study.cells] == ["pretrain", "finetune", "lr lr=0.1",
                                               "lr lr=0.01"]
    pretrain, finetune, lr1, _ = study.cells
    assert pretrain.save_weights and finetune.reference == "pretrain" and "model.init_from" not in finetune.overrides
    assert finetune.overrides["model.frozen"] == ["1"] and finetune.overrides["training.epochs"] == 1
    assert lr1.overrides == {"dataset.name": "digits", "optimizer.lr": 0.1, "training.epochs": 1}
    assert lr1.grid == {"optimizer.lr": 0.1}


def test_a_cell_runs_after_the_cell_whose_weights_it_needs(tmp_path):
    text = STUDY.replace('label = "pretrain"', 'label = "base"').replace("@pretrain", "@late")
    text += '\n[[cells]]\nlabel = "late"\ntask = "mlp_mnist"\nsave_weights = true\nset = { "optimizer.lr" = 0.5 }\n'
    study = load_study(write(tmp_path, text), get_registry())
    labels = [c.label for c in study.cells]
    assert labels.index("late") < labels.index("finetune")


BAD = [
    ('title = "A test study"', 'titel = "x"', r"\[study.titel\]: unknown key; did you mean 'title'\?"),
    ('kind = "transfer"', 'kind = "transferr"', r"\[study.kind\]: unknown value 'transferr'; did you mean 'transfer'"),
    ('task = "mlp_mnist"\nsave_weights', 'task = "mlp_mnsit"\nsave_weights',
     r"\[cells\[0\].task\]: unknown task 'mlp_mnsit'; did you mean 'mlp_mnist'\?"),
    ("@pretrain", "@nope", (r"\[cells\[1\].set.model.init_from\]: '@nope' names no cell; use @LABEL of a cell "
                            r"with save_weights = true \(pretrain\)")),
    ("save_weights = true\n", "", (r"\[cells\[1\].set.model.init_from\]: cell 'pretrain' does not save its "
                                   "weights; add save_weights = true to it")),
    ('"model.frozen" = ["1"]', '"model.frozen" = ["9"]',
     r"\[cells\[1\]\]: cell 'finetune' \(task mlp_mnist\): \[model.frozen\[0\]\] '9' is neither a layer type"),
    ('grid = { "optimizer.lr" = [0.1, 0.01] }', 'grid = { "optimizer.lr" = 0.1 }',
     r"\[cells\[2\].grid.optimizer.lr\]: expected a non-empty list of values"),
    ('set = { dataset = { name = "digits" } }', 'set = { dataset = { name = "digits" }, "training.batch_size" = -1 }',
     r"\[cells\[2\]\]: cell 'lr lr=0.1' \(task mlp_mnist\): \[training.batch_size\] -1 is too small"),
    ('set = { dataset = { name = "digits" } }', 'set = { dataset = { name = "digits" }, optimzer = { lr = 1 } }',
     r"\[optimzer\] unknown key; did you mean 'optimizer'\?"),
    ('label = "finetune"', 'label = "pretrain"', r"\[cells\[1\].label\]: label 'pretrain' is used twice"),
    ('[profiles.quick]\n"training.epochs" = 1\n', "", r"\[profiles\]: no profile 'quick'"),
]


@pytest.mark.parametrize("old,new,pattern", BAD, ids=[b[2][:40] for b in BAD])
def test_study_errors_are_one_line_naming_file_key_and_fix(tmp_path, old, new, pattern):
    assert old in STUDY
    path = write(tmp_path, STUDY.replace(old, new, 1))
    with pytest.raises(SpecError) as info:
        load_study(path, get_registry(), "quick")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert re.search(pattern, message), message


def test_a_reference_cycle_is_an_error(tmp_path):
    text = STUDY.replace('set = { "dataset.name" = "digits" }\n', 'set = { "model.init_from" = "@finetune" }\n', 1)
    text = text.replace('"model.frozen" = ["1"] }', '"model.frozen" = ["1"] }\nsave_weights = true')
    with pytest.raises(SpecError, match=r"\[cells\]: cells 'pretrain', 'finetune' start from each other's "
                                        r"weights in a cycle"):
        load_study(write(tmp_path, text), get_registry())


# ---------------------------------------------------------------------------------------------
# Planning and running
# ---------------------------------------------------------------------------------------------

def test_plan_points_each_backend_at_its_own_checkpoint(tmp_path):
    study = load_study(write(tmp_path, STUDY), get_registry(), "quick")
    cells, tags, needs = plan_cells(study, ["numpy", "torch"], run_id="r1", run_dir=tmp_path / "r1", threads=1)
    assert len(cells) == 8 and len({c.cell_id for c in cells}) == 8
    by = {(tags[c.cell_id]["label"], c.backend): c for c in cells}
    for backend in ("numpy", "torch"):
        source, target = by[("pretrain", backend)], by[("finetune", backend)]
        assert source.save_weights == str((tmp_path / "r1" / "weights").resolve())
        assert target.save_weights is None
        assert target.overrides["model.init_from"] == f"{source.save_weights}/{source.cell_id}.npz"
        assert needs[target.cell_id] == source.cell_id
    tag = tags[by[("finetune", "torch")].cell_id]
    assert (tag["name"], tag["kind"], tag["init_from"], tag["order"]) == ("study", "transfer", "pretrain", 1)


class FakeExecutor:
    def __init__(self, fail: set[str]):
        self.fail, self.ran = fail, []

    def run(self, cells, run_dir, on_record, on_start, on_output):
        for cell in cells:
            self.ran.append(cell.cell_id)
            on_record(cell, {"cell_id": cell.cell_id, "status": "failed" if cell.backend in self.fail else "ok"})


def test_a_cell_whose_source_failed_is_not_run_and_says_why(tmp_path):
    study = load_study(write(tmp_path, STUDY), get_registry(), "quick")
    cells, tags, needs = plan_cells(study, ["numpy", "torch"], run_id="r1", run_dir=tmp_path, threads=1)
    inner = FakeExecutor(fail={"torch"})
    records = []
    StudyExecutor(inner, tags, needs, "quick").run(cells, tmp_path, lambda c, r: records.append(r),
                                                   lambda c: None, lambda line: None)
    blocked = [r for r in records if r["cell_id"] not in inner.ran]
    assert len(blocked) == 1 and blocked[0]["backend"] == "torch" and blocked[0]["status"] == "failed"
    assert "starts from the weights of cell 'pretrain' (torch), which failed" in blocked[0]["error"]
    assert all(r["study"]["name"] == "study" and r["profile"] == "quick" for r in records)


def test_bench_study_lr_sweep_end_to_end(bench, tmp_path):
    result = bench("study", "lr_sweep", "--backend", "numpy", "--profile", "quick", "--threads", "1",
                   "--out", str(tmp_path / "out"), "--no-progress",
                   "--set", "training.epochs=2", "--set", "dataset.train_limit=300")
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*.json") if p.name != "run.json"]
    assert sorted(r["study"]["label"] for r in records) == ["lr=0.001", "lr=0.01", "lr=0.1"]
    assert all(r["status"] == "ok" and r["study"]["name"] == "lr_sweep" and r["profile"] == "quick"
               and r["metrics"]["epochs_run"] == 2 for r in records)
    (report,) = (tmp_path / "out").rglob("report.html")
    html = report.read_text()
    section = html[html.index('<section class="card" id="studies">'):]
    section = section[:section.index("</section>")]
    assert 'class="study"' in section and "Learning rate: 0.1, 0.01, 0.001" in section
    assert section.count("<img") == 3 and "<code>--set optimizer.lr=3</code>" in section


def test_bench_study_errors_exit_2_in_one_line(bench, tmp_path):
    for args, fragment in ((["study", "lr_swep"], "unknown study 'lr_swep'"),
                           (["study", str(write(tmp_path, STUDY.replace("kind", "knd")))], "[study.knd]: unknown key"),
                           (["study", "lr_sweep", "--backend", "nope"], "unknown backend 'nope'")):
        result = bench(*args)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("bench: error: ") and fragment in line
    listing = bench("list", "studies")
    assert listing.returncode == 0 and "vanishing_gradients" in listing.stdout


# ---------------------------------------------------------------------------------------------
# Spec features the studies use
# ---------------------------------------------------------------------------------------------

LAYERS = [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"}, {"type": "batchnorm"},
          {"type": "residual", "layers": [{"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"}]},
          {"type": "flatten"}, {"type": "dense", "units": 4}]


def _analyze(frozen):
    raw = {"dataset": {"name": "synthetic"}, "model": {"layers": LAYERS, "frozen": frozen},
           "optimizer": {"name": "sgd", "lr": 0.1}, "training": {"batch_size": 2, "epochs": 1}}
    spec = task_from_dict(raw, "t.toml")
    return analyze(spec.model, (3, 4, 4), 4, spec.source)


def test_frozen_types_and_paths_are_not_trainable():
    full = _analyze([])
    info = _analyze(["conv2d", "1"])
    frozen = {p.name for p in info.params if p.frozen}
    assert frozen == {"0.weight", "0.bias", "1.gamma", "1.beta", "2.body.0.weight", "2.body.0.bias"}
    assert not any(p.trainable for p in info.params if p.frozen)
    assert {p.name for p in info.params if p.is_state} == {"1.running_mean", "1.running_var"}
    assert info.trainable_count == full.trainable_count - sum(int(np.prod(p.shape)) for p in info.params if p.frozen)
    assert {p.name for p in _analyze(["2"]).params if p.frozen} == {"2.body.0.weight", "2.body.0.bias"}


@pytest.mark.parametrize("frozen,fragment", [
    (["conv"], "[model.frozen[0]]: 'conv' is neither a layer type nor a layer path of this model"),
    (["dropout"], "[model.frozen[0]]: the model has no dropout layer to freeze"),
    (["conv2d", "1", "4"], "[model.frozen]: every parameter of the model is frozen"),
])
def test_bad_frozen_entries_name_the_fix(frozen, fragment):
    with pytest.raises(SpecError) as info:
        _analyze(frozen)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_grad_norms_and_eval_train_are_recorded_per_epoch():
    from fwbench.backend import BuildRequest
    from fwbench.datasets.pipeline import Prepared
    from fwbench.model import initial_weights
    from fwbench.training import layer_grad_norms, train
    from fwbench_numpy.backend import NumpyBackend

    layers = [{"type": "flatten"}, {"type": "dense", "units": 5, "activation": "sigmoid"},
              {"type": "dense", "units": 3}]
    raw = {"dataset": {"name": "synthetic"}, "model": {"layers": layers},
           "optimizer": {"name": "sgd", "lr": 0.1},
           "training": {"batch_size": 4, "epochs": 3, "record_grad_norms": True, "eval_train": True}}
    task = task_from_dict(raw, "<test>")
    info = analyze(task.model, (1, 2, 2), 3)
    trainer = NumpyBackend().build(BuildRequest(task, info, initial_weights(task.model, info, 0), "cpu", 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 16)
    data = Prepared(x, y, x[:4], y[:4], x[:4], y[:4], ("a", "b", "c"), False, {})
    metrics = train(task, trainer, data, info).metrics
    rows = metrics["history"]
    assert [sorted(r["grad_norms"]) for r in rows] == [["1", "2"]] * 3
    _, _, grads = trainer.loss_and_grads(trainer.to_device(x[:4], y[:4]))  # the probe batch, final weights
    np.testing.assert_allclose(rows[-1]["grad_norms"]["2"], layer_grad_norms(grads)["2"], rtol=1e-6)
    assert all(0 <= r["train_eval_accuracy"] <= 1 for r in rows)
    assert metrics["final_train_accuracy"] == rows[-1]["train_eval_accuracy"]


def test_label_noise_flips_exactly_that_fraction_of_training_labels_only():
    from fwbench.datasets.base import Arrays
    from fwbench.datasets.pipeline import noisy_labels, prepare
    from fwbench.spec import DatasetSpec

    y = np.arange(1000) % 10
    noisy = noisy_labels(y, 0.2, 10, seed=3)
    assert (noisy != y).sum() == 200 and noisy.min() >= 0 and noisy.max() <= 9
    np.testing.assert_array_equal(noisy, noisy_labels(y, 0.2, 10, seed=3))

    class Ten:
        num_classes, max_value = 10, 255.0

    x = np.zeros((1000, 1, 2, 2), np.uint8)
    arrays = Arrays(x, y, x[:100], y[:100], tuple("0123456789"))
    clean = prepare(arrays, Ten(), DatasetSpec(name="d", validation_split=0.5), 0, "float32")
    data = prepare(arrays, Ten(), DatasetSpec(name="d", validation_split=0.5, label_noise=0.2), 0, "float32")
    assert (data.y_train != clean.y_train).sum() == 100
    np.testing.assert_array_equal(data.y_val, clean.y_val)
    np.testing.assert_array_equal(data.y_test, clean.y_test)


def test_class_subset_keeps_and_relabels_classes():
    from fwbench.datasets.subset import ClassSubset

    digits = get_registry().get_dataset("digits")
    subset = ClassSubset(digits, (7, 3))
    arrays = subset.load(Path("."))
    assert subset.num_classes == 2 and subset.name == "digits[7,3]" and arrays.class_names == ("7", "3")
    full = digits.load(Path("."))
    assert set(arrays.y_train) == {0, 1} and len(arrays.y_train) == int(np.isin(full.y_train, [3, 7]).sum())
    np.testing.assert_array_equal(arrays.x_train[arrays.y_train == 0], full.x_train[full.y_train == 7])
    with pytest.raises(SpecError, match=r"\[dataset.classes\]: \[12\] are not classes of 'digits'"):
        ClassSubset(digits, (1, 12))


# ---------------------------------------------------------------------------------------------
# The report section of every kind, from made-up records (no training)
# ---------------------------------------------------------------------------------------------

def _record(backend: str, kind: str, label: str, order: int, acc: float, **extra) -> dict:
    history = []
    for epoch in range(1, 4):
        row = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": acc * epoch / 3, "val_loss": 1.2 / epoch,
               "val_accuracy": acc * epoch / 3 - 0.05, "train_eval_accuracy": min(1.0, acc + 0.1 * epoch),
               "train_time_s": 0.5 * epoch,
               "grad_norms": {str(i): 10.0 ** (-4 + i) * epoch for i in range(1, 5)}}
        history.append(row)
    return {"schema_version": 1, "run_id": "run1", "cell_id": f"{backend}-{label}", "backend": backend,
            "task": "t", "dataset": "digits", "device": "cpu", "status": "ok", "params": 1234, "overrides": {},
            "metrics": {"test_accuracy": acc, "history": history, "train_time_s": 1.5,
                        "step_time_s": {"median": 0.002}, "final_train_accuracy": 1.0, "final_val_accuracy": acc},
            "study": {"name": f"s_{kind}", "title": f"Study <{kind}>", "kind": kind, "label": label, "order": order,
                      "description": "Look <here>.\n\n- one `x`\n- two", "saves_weights": label == "pre",
                      "note": "a note"}, **extra}


@pytest.mark.parametrize("kind", STUDY_KINDS)
def test_every_study_kind_renders_its_section(kind):
    from fwbench.report import render
    from fwbench.report.studies import study_blocks

    labels = ["pre", "a", "b"] if kind == "transfer" else ["a", "b"]
    records = [_record(b, kind, lab, i, 0.5 + 0.2 * i) for i, lab in enumerate(labels) for b in ("numpy", "jax")]
    failed = copy.deepcopy(records[-1])
    failed.update(backend="torch", cell_id="torch-x", status="failed", error="boom <b>")
    (block,) = study_blocks(records + [failed])
    assert block["kind"] == kind and len(block["figures"]) >= 2
    assert [b["name"] for b in block["table"]["backends"]] == ["numpy", "torch", "jax"]
    assert block["paragraphs"] == [{"kind": "p", "text": "Look <here>."}, {"kind": "ul", "items": ["one `x`", "two"]}]
    html = render(records + [failed])
    assert f"Study &lt;{kind}&gt;" in html and "Look &lt;here&gt;." in html and "<li>one <code>x</code></li>" in html
    assert "boom &lt;b&gt;" in html and "<b>boom" not in html
