"""Task specs: loading, validation errors that name file/key/fix, overrides and grids."""
from __future__ import annotations

import pytest
from fwbench.errors import SpecError, UsageError
from fwbench.layers import Conv2D, Dense, Residual
from fwbench.model import analyze, initial_weights
from fwbench.plugins import get_registry
from fwbench.spec import (
    apply_overrides,
    load_task,
    parse_overrides,
    parse_value,
    spec_to_dict,
    task_from_dict,
)

MINIMAL = """
[dataset]
name = "digits"
[model]
layers = [{ type = "flatten" }, { type = "dense", units = 10 }]
[optimizer]
name = "sgd"
lr = 0.1
[training]
batch_size = 8
epochs = 1
"""


def write(tmp_path, text, name="t.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mlp_mnist_is_the_keras_example():
    spec = load_task(get_registry().get_task_file("mlp_mnist"))
    assert [type(layer) for layer in spec.model.layers][1:] == [Dense, Dense]
    assert spec.optimizer.name == "adam" and spec.training.batch_size == 32 and spec.training.epochs == 10
    assert spec.dataset.validation_split == 0.2
    es = spec.training.early_stopping
    assert (es.monitor, es.patience, es.restore_best) == ("val_loss", 3, True)
    assert analyze(spec.model, (1, 28, 28), 10).trainable_count == 101_770


@pytest.mark.parametrize("task", ["mlp_mnist", "cnn_mnist", "cnn_cifar", "resnet_cifar"])
def test_every_shipped_task_loads_in_both_profiles(task):
    path = get_registry().get_task_file(task)
    full, quick = load_task(path), load_task(path, profile="quick")
    assert quick.training.epochs <= full.training.epochs
    shape = (3, 32, 32) if "cifar" in task else (1, 28, 28)
    info = analyze(full.model, shape, 10, full.source)
    weights = initial_weights(full.model, info, seed=0)
    assert sum(w.size for n, w in weights.items() if "running" not in n) == info.trainable_count


def test_resnet_has_residual_blocks_with_projection():
    spec = load_task(get_registry().get_task_file("resnet_cifar"))
    blocks = [layer for layer in spec.model.layers if isinstance(layer, Residual)]
    assert len(blocks) == 3
    info = analyze(spec.model, (3, 32, 32), 10)
    names = [p.name for p in info.params]
    assert "4.shortcut.weight" in names and "3.shortcut.weight" not in names  # only where shapes change


def test_overrides_grid_and_aliases(tmp_path):
    grid = parse_overrides(["lr=0.1,0.01", "training.epochs=2", "dataset.augment=[\"hflip\"]"])
    assert grid == [{"lr": 0.1, "training.epochs": 2, "dataset.augment": ["hflip"]},
                    {"lr": 0.01, "training.epochs": 2, "dataset.augment": ["hflip"]}]
    spec = load_task(write(tmp_path, MINIMAL), grid[1])
    assert spec.optimizer.lr == 0.01 and spec.training.epochs == 2 and spec.dataset.augment == ("hflip",)


def test_parse_value_types():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("adam") == "adam" and parse_value("[1, 2]") == [1, 2]


def test_spec_round_trips_through_a_record_config(tmp_path):
    spec = load_task(get_registry().get_task_file("resnet_cifar"))
    again = task_from_dict({k: v for k, v in spec_to_dict(spec).items() if k != "source"}, "x")
    assert again.model == spec.model and again.optimizer == spec.optimizer


def test_same_padding_is_symmetric():
    conv = Conv2D(filters=4, kernel=5, padding="same")
    assert conv.pad == 2


# ---- the bad-input corpus: every message names where, what, and the fix -----------------------

BAD_SPECS = [
    ("toml syntax", "[dataset\nname='x'", "", "not valid TOML"),
    ("unknown section", MINIMAL + "\n[optimiser]\nname='sgd'\n", "[optimiser]", "did you mean 'optimizer'"),
    ("unknown key", MINIMAL.replace("lr = 0.1", "lr = 0.1\nlearning_rate = 1"), "[optimizer.learning_rate]", "unknown key"),
    ("wrong type", MINIMAL.replace("batch_size = 8", "batch_size = \"8\""), "[training.batch_size]", "expected an integer"),
    ("bool for int", MINIMAL.replace("epochs = 1", "epochs = true"), "[training.epochs]", "expected an integer"),
    ("negative size", MINIMAL.replace("units = 10", "units = -3"), "[model.layers[1].units]", ">= 1"),
    ("zero lr", MINIMAL.replace("lr = 0.1", "lr = 0"), "[optimizer.lr]", "> 0.0"),
    ("unknown optimizer", MINIMAL.replace("\"sgd\"", "\"adm\""), "[optimizer.name]", "did you mean 'adam'"),
    ("unknown layer", MINIMAL.replace("\"flatten\"", "\"flaten\""), "[model.layers[0].type]", "did you mean 'flatten'"),
    ("unknown activation", MINIMAL.replace("units = 10", "units = 10, activation = \"rleu\""),
     "[model.layers[1].activation]", "did you mean 'relu'"),
    ("unknown schedule", MINIMAL + "\n[schedule]\nname = \"cosin\"\n", "[schedule.name]", "did you mean 'cosine'"),
    ("dropout rate 1", MINIMAL.replace("{ type = \"flatten\" }", "{ type = \"dropout\", rate = 1.0 }"),
     "[model.layers[0].rate]", "< 1.0"),
    ("missing section", MINIMAL.replace("[optimizer]\nname = \"sgd\"\nlr = 0.1\n", ""), "[optimizer]", "missing required key"),
    ("missing key", MINIMAL.replace("lr = 0.1\n", ""), "[optimizer.lr]", "missing required key"),
    ("validation split 1", MINIMAL.replace("name = \"digits\"", "name = \"digits\"\nvalidation_split = 1.0"),
     "[dataset.validation_split]", "< 1.0"),
    ("bad padding word", MINIMAL.replace("{ type = \"flatten\" }", "{ type = \"conv2d\", filters = 2, kernel = 3, padding = \"full\" }"),
     "[model.layers[0].padding]", "unknown value 'full'"),
    ("layer without type", MINIMAL.replace("{ type = \"flatten\" }", "{ units = 3 }"), "[model.layers[0]]", "needs a 'type'"),
    ("early stopping without validation", MINIMAL.replace("name = \"digits\"", "name = \"digits\"\nvalidation_split = 0.0")
     + "\n[training.early_stopping]\npatience = 2\n", "[training.early_stopping.patience]", "validation set"),
    ("unknown augment", MINIMAL.replace("name = \"digits\"", "name = \"digits\"\naugment = [\"flip\"]"),
     "[dataset.augment[0]]", "did you mean 'hflip'"),
    ("empty residual", MINIMAL.replace("{ type = \"flatten\" }", "{ type = \"residual\", layers = [] }"),
     "[model.layers[0].layers]", "at least one layer"),
    ("unknown clip kind", MINIMAL + "\n[clip]\nkind = \"l2\"\n", "[clip.kind]", "expected one of"),
]


@pytest.mark.parametrize("text,key,fragment", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_specs_are_named_precisely(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_task(path)
    message = str(err.value)
    assert str(path) in message and key in message and fragment in message
    assert "\n" not in message


BAD_SHAPES = [
    ("kernel larger than input", "{ type = \"conv2d\", filters = 2, kernel = 11 }", "larger than the padded input"),
    ("dense on images", "{ type = \"dense\", units = 3 }, { type = \"flatten\" }", "add {type = \"flatten\"}"),
    ("pool larger than input", "{ type = \"maxpool\", size = 9 }", "pool size 9 is larger"),
    ("even kernel same padding", "{ type = \"conv2d\", filters = 2, kernel = 2, padding = \"same\" }", "odd kernel"),
]


@pytest.mark.parametrize("layers,fragment", [c[1:] for c in BAD_SHAPES], ids=[c[0] for c in BAD_SHAPES])
def test_impossible_models_fail_at_shape_inference(tmp_path, layers, fragment):
    text = MINIMAL.replace("{ type = \"flatten\" }", layers)
    spec = load_task(write(tmp_path, text))
    with pytest.raises(SpecError) as err:
        analyze(spec.model, (1, 8, 8), 10, spec.source)
    assert fragment in str(err.value)


def test_output_units_must_match_classes(tmp_path):
    spec = load_task(write(tmp_path, MINIMAL.replace("units = 10", "units = 7")))
    with pytest.raises(SpecError, match="10 classes"):
        analyze(spec.model, (1, 8, 8), 10, spec.source)


@pytest.mark.parametrize("item", ["lr", "=3", "lr=", "a..b=1", "lr=0.1,,0.2"])
def test_bad_set_syntax(item):
    with pytest.raises(UsageError, match="--set"):
        parse_overrides([item])


def test_override_cannot_replace_layers(tmp_path):
    with pytest.raises(SpecError, match="layers cannot be set"):
        load_task(write(tmp_path, MINIMAL), {"model.layers": 3})


def test_override_into_a_value_is_rejected():
    with pytest.raises(SpecError, match="is a value, not a table"):
        apply_overrides({"optimizer": {"lr": 1}}, {"optimizer.lr.x": 2}, "f.toml")


def test_unknown_profile(tmp_path):
    with pytest.raises(SpecError, match="no profile 'fast'"):
        load_task(write(tmp_path, MINIMAL), profile="fast")
