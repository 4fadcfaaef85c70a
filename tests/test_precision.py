"""Precision policies (`fwbench.precision`): the spec axis, where a backend declines one, the NumPy
reference's rounding (exactly ml_dtypes' where the policy rounds), and the precision in records."""
from __future__ import annotations

import sys

import ml_dtypes
import numpy as np
import pytest
from fwbench import precision
from fwbench.backend import Backend, BuildRequest, precision_availability
from fwbench.errors import SpecError
from fwbench.model import analyze, initial_weights
from fwbench.spec import load_task, task_from_dict

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "numpy_backend"))
from numpy_helpers import make_task

DENSE = [{"type": "flatten"}, {"type": "dense", "units": 5, "activation": "tanh"},
         {"type": "dense", "units": 3}]


def _bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def test_precision_is_a_spec_axis_with_a_short_form(tmp_path):
    task = load_task("tasks/mlp_mnist.toml")
    assert task.training.precision == "fp32"
    assert load_task("tasks/mlp_mnist.toml", {"precision": "bf16"}).training.precision == "bf16"
    with pytest.raises(SpecError, match=r"training.precision.*did you mean 'bf16'"):
        load_task("tasks/mlp_mnist.toml", {"precision": "bf61"})
    with pytest.raises(SpecError, match=r"training.precision.*float32"):
        load_task("tasks/mlp_mnist.toml", {"precision": "fp16", "dtype": "float64"})


def test_unit_roundoff_of_each_policy():
    assert precision.policy("bf16").unit_roundoff == 2.0 ** -8
    assert precision.policy("fp16").unit_roundoff == 2.0 ** -11
    assert precision.policy("fp32").unit_roundoff == 2.0 ** -24
    assert precision.policy("fp16").loss_scaling and not precision.policy("bf16").loss_scaling


class _Fp32Only(Backend):
    name = "fp32only"

    def version(self):
        return "0"

    def configure(self, *, device, threads):
        return {}

    def build(self, request):
        raise AssertionError("not built")


class _Mixed(_Fp32Only):
    name = "mixed"
    precisions = ("fp32", "tf32", "bf16")


def test_a_backend_declines_a_policy_it_does_not_list_and_tf32_on_the_cpu():
    bf16 = load_task("tasks/mlp_mnist.toml", {"precision": "bf16"})
    tf32 = load_task("tasks/mlp_mnist.toml", {"precision": "tf32"})
    got = precision_availability(_Fp32Only(), bf16, "cpu")
    assert not got.ok and "bf16" in got.reason and "fp32" in got.reason
    assert precision_availability(_Mixed(), bf16, "cpu").ok
    assert not precision_availability(_Mixed(), tf32, "cpu").ok
    assert precision_availability(_Mixed(), tf32, "gpu").ok


def test_numpy_bf16_rounds_exactly_where_the_policy_rounds():
    from numpy_helpers import make_trainer

    task = make_task(DENSE, dtype="float32", extra={"training": {
        "batch_size": 4, "epochs": 1, "dtype": "float32", "precision": "bf16"}})
    trainer, _, w = make_trainer(task, (2, 2, 2), 3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 2, 2, 2)).astype(np.float32), np.array([0, 1, 2, 1])
    logits, _, grads = trainer.loss_and_grads(trainer.to_device(x, y))

    # by hand: inputs, weights, biases rounded; float32 products; each output rounded
    x0 = _bf16(x.reshape(4, -1))
    h_pre = _bf16(x0 @ _bf16(w["1.weight"]) + _bf16(w["1.bias"]))
    h = _bf16(np.tanh(h_pre))
    z = _bf16(h @ _bf16(w["2.weight"]) + _bf16(w["2.bias"]))
    np.testing.assert_array_equal(logits, z)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = _bf16((p - np.eye(3, dtype=np.float32)[y]) / 4)  # float32 loss gradient, rounded
    np.testing.assert_array_equal(grads["2.weight"], _bf16(h.T @ dz))
    np.testing.assert_array_equal(grads["2.bias"], _bf16(dz.sum(0)))
    dh = _bf16(dz @ _bf16(w["2.weight"]).T)
    dpre = _bf16(dh * (1 - h * h))
    np.testing.assert_array_equal(grads["1.weight"], _bf16(x0.T @ dpre))
    # and float32 gives other values (the policy is really applied)
    fp32, _, _ = make_trainer(make_task(DENSE, dtype="float32"), (2, 2, 2), 3)
    assert not np.array_equal(fp32.loss_and_grads(fp32.to_device(x, y))[0], logits)


