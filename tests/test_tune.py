"""``bench tune``: the search space per backend and device, and the judgement (accuracy within the
tolerance, faster beyond both intervals, else the cell as written stays)."""
from __future__ import annotations

import json

import pytest
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


@pytest.mark.cli
def test_bench_tune_runs_each_configuration_judges_them_and_says_the_peak_once(bench, tmp_path):
    """End to end on the NumPy backend (fp32 and its bf16 policy): one run folder with a record per
    configuration, ``tune.json`` with the judgement, the side-by-side table, one line per peak."""
    out = tmp_path / "results"
    proc = bench("tune", "-b", "numpy", "-t", "mlp_mnist", "--dataset", "digits", "--profile", "quick",
                 "--repeat", "2", "--no-progress", "--peak", "auto", "-o", str(out),
                 env={"FWBENCH_CACHE_DIR": str(tmp_path / "cache")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    (entry,) = json.loads((run_dir / "tune.json").read_text())
    assert entry["backend"] == "numpy" and len(entry["tried"]) == 2
    assert {t["config"]["precision"] for t in entry["tried"]} == {"fp32", "bf16"}
    assert all(t["status"] == "ok" and t["ci95"] for t in entry["tried"])
    assert entry["as_written"]["config"]["precision"] == "fp32" and entry["best"] and entry["why"]
    assert "as written vs at its best" in proc.stdout
    peak_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("machine peak (cpu)")]
    assert len(peak_lines) == 1, proc.stderr  # planned once per configuration, said once
