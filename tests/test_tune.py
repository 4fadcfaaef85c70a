"""``bench tune``: the search space per backend and device, and the judgement (accuracy within the
tolerance, faster beyond both intervals, else the cell as written stays)."""
from __future__ import annotations

from fwbench.plugins import get_registry
from fwbench.run.tune import judge, search_space, tune_table


def test_the_search_is_small_on_a_cpu_and_starts_with_the_cell_as_written():
    registry = get_registry()
    torch_cpu = search_space(registry.get_backend("torch"), "cpu")
    assert torch_cpu[0] == {"training.precision": "fp32", "dataset.placement": "host",
                            "backend.execution": "eager"}
    assert {t["training.precision"] for t in torch_cpu} == {"fp32", "bf16"}
    assert not any(t.get("backend.execution") == "compiled+cudagraphs" for t in torch_cpu)
    torch_gpu = search_space(registry.get_backend("torch"), "gpu")
    assert {t["training.precision"] for t in torch_gpu} == {"fp32", "tf32", "bf16", "fp16"}
    assert {t["dataset.placement"] for t in torch_gpu} == {"host", "device"}
    assert len(search_space(registry.get_backend("numpy"), "cpu")) == 2  # fp32, bf16; eager only
    assert any(t.get("backend.step") == "functional" for t in search_space(registry.get_backend("flax"), "cpu"))


def _record(precision, execution, speed, ci, acc, status="ok"):
    return {"backend": "torch", "task": "mlp_mnist", "status": status, "precision": precision,
            "cell_id": f"{precision}-{execution}",
            "overrides": {"training.precision": precision, "dataset.placement": "host",
                          "backend.execution": execution},
            "metrics": {"throughput_samples_per_s": speed, "throughput_ci95": ci, "test_accuracy": acc}}


def test_the_fastest_configuration_wins_only_beyond_both_intervals_and_within_the_accuracy():
    registry = get_registry()
    written = _record("fp32", "eager", 100.0, [95.0, 105.0], 0.92)
    inaccurate = _record("bf16", "eager", 300.0, [290.0, 310.0], 0.90)  # 2 points worse
    faster = _record("fp32", "compiled", 150.0, [140.0, 160.0], 0.921)
    [entry] = judge([written, inaccurate, faster], registry, "cpu", 0.5)
    assert entry["best"]["config"]["execution"] == "compiled"
    assert entry["speedup"] == 1.5
    assert not next(t for t in entry["tried"] if t["config"]["precision"] == "bf16")["eligible"]

    overlapping = _record("fp32", "compiled", 104.0, [98.0, 110.0], 0.92)
    [entry] = judge([written, overlapping], registry, "cpu", 0.5)
    assert entry["best"]["config"]["execution"] == "eager" and entry["speedup"] == 1.0
    assert "not faster beyond both intervals" in entry["why"]
    tune_table([entry])  # renders
