"""Peaks per precision: a bf16 cell is judged against a bfloat16 matmul's peak, each precision is
cached on its own, and a precision nobody multiplies in is "not measured", never float32's."""
from __future__ import annotations

import pytest
from fwbench.micro.peak import (
    Peak,
    child_main,
    machine_peak,
    peak_for_cell,
    peak_precision,
    resolve_peak,
)

CPU = {"device": "cpu", "cpu": "Test CPU", "threads": 2}


def fake_child(rates: dict[str, dict[str, float]]):
    """A peak child reporting ``rates[precision][backend]`` GFLOP/s (an error when absent)."""
    calls = []

    def child(name, threads, bandwidth, precision="fp32"):
        calls.append((name, precision, bandwidth))
        if name not in rates.get(precision, {}):
            return {"error": f"TypeError: data type {precision!r} not understood"}
        out = {"backend": name, "gflops": rates[precision][name], "precision": precision}
        if bandwidth:
            out["bandwidth"] = {"gbps": 30.0}
        return out

    child.calls = calls
    return child


def test_each_precision_is_measured_and_cached_on_its_own(tmp_path):
    path = tmp_path / "peak.json"
    child = fake_child({"fp32": {"numpy": 100.0, "torch": 120.0}, "bf16": {"torch": 400.0}})
    fp32 = resolve_peak(["numpy", "torch"], ["numpy", "torch"], 2, child=child, path=path, facts=CPU)
    bf16 = resolve_peak(["numpy", "torch"], ["numpy", "torch"], 2, child=child, path=path, facts=CPU,
                        precision="bf16")
    assert (fp32["gflops"], fp32["precision"]) == (120.0, "fp32")
    assert (bf16["gflops"], bf16["best_backend"], bf16["precision"]) == (400.0, "torch", "bf16")
    assert "bfloat16" in bf16["method"] and bf16["bandwidth_gbps"] == 30.0  # float32's bandwidth, kept
    assert not any(bandwidth for _, precision, bandwidth in child.calls if precision == "bf16")
    again = fake_child({})
    assert resolve_peak(["torch"], ["numpy", "torch"], 2, child=again, path=path, facts=CPU,
                        precision="bf16")["gflops"] == 400.0
    assert resolve_peak(["torch"], ["numpy", "torch"], 2, child=again, path=path, facts=CPU)["gflops"] == 120.0
    assert [c for c in again.calls if c[0] == "torch"] == []  # cached per precision; numpy's bf16 failed: retried


def test_a_precision_no_backend_multiplies_in_has_no_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("FWBENCH_CACHE_DIR", str(tmp_path))
    child = fake_child({"fp32": {"numpy": 100.0}})
    assert machine_peak("cpu", 2, among=["numpy"], measure=child, precision="bf16") is None
    assert machine_peak("cpu", 2, given=150.0, precision="bf16") is None  # --peak is float32's
    found = machine_peak("cpu", 2, among=["numpy"], measure=child, precision="fp32")
    assert Peak.from_summary(found.summary()).precision == "fp32"


def test_a_cell_gets_the_peak_of_its_precision_or_none():
    info = {"by_device": {"cpu": {"gflops": 120.0}},
            "by_precision": {"cpu": {"bf16": {"gflops": 400.0, "precision": "bf16"}}}}
    cell = {"peak_flops": 1.2e11, "peak_info": info}
    assert peak_for_cell(cell, "cpu").gflops == 120.0
    bf16 = peak_for_cell(cell, "cpu", "bf16")
    assert (bf16.gflops, bf16.precision) == (400.0, "bf16")
    assert peak_for_cell(cell, "cpu", "fp16") is None
    assert peak_for_cell({"peak_flops": 5e9}, "cpu", "bf16") is None  # a --peak number: fp32 only
    assert peak_for_cell(cell, "cpu", "tf32").gflops == 120.0  # no TensorFloat-32 on a CPU: float32's
    assert (peak_precision("tf32", "cpu"), peak_precision("tf32", "gpu"), peak_precision(None, "cpu")) == \
        ("fp32", "tf32", "fp32")


def test_the_child_refuses_a_precision_without_a_peak_dtype():
    assert "no tf32 matmul" in child_main("numpy", 1, False, "cpu", "tf32")["error"]


def test_torch_measures_a_bfloat16_peak_on_the_cpu():
    pytest.importorskip("torch")
    from fwbench.micro.peak import measure_matmul
    from fwbench.plugins import get_registry

    backend = get_registry().get_backend("torch")
    backend.configure(device="cpu", threads=1)
    ops = backend.ops("cpu", "bfloat16")
    result = measure_matmul(ops, sizes=(64,))
    assert result["gflops"] > 0 and result["n"] == 64
