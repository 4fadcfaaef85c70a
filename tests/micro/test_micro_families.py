"""The microbenchmark layer: timing protocol, warnings, every backend's ops against NumPy, the
machine-peak cache, and one real ``bench run`` of the conv2d sweep.

Timing logic is tested with a fake clock (an op "takes" exactly what it adds to the clock), so
nothing here depends on how fast or busy the machine is.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fwbench.micro.families import conv2d_data, run_bench
from fwbench.micro.protocol import Protocol, measure
from fwbench.micro.spec import Conv2DCase, bench_from_dict
from fwbench.ops import Op, Ops
from fwbench.spec import OPTIMIZERS, OptimizerSpec

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# A fake clock and a fake backend whose ops cost a fixed (virtual) time
# ---------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeOps(Ops):
    """conv2d ops that advance ``clock`` by ``cost`` seconds per call (no clock: instant)."""

    def __init__(self, cost: float = 0.0, clock: FakeClock | None = None):
        super().__init__("fake", "cpu", "float32")
        self.cost, self.clock, self.calls, self.synced = cost, clock, 0, 0

    def conv2d(self, x, w, dy, *, stride, pad, pass_):
        def run():
            self.calls += 1
            if self.clock is not None:
                self.clock.now += self.cost
            return self.calls

        return Op(run)

    def sync(self, handle):
        self.synced += 1


class FakeBackend:
    name = "fake"

    def __init__(self, ops: FakeOps):
        self._ops = ops

    def ops(self, device, dtype, options=None):
        return self._ops


def conv_spec(**case) -> object:
    base = {"name": "c", "batch": 8, "channels": 64, "size": 32, "filters": 64, "kernel": 3,
            "passes": ["forward"]}
    raw = {"task": {"family": "conv2d"}, "bench": {"repeats": 5, "max_warmup": 5},
           "cases": [{**base, **case}]}
    return bench_from_dict(raw, "<test>")


def fake_protocol(clock, **kw) -> Protocol:
    return Protocol(repeats=kw.pop("repeats", 5), min_unit_s=1e-3, max_warmup=5, max_warmup_s=10.0,
                    clock=clock, **kw)


def test_a_short_op_gets_its_inner_loop_raised_and_the_median_per_call_is_right():
    clock = FakeClock()
    ops = FakeOps(cost=1e-4, clock=clock)
    result = run_bench(conv_spec(), FakeBackend(ops), "cpu", peak_flops=1e15, protocol=fake_protocol(clock))
    (case,) = result.metrics["cases"]
    assert case["inner"] >= 10 and case["inner"] * 1e-4 >= 1e-3
    assert case["unit_median_s"] == pytest.approx(case["inner"] * 1e-4)
    assert case["median_s"] == pytest.approx(1e-4) and case["ci95"] == pytest.approx([1e-4, 1e-4])
    assert case["repeats"] == 5 and len(case["raw_s"]) == 5
    assert case["warmup_steady"] and case["first_call_s"] == pytest.approx(1e-4)
    flops = 2 * 8 * 64 * 32 * 32 * 64 * 9
    assert case["flops"] == flops and case["gflops"] == pytest.approx(flops / 1e-4 / 1e9)
    assert case["percent_of_peak"] == pytest.approx(100 * flops / 1e-4 / 1e15)
    assert result.warnings == []
    assert ops.synced == ops.calls  # every call is synced before the clock is read


def test_an_instant_op_claiming_big_flops_is_flagged_too_fast_to_be_real():
    ops = FakeOps()  # real clock; the op does nothing at all
    spec = conv_spec()
    result = run_bench(spec, FakeBackend(ops), "cpu", peak_flops=100e9,
                       protocol=Protocol(repeats=3, max_warmup=3, max_warmup_s=0.1))
    (case,) = result.metrics["cases"]
    assert case["gflops"] > 100 * 100  # "faster" than 100x the peak
    assert any("too fast to be real" in w and "c (" in w and "[forward]" in w for w in result.warnings)


def test_a_slow_honest_op_gets_no_warning():
    clock = FakeClock()
    ops = FakeOps(cost=0.01, clock=clock)  # 10 ms for ~600 MFLOP: 60 GFLOP/s, under the peak
    result = run_bench(conv_spec(), FakeBackend(ops), "cpu", peak_flops=200e9, protocol=fake_protocol(clock))
    (case,) = result.metrics["cases"]
    assert case["inner"] == 1 and case["median_s"] == pytest.approx(0.01)
    assert result.warnings == [] and case["percent_of_peak"] == pytest.approx(100 * case["gflops"] / 200)


def test_unstable_timings_are_flagged():
    clock = FakeClock()
    costs = iter([0.01, 0.01, 0.01, 0.01] + [0.01, 0.02] * 50)

    def run():
        clock.now += next(costs)

    m = measure(run, lambda h: None, fake_protocol(clock, repeats=6))
    assert m.inner == 1 and any("varies within the run" in w for w in m.warnings("x"))


def test_a_failing_case_becomes_data_and_every_case_failing_fails_the_cell():
    class Broken(FakeOps):
        def conv2d(self, *a, **k):
            raise NotImplementedError("no conv here")

    with pytest.raises(RuntimeError, match="every case failed; the first: NotImplementedError: no conv here"):
        run_bench(conv_spec(), FakeBackend(Broken()), "cpu")


# ---------------------------------------------------------------------------------------------
# Every backend's ops compute what is timed: equal to the NumPy backend's numbers
# ---------------------------------------------------------------------------------------------

BACKENDS = ["numpy", "torch", "tensorflow", "jax"]


@pytest.fixture(scope="module")
def registry():
    from fwbench.plugins import get_registry

    return get_registry()


def backend_ops(registry, name):
    backend = registry.get_backend(name)
    if not backend.availability().ok:
        pytest.skip(f"{name} is not installed")
    backend.configure(device="cpu", threads=1)
    return backend.ops("cpu", "float32")


def run_op(ops, op):
    handle = op()
    ops.sync(handle)
    return op.to_numpy(handle)


def assert_close(got, want, what):
    assert len(got) == len(want), what
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, what
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max()), err_msg=what)


CONV_CASE = Conv2DCase(batch=2, channels=3, size=7, filters=4, kernel=3, stride=2, padding=1)


def test_numpy_conv_ops_match_the_naive_oracle(registry):
    from fwbench_numpy.conv import conv2d_naive, conv2d_naive_backward

    ops = backend_ops(registry, "numpy")
    x, w, dy = conv2d_data(CONV_CASE, np.random.default_rng(0), "float64")
    y = conv2d_naive(x, w, None, 2, 1)
    dx, dw, _ = conv2d_naive_backward(x, w, dy, 2, 1)
    x, w, dy = (a.astype(np.float32) for a in (x, w, dy))
    want = {"forward": (y,), "backward_data": (dx,), "backward_weights": (dw,), "forward_backward": (y, dx, dw)}
    for pass_, expected in want.items():
        got = run_op(ops, ops.conv2d(x, w, dy, stride=2, pad=1, pass_=pass_))
        assert_close(got, expected, pass_)


@pytest.mark.parametrize("name", BACKENDS)
def test_conv_passes_equal_the_numpy_backend(registry, name):
    ops, ref = backend_ops(registry, name), backend_ops(registry, "numpy")
    x, w, dy = conv2d_data(CONV_CASE, np.random.default_rng(1), "float32")
    for pass_ in CONV_CASE.passes:
        got = run_op(ops, ops.conv2d(x, w, dy, stride=2, pad=1, pass_=pass_))
        want = run_op(ref, ref.conv2d(x, w, dy, stride=2, pad=1, pass_=pass_))
        assert_close(got, want, f"{name} conv2d {pass_}")


@pytest.mark.parametrize("name", BACKENDS)
def test_dense_pool_and_batchnorm_passes_equal_the_numpy_backend(registry, name):
    ops, ref = backend_ops(registry, name), backend_ops(registry, "numpy")
    rng = np.random.default_rng(2)
    x, w, dy = rng.standard_normal((5, 7)), rng.standard_normal((7, 3)), rng.standard_normal((5, 3))
    x, w, dy = (a.astype(np.float32) for a in (x, w, dy))
    for pass_ in ("forward", "backward", "forward_backward"):
        assert_close(run_op(ops, ops.dense(x, w, dy, pass_=pass_)), run_op(ref, ref.dense(x, w, dy, pass_=pass_)),
                     f"{name} dense {pass_}")
    img = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    for kind, size, stride in (("max", 2, 2), ("avg", 3, 2)):
        out = (7 - size) // stride + 1
        g = rng.standard_normal((2, 3, out, out)).astype(np.float32)
        for pass_ in ("forward", "backward"):
            kw = {"kind": kind, "size": size, "stride": stride, "pass_": pass_}
            assert_close(run_op(ops, ops.pool(img, g, **kw)), run_op(ref, ref.pool(img, g, **kw)),
                         f"{name} {kind}pool {pass_}")
    gamma, beta = (1 + 0.1 * rng.standard_normal(3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    g = rng.standard_normal(img.shape).astype(np.float32)
    for pass_ in ("forward", "backward"):
        kw = {"momentum": 0.1, "eps": 1e-5, "pass_": pass_}
        assert_close(run_op(ops, ops.batchnorm(img, gamma, beta, g, **kw)),
                     run_op(ref, ref.batchnorm(img, gamma, beta, g, **kw)), f"{name} batchnorm {pass_}")


def documented_step(name: str, p: np.ndarray, g: np.ndarray, spec: OptimizerSpec) -> np.ndarray:
    """One step (t = 1, every state at its start value) of the rules in `OptimizerSpec`, float64."""
    lr, wd = spec.lr, spec.weight_decay
    if name != "adamw":
        g = g + wd * p
    if name == "sgd":
        return p - lr * g
    if name == "momentum":
        return p - lr * g  # b = 0 * momentum + g
    if name == "nesterov":
        return p - lr * (g + spec.momentum * g)
    if name == "rmsprop":
        v = (1 - spec.alpha) * g * g
        return p - lr * g / (np.sqrt(v) + spec.eps)
    if name == "adagrad":
        s = spec.initial_accumulator + g * g
        return p - lr * g / (np.sqrt(s) + spec.eps)
    m, v = (1 - spec.beta1) * g, (1 - spec.beta2) * g * g
    if name == "adamw":
        p = p * (1 - lr * wd)
    return p - lr * (m / (1 - spec.beta1)) / (np.sqrt(v / (1 - spec.beta2)) + spec.eps)


@pytest.mark.parametrize("name", BACKENDS)
def test_one_optimizer_step_follows_the_documented_rule(registry, name):
    ops = backend_ops(registry, name)
    rng = np.random.default_rng(3)
    p0, g0 = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    for optimizer in OPTIMIZERS:
        spec = OptimizerSpec(name=optimizer, lr=0.01, weight_decay=0.05)
        (p1,) = run_op(ops, ops.optimizer_step(spec, p0, g0))
        want = documented_step(optimizer, p0.astype(np.float64), g0.astype(np.float64), spec)
        np.testing.assert_allclose(p1, want, rtol=1e-5, atol=1e-6, err_msg=f"{name} {optimizer}")
        assert not np.allclose(p1, p0)


@pytest.mark.parametrize("name", BACKENDS)
def test_matmul_op_for_the_peak(registry, name):
    ops = backend_ops(registry, name)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, 5)).astype(np.float32)
    assert_close(run_op(ops, ops.matmul(a, b)), (a @ b,), f"{name} matmul")


@pytest.mark.parametrize("name", BACKENDS)
def test_add_op_for_the_bandwidth(registry, name):
    ops = backend_ops(registry, name)
    a, b = np.arange(10, dtype=np.float32), np.full(10, 0.5, np.float32)
    assert_close(run_op(ops, ops.add(a, b)), (a + b,), f"{name} add")
    assert ops.asynchronous is (name == "jax")  # on the CPU only JAX dispatches asynchronously


# ---------------------------------------------------------------------------------------------
# The machine peak: per-backend cache, measured once, the best of all known
# ---------------------------------------------------------------------------------------------

def test_peak_is_measured_per_backend_cached_and_the_best_is_taken(tmp_path):
    from fwbench.micro.peak import resolve_peak

    calls = []

    def child(name, threads, bandwidth):
        calls.append((name, bandwidth))
        if name == "broken":
            return {"error": "NotImplementedError: no ops"}
        out = {"gflops": {"numpy": 100.0, "torch": 250.0}[name], "n": 1024, "version": "1"}
        if bandwidth:
            out["bandwidth"] = {"gbps": 20.0, "copy_gbps": 20.0, "add_gbps": 18.0, "threads": threads}
        return out

    path = tmp_path / "peak.json"
    available = ["broken", "numpy", "torch"]
    first = resolve_peak(["numpy"], available, 2, child=child, path=path)
    assert calls == [("numpy", True)]  # only this run's backend (it also measures the bandwidth)
    assert first["gflops"] == 100.0 and first["bandwidth_gbps"] == 20.0 and first["not_measured"] == ["broken", "torch"]
    calls.clear()
    again = resolve_peak(["numpy"], available, 2, child=child, path=path)
    assert calls == [] and again["source"] == "cache" and again["gflops"] == 100.0
    both = resolve_peak(["torch", "broken"], available, 2, child=child, path=path)
    assert calls == [("torch", False), ("broken", False)]
    assert both["gflops"] == 250.0 and both["best_backend"] == "torch"
    assert "error" in both["per_backend"]["broken"]
    calls.clear()
    numpy_only = resolve_peak(["numpy"], available, 2, child=child, path=path)
    assert calls == [] and numpy_only["gflops"] == 250.0  # an earlier torch number still counts
    assert resolve_peak(["numpy"], available, 4, child=child, path=path)["source"] == "measured"  # threads
    calls.clear()
    resolve_peak(["numpy"], available, 2, child=child, path=path, refresh=True)
    assert sorted(c[0] for c in calls) == ["broken", "numpy", "torch"]
    assert "broken" not in json.dumps(list(json.loads(path.read_text())))  # failures are never cached


# ---------------------------------------------------------------------------------------------
# End to end: the real CLI, one cell in its own process, the machine peak measured
# ---------------------------------------------------------------------------------------------

def test_bench_run_conv2d_quick_makes_a_record_with_cases_gflops_and_percent_of_peak(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "FWBENCH_CACHE_DIR": str(tmp_path / "cache"), "FWBENCH_DATA_DIR": str(tmp_path / "data"),
           "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "fwbench.cli", "run", "--backend", "numpy", "--task", "conv2d",
           "--profile", "quick", "--threads", "1", "--no-progress", "--out", str(out), "--repeat", "2",
           "--set", "bench.repeats=3", "--set", "bench.max_warmup=2", "--set", "cases.batch=2"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "machine peak" in proc.stderr and (tmp_path / "cache" / "peak.json").exists()
    (path,) = [p for p in out.rglob("*.json") if p.name != "run.json" and p.parent.name != "repeats"]
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["task"] == "conv2d" and record["params"] is None
    m = record["metrics"]
    assert m["family"] == "conv2d" and m["peak_gflops"] > 0 and m["percent_of_peak"] > 0
    cases = m["cases"]
    assert len(cases) == 3 * 4 and {c["pass"] for c in cases} == {"forward", "backward_data", "backward_weights",
                                                                  "forward_backward"}
    for c in cases:
        assert c["median_s"] > 0 and c["gflops"] > 0 and 0 < c["percent_of_peak"]
        assert c["ci95"][0] <= c["median_s"] <= c["ci95"][1] and c["repeats"] == 3 and c["inner"] >= 1
        assert c["repeats_n"] == 2 and len(c["repeat_median_s"]) == 2 and c["within_run"]["repeats"] == 3
        assert c["array_bytes"] > 0 and c["peak_host_bytes"] > 0
        assert math.isclose(c["gflops"], c["flops"] / c["median_s"] / 1e9)
    env_ = record["env"]
    assert env_["dtype"] == "float32" and env_["compile"]["mode"] == "eager" and env_["peak"]["gflops"] > 0
    assert env_["backend"]["threads"] == 1 and env_["cpu"]["model"] and env_["blas"]
    assert record["config"]["task"]["family"] == "conv2d" and m["peak_host_bytes"] > 0
    assert "conv2d (conv2d)" in proc.stdout and "forward_backward" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_run_bench_convergence_curves_through_the_trainer(registry):
    """optim_step's convergence check trains through ``backend.build`` and records every step."""
    raw = {"task": {"family": "optim_step", "name": "o"}, "bench": {"repeats": 3, "max_warmup": 1},
           "cases": [{"optimizers": ["sgd", "adam"], "params": [100]}],
           "convergence": {"steps": 5, "samples": 32, "batch_size": 8}}
    spec = bench_from_dict(raw, "<test>")
    curves = {}
    for name in ("numpy", "torch"):
        backend = registry.get_backend(name)
        backend.configure(device="cpu", threads=1)
        result = run_bench(spec, backend, "cpu")
        assert [c["optimizer"] for c in result.metrics["cases"]] == ["sgd", "adam"]
        curves[name] = result.metrics["convergence"]
        assert set(curves[name]) == {"sgd", "adam"} and all(len(v) == 5 for v in curves[name].values())
    for opt in ("sgd", "adam"):
        np.testing.assert_allclose(curves["torch"][opt], curves["numpy"][opt], rtol=1e-4)