def test_numpy_fp16_skips_a_step_whose_scaled_gradients_overflow_and_halves_the_scale():
    from numpy_helpers import make_trainer

    task = make_task(DENSE, dtype="float32", extra={"training": {
        "batch_size": 4, "epochs": 1, "dtype": "float32", "precision": "fp16"}})
    trainer, _, _ = make_trainer(task, (2, 2, 2), 3)
    x, y = np.random.default_rng(1).normal(size=(4, 2, 2, 2)).astype(np.float32), np.array([0, 1, 2, 0])
    batch = trainer.to_device(x, y)
    before = trainer.get_weights()
    trainer.loss_scale.scale = 2.0 ** 40  # every scaled gradient overflows float16
    trainer.train_step(batch, 0.1)
    assert trainer.loss_scale.scale == 2.0 ** 39 and trainer.loss_scale.skipped == 1
    after = trainer.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    trainer.loss_scale.scale = precision.LOSS_SCALE.initial
    trainer.train_step(batch, 0.1)
    assert not np.array_equal(before["2.weight"], trainer.get_weights()["2.weight"])


def test_the_record_says_the_precision_in_force():
    assert precision.recorded({"compile_info": {"precision": {"policy": "bf16"}}}) == "bf16"
    assert precision.recorded({"config": {"training": {"precision": "fp16"}}}) == "fp16"
    assert precision.recorded({}) == "fp32"


@pytest.mark.framework
def test_torch_bf16_step_runs_and_matches_the_reference():
    pytest.importorskip("torch")
    from fwbench.plugins import get_registry

    spec = task_from_dict({**_raw("bf16")}, "<test>")
    info = analyze(spec.model, (1, 4, 4), 3)
    w = initial_weights(spec.model, info, 0, "float32")
    reg = get_registry()
    out = {}
    for name in ("numpy", "torch"):
        backend = reg.get_backend(name)
        backend.configure(device="cpu", threads=1)
        trainer = backend.build(BuildRequest(spec, info, w, "cpu", 3))
        x = np.random.default_rng(0).normal(size=(8, 1, 4, 4)).astype(np.float32)
        batch = trainer.to_device(x, np.arange(8) % 3)
        out[name] = trainer.loss_and_grads(batch)[0]
        trainer.sync(trainer.train_step(batch, 0.01))
        assert trainer.compile_info["precision"]["policy"] == "bf16"
    np.testing.assert_allclose(out["torch"], out["numpy"], rtol=2 ** -7, atol=1e-3)


def _raw(prec: str) -> dict:
    return {"task": {"name": "t"}, "dataset": {"name": "synthetic"},
            "model": {"layers": DENSE}, "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"batch_size": 8, "epochs": 1, "precision": prec}}


def test_the_run_table_shows_a_policy_other_than_fp32():
    from fwbench.run.display import results_table
    from record_samples import example_record
    from rich.console import Console

    plain, mixed = example_record("torch", seed=1), example_record("jax", seed=2)
    mixed["precision"] = "bf16"
    console = Console(width=250, record=True)
    console.print(results_table([plain, mixed]))
    rows = [line for line in console.export_text().splitlines() if "mnist" in line]
    assert any("jax" in row and "· bf16" in row for row in rows)
    assert not any("torch" in row and "bf16" in row for row in rows)


@pytest.mark.slow
def test_bench_run_records_the_precision_and_skips_a_policy_with_its_reason(bench, tmp_path):
    import json

    proc = bench("run", "-b", "numpy", "-t", "mlp_mnist", "--dataset", "digits", "--profile", "quick",
                 "--set", "precision=bf16,tf32", "--set", "epochs=1", "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = {}
    for path in (tmp_path / "out").glob("*/*.json"):
        record = json.loads(path.read_text())
        if "overrides" in record:
            found[record["overrides"].get("precision")] = record
    assert found["bf16"]["status"] == "ok" and found["bf16"]["precision"] == "bf16"
    assert found["bf16"]["compile_info"]["precision"]["compute_dtype"] == "bfloat16"
    assert found["tf32"]["status"] == "skipped" and "tf32" in found["tf32"]["error"]
    assert "precision=bf16" in proc.stdout
