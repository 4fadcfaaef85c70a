"""Energy counters (fwbench.measure.energy): windows extended by more calls (never extrapolated), register
wrap-around, the NVML path through a fake pynvml, and the reason when nothing is readable."""
from __future__ import annotations

import sys
import types

import pytest
from fwbench.measure import energy
from fwbench.measure.energy import (
    MIN_PERIODS,
    Meter,
    Unavailable,
    measure,
    open_counter,
    training_energy,
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class QuantisedCounter:
    """A counter that draws ``watts`` and only advances every ``update_period_s`` (like NVML)."""

    name = "fake"

    def __init__(self, clock, watts=100.0, update_period_s=0.1):
        self.clock, self.watts, self.update_period_s = clock, watts, update_period_s

    def read(self):
        ticks = int(self.clock() / self.update_period_s + 1e-9)
        return ticks * self.update_period_s * self.watts


def test_a_short_call_is_measured_over_more_calls_not_extrapolated():
    clock = FakeClock()
    counter = QuantisedCounter(clock)

    def call():  # 1 ms per call: one call is 1/100 of a counter period
        clock.now += 0.001

    out = measure(counter, call, units=8, clock=clock)
    assert out["calls"] == pytest.approx(MIN_PERIODS * 0.1 / 0.001, abs=1)  # 2 s of calls
    assert out["window_periods"] >= MIN_PERIODS
    assert out["joules_per_call"] == pytest.approx(0.1, rel=0.06)  # 100 W x 1 ms, within quantisation
    assert out["joules_per_unit"] == pytest.approx(out["joules_per_call"] / 8)
    assert "short_window" not in out


def test_a_capped_window_is_flagged_and_a_still_counter_is_unavailable():
    clock = FakeClock()

    def call():
        clock.now += 0.001

    out = measure(QuantisedCounter(clock), call, max_calls=10, clock=clock)
    assert out["calls"] == 10 and "quantisation dominates" in out["short_window"]
    assert not out["available"] and "did not move" in out["reason"]  # 10 ms: the counter never ticked
    assert measure(Unavailable("no counter here"), call) == {"available": False,
                                                             "reason": "unavailable: no counter here"}


def _domain(root, name, value, top=1000):
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(str(value))
    (d / "max_energy_range_uj").write_text(str(top))
    return d


def test_rapl_sums_packages_and_survives_a_wrap(tmp_path):
    pkg0 = _domain(tmp_path, "intel-rapl:0", 900)
    _domain(tmp_path, "intel-rapl:1", 100)
    _domain(tmp_path, "intel-rapl:0:0", 5)  # a sub-domain (core) inside package 0: not summed
    counter = open_counter("cpu", powercap=tmp_path)
    assert counter.name == "rapl" and len(counter.domains) == 2
    start = counter.read()
    (pkg0 / "energy_uj").write_text("50")  # wrapped at 1000 µJ: +150 µJ
    assert (counter.read() - start) * 1e6 == pytest.approx(150)


def test_rapl_unreadable_or_absent_says_why(tmp_path, monkeypatch):
    absent = open_counter("cpu", powercap=tmp_path / "none")
    assert isinstance(absent, Unavailable) and "no RAPL package domain" in str(absent)
    _domain(tmp_path, "intel-rapl:0", 1)

    def denied(self, *a, **k):
        raise PermissionError("root only")

    monkeypatch.setattr(energy.RaplCounter, "_raw", staticmethod(lambda d: denied(None)))
    locked = open_counter("cpu", powercap=tmp_path)
    assert isinstance(locked, Unavailable) and "readable by root only" in str(locked)


def test_gpu_counter_through_nvml(monkeypatch):
    """The NVML path with a fake pynvml: millijoules become joules, CUDA_VISIBLE_DEVICES picks the GPU."""
    seen = {}
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: seen.setdefault("index", i),
        nvmlDeviceGetHandleByUUID=lambda u: seen.setdefault("uuid", u),
        nvmlDeviceGetTotalEnergyConsumption=lambda h: 123_456)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    counter = open_counter("gpu")
    assert counter.name == "nvml" and seen["index"] == 3 and counter.read() == pytest.approx(123.456)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    open_counter("gpu")
    assert seen["uuid"] == "GPU-abc"

    def unsupported(h):
        raise RuntimeError("NVMLError_NotSupported")

    fake.nvmlDeviceGetTotalEnergyConsumption = unsupported
    assert "NVML total energy counter not readable" in str(open_counter("gpu"))


def test_training_energy_per_step_and_to_target():
    clock = FakeClock()
    counter = QuantisedCounter(clock, watts=200.0, update_period_s=0.01)
    meter = Meter(counter, clock=clock)
    history = []
    for epoch, acc in enumerate((0.5, 0.91, 0.95), start=1):
        clock.now += 1.0
        history.append({"epoch": epoch, "val_accuracy": acc, "energy_j": meter.since_start()})
    out = training_energy(meter, {"steps": 300, "history": history, "target_accuracy": 0.9})
    assert out["joules"] == pytest.approx(600.0)
    assert out["joules_per_step"] == pytest.approx(2.0)
    assert out["energy_to_target_j"] == pytest.approx(400.0)  # reached at the end of epoch 2
    assert "short_window" not in out
    none = training_energy(Meter(Unavailable("why")), {"steps": 3})
    assert none == {"available": False, "reason": "unavailable: why"}
