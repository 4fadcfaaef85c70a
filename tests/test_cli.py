"""The CLI as a user meets it: help, listings, and bad input answered in one line with exit code 2."""
from __future__ import annotations

import pytest

BAD_INPUT = [
    (["run", "--backend", "nope"], "unknown backend 'nope'"),
    (["run", "--backend", "toy", "--task", "nope"], "unknown task 'nope'"),
    (["run", "--backend", "toy", "--task", "missing/spec.toml"], "unknown task file 'missing/spec.toml'"),
    (["run", "--backend", "toy", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "--backend", "toy", "--set", "lr"], "bad --set 'lr'"),
    (["run", "--backend", "toy", "--set", "optimizer.name=adm"], "did you mean 'adam'"),
    (["run", "--backend", "toy", "--set", "training.batch_size=-4"], "[training.batch_size]: -4 is too small"),
    (["run", "--backend", "toy", "--set", "training.epochs=ten"], "expected an integer, got str 'ten'"),
    (["run", "--backend", "toy", "--set", "dataset.validation_split=0"], "early stopping needs a validation set"),
    (["run", "--backend", "toy", "--profile", "fast"], "invalid choice: 'fast'"),
    (["run", "--backend", "toy", "--threads", "0"], "expected a positive integer"),
    (["run", "--backend", "toy", "--threads", "4096"], "more than the"),
    (["run", "--backend", "toy", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--backend", "toy", "--timeout", "-1"], "expected a positive number"),
    (["run", "--backend", "toy", "--executor", "ray"], "unknown executor 'ray'"),
    (["run", "--backend", "toy", "--resume"], "--resume: no earlier run"),
    (["run", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["list", "models"], "invalid choice: 'models'"),
    (["data", "fetch", "nope"], "unknown dataset 'nope'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("args,fragment", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(bench, args, fragment):
    result = bench(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_malformed_spec_file_names_file_and_line(bench, tmp_path):
    spec = tmp_path / "broken.toml"
    spec.write_text("[dataset]\nname = \"digits\"\n[model\n")
    result = bench("run", "--backend", "toy", "--task", str(spec))
    assert result.returncode == 2
    assert str(spec) in result.stderr and "not valid TOML" in result.stderr and "line 3" in result.stderr


def test_missing_dataset_offline_gives_the_alternatives(bench, tmp_path):
    result = bench("run", "--backend", "toy", "--task", "mlp_mnist", "--data-dir", str(tmp_path / "empty"),
                   env={"FWBENCH_MIRRORS_MNIST": "http://127.0.0.1:9/"})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "train-images-idx3-ubyte.gz" in line and "--dataset mnist_5k" in line and "--dataset digits" in line
    assert str(tmp_path / "empty") in line


def test_unavailable_backend_says_how_to_install():
    from fwbench.backend import Backend
    from fwbench.errors import BackendUnavailable
    from fwbench.registry import Registry
    from fwbench.run.matrix import pick_backends

    class Missing(Backend):
        name, requires, extra = "ghost", ("no_such_framework_xyz",), "ghost"

        def version(self):
            return "0"

        def configure(self, *, device, threads):
            return {}

        def build(self, request):
            raise AssertionError("never built")

    registry = Registry()
    registry.backend(Missing())
    availability = registry.get_backend("ghost").availability()
    assert not availability.ok
    assert str(availability) == ("unavailable: no_such_framework_xyz not installed — "
                                 "install with: pip install 'fwbench[ghost]'")
    with pytest.raises(BackendUnavailable, match="install with"):
        pick_backends(registry, ["ghost"])


def test_help_everywhere(bench):
    for args in (["--help"], ["run", "--help"], ["list", "--help"], ["data", "fetch", "--help"]):
        result = bench(*args)
        assert result.returncode == 0 and "usage: bench" in result.stdout


def test_list_tasks_and_datasets(bench):
    tasks = bench("list", "tasks")
    assert all(t in tasks.stdout for t in ("mlp_mnist", "cnn_mnist", "cnn_cifar", "resnet_cifar"))
    datasets = bench("list", "datasets")
    assert "mnist_5k" in datasets.stdout and "digits" in datasets.stdout and "offline" in datasets.stdout
    assert "bench data fetch cifar10" in datasets.stdout


def test_info_reports_blas_and_threads(bench):
    result = bench("info")
    assert result.returncode == 0 and "blas" in result.stdout and "logical_cores" in result.stdout


@pytest.mark.parametrize(("command", "handler", "resumable"), [(["run", "-b", "numpy"], "run.cmd_run", True),
                                                               (["check", "-b", "numpy"], "check.cmd_check", False)])
def test_an_interrupt_says_how_to_continue_only_where_a_command_can(monkeypatch, capsys, command, handler, resumable):
    """Ctrl-C exits 130; only a command that keeps records as it goes (``--resume``) says to resume."""
    import importlib

    from fwbench import cli

    def interrupted(args):
        raise KeyboardInterrupt

    module, name = handler.split(".")
    monkeypatch.setattr(importlib.import_module(f"fwbench.commands.{module}"), name, interrupted)
    assert cli.main(command) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: interrupted") and ("--resume" in err) == resumable
