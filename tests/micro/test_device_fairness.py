"""Per-device peaks (a fake second device), one sync per timed unit on an asynchronous device (a
fake asynchronous backend), and the same work in every backend's backward passes."""
from __future__ import annotations

import numpy as np
import pytest
from fwbench.micro.families import run_bench
from fwbench.micro.peak import Peak, peak_for_cell, resolve_peak
from fwbench.micro.protocol import Protocol, measure
from fwbench.micro.spec import bench_from_dict
from fwbench.ops import Op, Ops

CPU = {"device": "cpu", "cpu": "Test CPU", "threads": 2}
GPU = {"device": "gpu", "gpu": "Fake GPU 80GB", "driver": "1.0"}


def fake_child(rates: dict[str, dict[str, float]]):
    """A peak child that reports ``rates[device][backend]`` GFLOP/s, and records each call."""
    calls = []

    def child(name, threads, bandwidth, device="cpu"):
        calls.append((name, device))
        out = {"backend": name, "gflops": rates[device][name], "device": device}
        if bandwidth:
            out["bandwidth"] = {"gbps": {"cpu": 30.0, "gpu": 3000.0}[device]}
        return out

    child.calls = calls
    return child


def test_each_device_has_its_own_peak_and_cache_entry(tmp_path):
    path = tmp_path / "peak.json"
    child = fake_child({"cpu": {"numpy": 100.0, "torch": 120.0}, "gpu": {"torch": 40_000.0}})
    cpu = resolve_peak(["numpy", "torch"], ["numpy", "torch"], 2, child=child, path=path, facts=CPU)
    gpu = resolve_peak(["torch"], ["torch"], 2, child=child, path=path, device="gpu", facts=GPU)
    assert cpu["gflops"] == 120.0 and cpu["device"] == "cpu" and cpu["bandwidth_gbps"] == 30.0
    assert gpu["gflops"] == 40_000.0 and gpu["device"] == "gpu" and gpu["bandwidth_gbps"] == 3000.0
    assert ("torch", "gpu") in child.calls and ("numpy", "cpu") in child.calls
    # cached per device: asking again measures nothing, and the numbers stay apart
    again = fake_child({"cpu": {}, "gpu": {}})
    assert resolve_peak(["torch"], ["torch"], 2, child=again, path=path, device="gpu", facts=GPU)["gflops"] == 40_000.0
    assert resolve_peak(["torch"], ["numpy", "torch"], 2, child=again, path=path, facts=CPU)["gflops"] == 120.0
    assert again.calls == []
    # another GPU model or driver is another key
    other = resolve_peak(["torch"], ["torch"], 2, child=fake_child({"gpu": {"torch": 9.0}}), path=path,
                         device="gpu", facts={**GPU, "driver": "2.0"})
    assert other["gflops"] == 9.0


def test_a_cell_is_judged_against_the_peak_of_the_device_it_runs_on():
    cell = {"peak_flops": 1.2e11, "peak_info": {"by_device": {"cpu": {"gflops": 120.0}, "gpu": {"gflops": 40_000.0}}}}
    assert peak_for_cell(cell, "gpu").gflops == 40_000.0 and peak_for_cell(cell, "gpu").device == "gpu"
    assert peak_for_cell(cell, "cpu").flops == 120.0e9
    assert peak_for_cell({"peak_info": {"by_device": {"cpu": {"gflops": 1.0}}}}, "gpu") is None
    given = peak_for_cell({"peak_flops": 5e9}, "gpu")  # a --peak number: for every device
    assert (given.gflops, given.device) == (5.0, "gpu")
    assert Peak.from_summary(given.summary()).gflops == 5.0 and Peak.from_summary({"gflops": None}) is None


