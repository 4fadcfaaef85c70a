"""Microbenchmark specs: the shipped files load, bad input is named precisely, overrides apply."""
from __future__ import annotations

from pathlib import Path

import pytest
from fwbench.backend import Backend
from fwbench.errors import SpecError
from fwbench.micro.spec import BenchSpec, Conv2DCase, OptimCase, ScalingCase
from fwbench.spec import TaskSpec, is_bench_spec, load_task

BENCH_DIR = Path(__file__).resolve().parents[2] / "tasks" / "bench"
SHIPPED = sorted(BENCH_DIR.glob("*.toml"))

CONV = """
[task]
family = "conv2d"

[bench]
repeats = 5

[[cases]]
name = "a"
batch = 2
channels = 3
size = 8
filters = 4
kernel = 3
"""


def write(tmp_path, text, name="bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_family_ships_a_spec_that_loads_in_both_profiles():
    families = set()
    for path in SHIPPED:
        for profile in (None, "quick"):
            spec = load_task(path, profile=profile)
            assert isinstance(spec, BenchSpec) and is_bench_spec(spec) and spec.cases
            families.add(spec.family)
    assert families == {"conv2d", "dense", "pooling", "batchnorm", "optim_step", "param_scaling"}


def test_conv2d_sweep_and_its_quick_profile():
    full, quick = load_task(BENCH_DIR / "conv2d.toml"), load_task(BENCH_DIR / "conv2d.toml", profile="quick")
    assert 8 <= len(full.cases) <= 10 and len(quick.cases) == 3
    assert {c.kernel for c in full.cases} >= {1, 3, 5, 7} and {c.stride for c in full.cases} == {1, 2}
    assert quick.bench.repeats < full.bench.repeats
    resnet_stem = next(c for c in full.cases if c.name == "resnet_stem")
    assert (resnet_stem.pad, resnet_stem.out_size) == (3, 112)


def test_training_tasks_still_load_as_task_specs():
    spec = load_task(Path(__file__).resolve().parents[2] / "tasks" / "mlp_mnist.toml")
    assert isinstance(spec, TaskSpec) and not is_bench_spec(spec) and spec.task.family == "train"


def test_per_case_overrides_and_aliases(tmp_path):
    path = write(tmp_path, CONV)
    spec = load_task(path, {"dtype": "float64", "cases.batch": 5, "repeats": 4})
    assert spec.bench.dtype == "float64" and spec.bench.repeats == 4 and spec.cases[0].batch == 5
    scaling = load_task(BENCH_DIR / "param_scaling.toml", profile="quick")
    assert all(isinstance(c, ScalingCase) and c.inputs == (28, 64, 128) for c in scaling.cases)
    optim = load_task(BENCH_DIR / "optim_step.toml", profile="quick")
    assert isinstance(optim.cases[0], OptimCase) and max(optim.cases[0].params) == 1_000_000
    assert optim.convergence.steps == 30


def test_defaults_of_a_minimal_conv_case(tmp_path):
    (case,) = load_task(write(tmp_path, CONV)).cases
    assert isinstance(case, Conv2DCase) and case.pad == 1 and case.out_size == 8
    assert case.passes == ("forward", "backward_data", "backward_weights", "forward_backward")


BAD = [
    ("bad family", CONV.replace('"conv2d"', '"conv3d"'), "[task.family]", "did you mean 'conv2d'"),
    ("unknown case key", CONV.replace("kernel = 3", "kernal = 3"), "[cases[0].kernal]", "did you mean 'kernel'"),
    ("negative size", CONV.replace("size = 8", "size = -3"), "[cases[0].size]", "use a value >= 1"),
    ("kernel larger than input", CONV.replace("kernel = 3", 'kernel = 9\npadding = "valid"'), "[cases[0].kernel]",
     "larger than the padded input 8x8"),
    ("even kernel same", CONV.replace("kernel = 3", "kernel = 4"), "[cases[0].padding]", "odd kernel"),
    ("unknown pass", CONV + 'passes = ["forwards"]\n', "[cases[0].passes[0]]", "did you mean 'forward'"),
    ("no cases", CONV.split("[[cases]]")[0], "[cases]", "add at least one [[cases]]"),
    ("unknown bench key", CONV.replace("repeats = 5", "repeat = 5"), "[bench.repeat]", "did you mean 'repeats'"),
    ("too few repeats", CONV.replace("repeats = 5", "repeats = 1"), "[bench.repeats]", ">= 3"),
    ("convergence outside optim_step", CONV + "\n[convergence]\nsteps = 3\n", "[convergence]",
     "only for family \"optim_step\""),
    ("pool window", '[task]\nfamily = "pooling"\n[[cases]]\nbatch = 1\nchannels = 1\nsize = 2\nwindow = 3\n',
     "[cases[0].window]", "larger than the input 2x2"),
    ("unknown optimizer", '[task]\nfamily = "optim_step"\n[[cases]]\noptimizers = ["adm"]\nparams = [10]\n',
     "[cases[0].optimizers[0]]", "did you mean 'adam'"),
    ("zero params", '[task]\nfamily = "optim_step"\n[[cases]]\nparams = [10, 0]\n', "[cases[0].params[1]]", ">= 1"),
    ("convergence lr", '[task]\nfamily = "optim_step"\n[[cases]]\nparams = [10]\n[convergence.lr]\nadm = 0.1\n',
     "[convergence.lr.adm]", "did you mean 'adam'"),
    ("scaling model too deep", ('[task]\nfamily = "param_scaling"\n[[cases]]\nmodel = "m"\ninputs = [4]\n'
     'layers = [{ type = "conv2d", filters = 2, kernel = 5 }, { type = "flatten" }, { type = "dense", units = 10 }]\n'),
     "[cases[0].inputs[0]]", "cannot take 1x4x4 inputs"),
]


@pytest.mark.parametrize("text,key,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_bench_specs_are_named_precisely(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_task(path)
    message = str(err.value)
    assert str(path) in message and key in message and fragment in message, message
    assert "\n" not in message


def test_unknown_profile_of_a_bench_spec(tmp_path):
    with pytest.raises(SpecError, match="no profile 'fast'"):
        load_task(write(tmp_path, CONV), profile="fast")


class _NoOpsBackend(Backend):
    name = "no_ops"

    def version(self):
        return "0"

    def configure(self, *, device, threads):
        return {}

    def build(self, request):
        raise NotImplementedError


def test_a_backend_without_ops_module_says_how_to_add_one():
    with pytest.raises(NotImplementedError, match="has no microbenchmark ops; add an ops.py with make_ops"):
        _NoOpsBackend().ops("cpu", "float32")


def test_the_builtin_backends_find_their_ops_module():
    from fwbench_numpy.backend import NumpyBackend

    ops = NumpyBackend().ops("cpu", "float32")
    assert type(ops).__module__ == "fwbench_numpy.ops" and ops.compile_info["mode"] == "eager"
