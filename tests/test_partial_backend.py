"""A partial outside backend (the toy declines conv tasks): skipped cells, `bench check` per
task, no peak measured with it; and the contract's small print (compile_info, dataset shapes)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path


def test_bench_run_with_a_partial_backend_skips_its_cell_with_the_reason_and_exits_0(bench, tmp_path):
    result = bench("run", "-t", "cnn_mnist", "--dataset", "digits", "-b", "toy", "--no-progress",
                   "--peak", "100", "--out", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "toy · cnn_mnist: not applicable: conv2d, maxpool layers" in result.stdout
    from fwbench.records.results import load_records

    (record,) = load_records([tmp_path / "results"])
    assert record["status"] == "skipped" and record["dataset"] == "digits"
    assert record["error"].startswith("not applicable: conv2d")


def test_bench_check_reports_supported_tasks_and_skips_the_others(bench):
    result = bench("check", "--backend", "toy")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    counts = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped \(not applicable\)", result.stdout)
    # the 3 conv tasks (training and inference rows) and step:rmsprop/adagrad of mlp_mnist
    assert counts and int(counts[1]) > 0 and counts[2] == "0" and counts[3] == "8", result.stdout[-300:]
    assert any("mlp_mnist" in line and "inference" in line and "pass" in line for line in lines)
    for task in ("cnn_mnist", "cnn_cifar", "resnet_cifar"):
        assert any(task in line and "skipped not applicable" in line for line in lines), task
    assert any("mlp_mnist" in line and "curve" in line and "pass" in line for line in lines)
    assert "loss_and_grads" not in result.stdout


def test_each_check_stands_alone_even_when_a_task_kills_the_check_process(toy_site, tmp_path, monkeypatch):
    """A segfault inside one task fails that task; the process is restarted for the others, and
    an exception fails only its own task."""
    from fwbench.conformance.runner import run_checks

    spec = Path(__file__).resolve().parents[1] / "tasks" / "mlp_mnist.toml"
    crashing, raising = tmp_path / "crashing.toml", tmp_path / "raising.toml"
    crashing.write_text(spec.read_text() + '\n[backend]\nfault = "segfault"\n')
    raising.write_text(spec.read_text() + '\n[backend]\nfault = "exception"\n')
    monkeypatch.setenv("PYTHONPATH", str(toy_site))
    checks = run_checks(["toy"], [str(crashing), str(raising), "cnn_mnist", "mlp_mnist"])
    by_task = {}
    for check in checks:
        by_task.setdefault(check.task, []).append(check)
    (crashed,) = by_task[str(crashing)]
    assert not crashed.passed and crashed.note.startswith("check process died in this task (exit -11)")
    raised, served = by_task[str(raising)]  # the fault is in train_step: the inference check still runs
    assert not raised.passed and raised.note == "raised RuntimeError: toy backend: injected failure"
    assert served.quantity == "inference" and served.passed
    declined = by_task["cnn_mnist"]
    assert [c.quantity for c in declined] == ["task", "inference"]
    assert all(c.skipped and c.note.startswith("not applicable: conv2d") for c in declined)
    assert sorted(c.quantity for c in by_task["mlp_mnist"] if c.skipped) == ["rule:adagrad", "rule:rmsprop"]
    assert {"logits", "loss", "curve", "rule:adam", "step:adam"} <= {c.quantity for c in by_task["mlp_mnist"]}
    assert all(c.passed for c in by_task["mlp_mnist"] if not c.skipped)


def test_compile_info_belongs_to_each_trainer():
    from fwbench.backend import Trainer

    class A(Trainer):
        to_device = train_step = predict = get_weights = set_weights = num_trainable = None

    class B(A):
        pass

    a, b = A(), B()
    a.compile_info["mode"] = "jit"
    assert b.compile_info == {} and A().compile_info == {}
    b.compile_info = {"mode": "xla"}
    assert a.compile_info == {"mode": "jit"} and b.compile_info == {"mode": "xla"}


def test_check_takes_the_input_shape_from_the_dataset_registry(monkeypatch):
    """A dataset a plugin registers is checked at its own shape and class count."""
    from fwbench.conformance.checks import task_input
    from fwbench.datasets.base import Dataset
    from fwbench.plugins import get_registry
    from fwbench.spec import load_task

    class Tiny(Dataset):
        name, input_shape, num_classes, offline = "tiny_plugin_set", (2, 5, 7), 3, True

        def load(self, data_dir):
            raise AssertionError("not needed")

    registry = get_registry()
    monkeypatch.setitem(registry.datasets, Tiny.name, Tiny())
    task = load_task(registry.get_task_file("mlp_mnist"))
    task = dataclasses.replace(task, dataset=dataclasses.replace(task.dataset, name=Tiny.name))
    assert task_input(task) == ((2, 5, 7), 3)
    digits = dataclasses.replace(task, dataset=dataclasses.replace(task.dataset, name="digits"))
    assert task_input(digits) == ((1, 8, 8), 10)


def test_the_run_measures_no_peak_with_a_backend_without_ops(monkeypatch):
    from fwbench.backend import Availability
    from fwbench.micro import peak
    from fwbench.run.matrix import _machine_peak

    class Fake:
        def __init__(self, ops):
            self.ops = ops

        def availability(self):
            return Availability(True)

        def has_ops(self):
            return self.ops

    class Registry:
        def __init__(self):
            self.backends = {"numpy": Fake(True), "outside": Fake(False)}

    seen = {}

    def resolve(run_backends, available, threads, **kwargs):
        seen.update(run=run_backends, available=available)

    monkeypatch.setattr(peak, "resolve_peak", resolve)
    assert _machine_peak(Registry(), "auto", 1, ["outside", "numpy"]) is None
    assert seen == {"run": ["numpy"], "available": ["numpy"]}


def test_has_ops_looks_for_the_ops_module_of_the_backend_package():
    from fwbench.backend import Backend
    from fwbench.plugins import get_registry

    class Bare(Backend):  # defined in a test module: no package, no ops.py
        name = "bare"
        version = configure = build = None

    class OwnOps(Bare):
        def ops(self, device, dtype, options=None):
            raise NotImplementedError

    assert get_registry().backends["numpy"].has_ops()
    assert not Bare().has_ops()
    assert OwnOps().has_ops()