def test_machine_peak_is_a_given_number_or_the_best_measured_one(tmp_path, monkeypatch):
    from fwbench.micro.peak import machine_peak

    monkeypatch.setenv("FWBENCH_CACHE_DIR", str(tmp_path / "cache"))
    given = machine_peak("gpu", 2, given=150.0, given_as="command line")
    assert (given.gflops, given.source, given.device, given.flops) == (150.0, "command line", "gpu", 150e9)
    child = fake_child({"cpu": {"numpy": 100.0, "torch": 120.0}})
    found = machine_peak("cpu", 2, ["numpy"], among=["numpy", "torch"], measure=child, cache=False)
    assert (found.gflops, found.best_backend, found.source) == (100.0, "numpy", "measured")  # torch not run
    assert found.summary()["per_backend_gflops"] == {"numpy": 100.0} and found.bandwidth_gbps == 30.0
    assert not (tmp_path / "cache").exists()  # cache=False: nothing written
    assert machine_peak("cpu", 2, among=[], measure=child) is None


def test_bench_run_hands_gpu_cells_the_gpu_peak(monkeypatch, tmp_path):
    """`plan_run` with a fake second device: the GPU cell's peak is the GPU's, not the CPU's."""
    from fwbench.micro import peak as peak_mod
    from fwbench.run import matrix, placement
    from fwbench.run.options import RunOptions

    monkeypatch.setenv("FWBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(placement, "visible_gpus", lambda: ["0"])
    monkeypatch.setattr(peak_mod, "gpu_facts", lambda: GPU)
    monkeypatch.setattr(peak_mod, "run_child", fake_child({"cpu": {"numpy": 100.0}, "gpu": {"numpy": 50_000.0}}))
    monkeypatch.setattr(matrix, "pick_backends", lambda registry, names: ["numpy"])
    monkeypatch.setattr(matrix, "ensure_dataset", lambda *a: None)
    options = RunOptions(backends=["numpy"], devices=["cpu", "gpu"], threads=1, profile="quick",
                         out=tmp_path / "out", tasks=["mlp_mnist"], timeout_s=60.0, peak="auto")
    plan = matrix.plan_run(options)
    by_device = {c.device: c for c in plan.cells}
    assert by_device["gpu"].peak_flops == 50_000.0e9 and by_device["cpu"].peak_flops == 100.0e9
    assert peak_for_cell(by_device["gpu"].to_dict(), "gpu").gflops == 50_000.0


class AsyncOps(Ops):
    """A fake asynchronous device: ``run`` only queues ``cost`` seconds of work; ``sync`` waits
    for the queue (advances the fake clock) and costs ``sync_cost`` itself (a launch round trip)."""

    def __init__(self, clock, cost: float, sync_cost: float):
        super().__init__("async", "gpu", "float32")
        self.clock, self.cost, self.sync_cost, self.queued, self.syncs = clock, cost, sync_cost, 0.0, 0

    def conv2d(self, x, w, dy, *, stride, pad, pass_):
        def run():
            self.queued += self.cost
            return self.queued

        return Op(run)

    def sync(self, handle):
        self.syncs += 1
        self.clock.now += self.queued + self.sync_cost
        self.queued = 0.0


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_gpu_units_are_a_loop_with_one_sync_so_launch_latency_is_not_timed():
    clock = Clock()
    ops = AsyncOps(clock, cost=1e-5, sync_cost=1e-4)  # a 10 us kernel, a 100 us round trip
    base = {"repeats": 5, "min_unit_s": 1e-3, "max_warmup": 5, "max_warmup_s": 10.0, "clock": clock}
    per_call = measure(ops.conv2d(None, None, None, stride=1, pad=0, pass_="forward").run, ops.sync,
                       Protocol(**base, sync_each_call=True))
    looped = measure(ops.conv2d(None, None, None, stride=1, pad=0, pass_="forward").run, ops.sync,
                     Protocol(**base, sync_each_call=False))
    assert np.median(per_call.per_call) == pytest.approx(1.1e-4)  # the round trip dominates
    assert np.median(looped.per_call) < 1.2e-5  # the kernel, plus a share of one sync per unit


def test_run_bench_on_a_gpu_syncs_once_per_unit():
    from fwbench.micro.protocol import Protocol as P

    raw = {"task": {"family": "conv2d"}, "bench": {"repeats": 3, "max_warmup": 3},
           "cases": [{"name": "c", "batch": 2, "channels": 2, "size": 8, "filters": 2, "kernel": 3,
                      "passes": ["forward"]}]}
    spec = bench_from_dict(raw, "<test>")
    clock = Clock()
    ops = AsyncOps(clock, cost=1e-5, sync_cost=1e-4)

    class B:
        name = "async"

        def ops(self, device, dtype, options=None):
            return ops

    settings = P.from_settings(spec.bench, clock=clock, sync_each_call=False)
    row = run_bench(spec, B(), "gpu", protocol=settings).metrics["cases"][0]
    assert row["sync"] == "once per timed unit" and row["inner"] > 1
    assert ops.syncs < row["inner"] * row["repeats"]


def test_numpy_backward_weights_starts_from_x_like_the_other_backends(monkeypatch):
    from fwbench_numpy import ops as numpy_ops
    from fwbench_numpy.backend import NumpyBackend

    calls = []
    real = numpy_ops.im2col
    monkeypatch.setattr(numpy_ops, "im2col", lambda *a, **k: calls.append(1) or real(*a, **k))
    ops = numpy_ops.make_ops(NumpyBackend(), "cpu", "float32")
    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 8, 8)))
    op = ops.conv2d(x, w, dy, stride=1, pad=1, pass_="backward_weights")
    before = len(calls)
    first = op.to_numpy(op.run())[0]
    second = op.to_numpy(op.run())[0]
    assert len(calls) - before == 2  # every timed call builds the columns of x
    import torch

    expected = torch.nn.grad.conv2d_weight(torch.from_numpy(x), w.shape, torch.from_numpy(dy), 1, 1).numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, expected, rtol=1e-4, atol=1e-4)


