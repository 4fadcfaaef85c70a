"""Specs that cannot run are refused before any cell starts: one line naming file, key and fix, exit 2."""
from __future__ import annotations

import pytest

BASE = """
[dataset]
name = "digits"

{layers}

[[model.layers]]
type = "flatten"

[[model.layers]]
type = "dense"
units = 10

[optimizer]
name = "sgd"
lr = {lr}

[training]
batch_size = 8
epochs = 1
"""


def write(tmp_path, layers: str = "", lr: str = "0.1"):
    path = tmp_path / "outside.toml"
    path.write_text(BASE.format(layers=layers, lr=lr))
    return path


def refused(result, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_in_a_spec_and_in_set(bench, tmp_path, value):
    refused(bench("run", "-b", "numpy", "-t", str(write(tmp_path, lr=value)), "--out", str(tmp_path / "r")),
            "optimizer.lr", "finite")
    refused(bench("run", "-b", "numpy", "-t", str(write(tmp_path)), "--set", f"optimizer.momentum={value}",
                  "--out", str(tmp_path / "r")), "optimizer.momentum", "finite")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("layers, key, fix", [
    ('[[model.layers]]\ntype = "conv2d"\nfilters = 2\nkernel = 9', "model.layers[0].kernel", "smaller kernel"),
    ('[[model.layers]]\ntype = "maxpool"\nsize = 9', "model.layers[0].size", "smaller size"),
    (('[[model.layers]]\ntype = "residual"\nprojection = "none"\n'
      'layers = [{ type = "conv2d", filters = 3, kernel = 3, padding = "same" }]'),
     "model.layers[0]", 'projection = "auto"'),
])
def test_shape_errors_are_refused_before_any_cell(bench, tmp_path, layers, key, fix):
    spec = write(tmp_path, layers)
    refused(bench("run", "-b", "numpy", "-t", str(spec), "--out", str(tmp_path / "r")), str(spec), key, fix)
    assert not (tmp_path / "r").exists()
    refused(bench("check", "-b", "numpy", "-t", str(spec)), key)


def test_a_stride_2_residual_on_an_odd_input_gets_a_strided_projection():
    from fwbench.layers import AvgPool, Conv2D, Residual
    from fwbench.model import analyze, shortcut_stride
    from fwbench.spec import ModelSpec

    model = ModelSpec(layers=(AvgPool(size=3, stride=2),
                              Residual(layers=(Conv2D(filters=4, kernel=3, stride=2, padding="same"),))))
    info = analyze(model, (1, 32, 32))
    assert info.output_shape == (4, 8, 8)  # 32 -> 15 -> 8: a 1x1 stride-2 shortcut maps 15 to 8
    assert shortcut_stride(info.layers[1]) == 2


def test_bench_check_random_runs_from_the_command_line(bench):
    result = bench("check", "--random", "3", "--seed", "1", "--backend", "numpy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 random specs, 0 disagreements" in result.stdout