def test_a_backward_that_recomputes_its_forward_is_timed_apart_and_says_so():
    clock = Clock()

    class Recomputing(Ops):
        def __init__(self):
            super().__init__("tf-like", "cpu", "float32")

        def pool(self, x, dy, *, kind, size, stride, pass_):
            cost = {"forward": 2e-3, "backward": 5e-3}[pass_]

            def run():
                clock.now += cost

            return Op(run, info={"recomputes": "forward"} if pass_ == "backward" else {})

        def sync(self, handle):
            pass

    ops = Recomputing()

    class B:
        name = "tf-like"

        def ops(self, device, dtype, options=None):
            return ops

    raw = {"task": {"family": "pooling"}, "bench": {"repeats": 3, "max_warmup": 3},
           "cases": [{"name": "p", "batch": 2, "channels": 2, "size": 8, "kind": "max", "window": 2,
                      "passes": ["backward"]}]}
    spec = bench_from_dict(raw, "<test>")
    result = run_bench(spec, B(), "cpu", protocol=Protocol.from_settings(spec.bench, clock=clock))
    row = result.metrics["cases"][0]
    assert row["recomputed_forward_s"] == pytest.approx(2e-3)
    assert row["backward_alone_s"] == pytest.approx(3e-3)
    assert any("recomputed forward" in w for w in result.warnings)


def test_the_gpu_measurements_run_through_any_backend_ops():
    """The code a GPU peak runs (one sync per unit, the add bandwidth), on the NumPy ops here."""
    from fwbench.micro.peak import measure_device_bandwidth, measure_matmul
    from fwbench_numpy.ops import NumpyOps

    ops = NumpyOps("numpy", "float32")
    matmul = measure_matmul(ops, sync_each_call=False, sizes=(64,))
    assert matmul["n"] == 64 and matmul["gflops"] > 0
    bandwidth = measure_device_bandwidth(ops, floats=1 << 16)
    assert bandwidth["gbps"] > 0 and bandwidth["array_mib"] == 0.25
    a = np.arange(4, dtype=np.float32)
    op = ops.add(a, a)
    np.testing.assert_array_equal(op.to_numpy(op.run())[0], 2 * a)
