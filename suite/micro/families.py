"""Run a microbenchmark spec (`BenchSpec`) on one backend: one function per family.

Every family returns rows for ``metrics["cases"]`` (one per case and pass, or per optimizer and
size, or per model and input size) with the timing of `fwbench.micro.protocol.timing_fields`, the
analytic work of `fwbench.micro.roofline` (GFLOP/s, GB/s and percentages of the machine's peaks) and
memory (analytic bytes of the case's arrays, host peak, device peak). A case that raises becomes a
row with ``error`` and a warning; the run goes on (only a cell where every case failed fails).

Row shapes (the report reads these keys; more are added freely):

* conv2d / dense / pooling / batchnorm: ``{"name", "shape", "pass", "median_s", "gflops",
  "ci95", "percent_of_peak", ...}``
* optim_step: ``{"optimizer", "params", "median_s", ...}`` and ``metrics["convergence"]`` =
  ``{optimizer: [loss of each step]}``
* param_scaling: ``{"model", "input", "params", "median_s", ...}``
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..run.process import memory_status, reset_host_peak
from .protocol import Measurement, Protocol, measure, timing_fields
from .roofline import batchnorm_work, conv2d_work, dense_work, optimizer_work, pool_work, rates
from .spec import (
    BatchNormCase,
    BenchSpec,
    Conv2DCase,
    DenseCase,
    OptimCase,
    PoolCase,
    ScalingCase,
    case_label,
    convergence_lr,
    itemsize,
)


@dataclass
class BenchContext:
    """What every family runner needs."""

    spec: BenchSpec
    backend: Any
    device: str
    protocol: Protocol
    peak_flops: float | None = None
    peak_bandwidth: float | None = None
    progress: Callable[[str], None] = lambda message: None
    ops: Any = None
    host_peak: int = 0  # the largest VmHWM seen (per-case resets hide the cell's own)

    @property
    def dtype(self) -> str:
        return self.spec.bench.dtype

    @property
    def itemsize(self) -> int:
        return itemsize(self.dtype)


@dataclass
class BenchResult:
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    compile_info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Host memory per case: VmHWM, reset between cases where Linux allows it
# ---------------------------------------------------------------------------------------------

class _CaseMemory:
    """Host (and device) memory of one case: peak above the RSS at its start."""

    def __init__(self, ctx: BenchContext):
        self.ctx = ctx
        self.reset = reset_host_peak()
        self.start = memory_status().get("VmRSS", 0)
        if ctx.ops is not None:
            ctx.ops.reset_peak_memory()

    def fields(self, array_bytes: int, device_peak: int | None = None) -> dict[str, Any]:
        peak = memory_status().get("VmHWM", 0)
        self.ctx.host_peak = max(self.ctx.host_peak, peak)
        if device_peak is None and self.ctx.ops is not None:
            device_peak = self.ctx.ops.peak_device_memory()
        return {"array_bytes": int(array_bytes), "peak_host_bytes": peak,
                "peak_host_above_start_bytes": max(0, peak - self.start) if self.reset else None,
                "peak_device_bytes": device_peak}


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

def _rng(ctx: BenchContext, index: int) -> np.random.Generator:
    return np.random.default_rng([ctx.spec.bench.seed, index])


def _normal(rng: np.random.Generator, shape, dtype: str, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _timed_row(ctx: BenchContext, what: str, run, sync, flops: float | None, nbytes: float | None,
               warnings: list[str]) -> tuple[Measurement, dict[str, Any]]:
    m = measure(run, sync, ctx.protocol)
    row = timing_fields(m)
    row["sync"] = "each call" if ctx.protocol.sync_each_call else "once per timed unit"
    row.update(flops=flops, bytes=nbytes, **rates(flops, nbytes, row["median_s"], ctx.peak_flops,
                                                   ctx.peak_bandwidth))
    lo, hi = row["ci95"]
    row["gflops_ci95"] = [flops / hi / 1e9, flops / lo / 1e9] if flops and lo and hi and lo > 0 else None
    warnings += m.warnings(what, flops, ctx.peak_flops)
    return m, row


def _recomputed_forward(ctx: BenchContext, prepare, case, index: int, median_s: float, what: str,
                        warnings: list[str], recomputes: str) -> dict[str, Any]:
    """A backward pass that recomputes its forward (``op.info["recomputes"]``, e.g. TensorFlow's
    max-pool and batch-norm backward, where torch, JAX and NumPy replay a stored forward): the
    forward is timed on its own, so the record carries both and the backward alone."""
    forward, _ = prepare(case, "forward", _rng(ctx, index))
    m = measure(forward.run, ctx.ops.sync, ctx.protocol)
    forward_s = float(np.median(m.per_call))
    warnings.append(f"{what}: includes a recomputed forward ({forward_s * 1e3:.3g} ms of "
                    f"{median_s * 1e3:.3g} ms: {recomputes}); the other backends replay "
                    "a stored forward: compare backward_alone_s")
    return {"recomputed_forward_s": forward_s, "backward_alone_s": max(0.0, median_s - forward_s)}


def _failed_row(base: dict[str, Any], what: str, exc: BaseException, warnings: list[str]) -> dict[str, Any]:
    message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    warnings.append(f"{what}: failed ({message})")
    return {**base, "error": message}


def _op_family(ctx: BenchContext, warnings: list[str], prepare, work) -> list[dict[str, Any]]:
    """Cases x passes of a single-op family. ``prepare(case, pass_, rng) -> (op, array_bytes)``;
    ``work(case, pass_, itemsize) -> (flops, bytes)``."""
    rows = []
    family = ctx.spec.family
    for index, case in enumerate(ctx.spec.cases):
        for pass_ in case.passes:
            what = f"{family} {case_label(case)} [{pass_}]"
            ctx.progress(f"{family} {case.name or case.shape} {pass_}")
            base = {"name": case.name or case.shape, "shape": case.shape, "pass": pass_}
            try:
                memory = _CaseMemory(ctx)
                op, array_bytes = prepare(case, pass_, _rng(ctx, index))
                flops, nbytes = work(case, pass_, ctx.itemsize)
                _, row = _timed_row(ctx, what, op.run, ctx.ops.sync, flops, nbytes, warnings)
                if op.info.get("recomputes") and pass_ != "forward":
                    row.update(_recomputed_forward(ctx, prepare, case, index, row["median_s"], what, warnings,
                                                   op.info["recomputes"]))
                rows.append({**base, **row, **memory.fields(array_bytes), "op": op.info})
                del op
            except Exception as exc:  # noqa: BLE001 - one case's failure is data
                rows.append(_failed_row(base, what, exc, warnings))
            gc.collect()
    return rows


# ---------------------------------------------------------------------------------------------
# Single-op families
# ---------------------------------------------------------------------------------------------

def conv2d_data(case: Conv2DCase, rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, ...]:
    """x ``(N, C, H, W)``, w ``(F, C, k, k)`` (scaled by ``1/sqrt(C k k)``), dy ``(N, F, Ho, Wo)``."""
    n, c, s, f, k, o = case.batch, case.channels, case.size, case.filters, case.kernel, case.out_size
    return (_normal(rng, (n, c, s, s), dtype), _normal(rng, (f, c, k, k), dtype, (c * k * k) ** -0.5),
            _normal(rng, (n, f, o, o), dtype))


def run_conv2d(ctx: BenchContext, warnings: list[str]) -> list[dict[str, Any]]:
    def prepare(case: Conv2DCase, pass_: str, rng):
        x, w, dy = conv2d_data(case, rng, ctx.dtype)
        outputs = {"forward": dy.nbytes, "backward_data": x.nbytes, "backward_weights": w.nbytes,
                   "forward_backward": dy.nbytes + x.nbytes + w.nbytes}[pass_]
        op = ctx.ops.conv2d(x, w, dy, stride=case.stride, pad=case.pad, pass_=pass_)
        return op, x.nbytes + w.nbytes + dy.nbytes + outputs

    return _op_family(ctx, warnings, prepare, conv2d_work)


def dense_data(case: DenseCase, rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, ...]:
    n, i, o = case.batch, case.in_features, case.out_features
    return (_normal(rng, (n, i), dtype), _normal(rng, (i, o), dtype, i ** -0.5), _normal(rng, (n, o), dtype))


def run_dense(ctx: BenchContext, warnings: list[str]) -> list[dict[str, Any]]:
    def prepare(case: DenseCase, pass_: str, rng):
        x, w, dy = dense_data(case, rng, ctx.dtype)
        outputs = {"forward": dy.nbytes, "backward": x.nbytes + w.nbytes,
                   "forward_backward": dy.nbytes + x.nbytes + w.nbytes}[pass_]
        return ctx.ops.dense(x, w, dy, pass_=pass_), x.nbytes + w.nbytes + dy.nbytes + outputs

    return _op_family(ctx, warnings, prepare, dense_work)


def pool_data(case: PoolCase, rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, ...]:
    n, c, s, o = case.batch, case.channels, case.size, case.out_size
    return _normal(rng, (n, c, s, s), dtype), _normal(rng, (n, c, o, o), dtype)


def run_pooling(ctx: BenchContext, warnings: list[str]) -> list[dict[str, Any]]:
    def prepare(case: PoolCase, pass_: str, rng):
        x, dy = pool_data(case, rng, ctx.dtype)
        op = ctx.ops.pool(x, dy, kind=case.kind, size=case.window, stride=case.step, pass_=pass_)
        return op, 2 * (x.nbytes + dy.nbytes)

    return _op_family(ctx, warnings, prepare, pool_work)


def batchnorm_data(case: BatchNormCase, rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, ...]:
    n, c, s = case.batch, case.channels, case.size
    gamma = (1.0 + 0.1 * rng.standard_normal(c)).astype(dtype)
    beta = (0.1 * rng.standard_normal(c)).astype(dtype)
    return _normal(rng, (n, c, s, s), dtype), gamma, beta, _normal(rng, (n, c, s, s), dtype)


def run_batchnorm(ctx: BenchContext, warnings: list[str]) -> list[dict[str, Any]]:
    def prepare(case: BatchNormCase, pass_: str, rng):
        x, gamma, beta, dy = batchnorm_data(case, rng, ctx.dtype)
        op = ctx.ops.batchnorm(x, gamma, beta, dy, momentum=case.momentum, eps=case.eps, pass_=pass_)
        return op, 3 * x.nbytes  # x, dy and the output

    return _op_family(ctx, warnings, prepare, batchnorm_work)


# ---------------------------------------------------------------------------------------------
# Optimizer steps (+ the convergence check through each backend's trainer)
# ---------------------------------------------------------------------------------------------

def _optim_grid(cases) -> Iterator[tuple[int, OptimCase, str, int]]:
    for index, case in enumerate(cases):
        for name in case.optimizers:
            for n in case.params:
                yield index, case, name, n


def run_optim_step(ctx: BenchContext, warnings: list[str]) -> list[dict[str, Any]]:
    from ..spec import OptimizerSpec

    rows = []
    for index, case, name, n in _optim_grid(ctx.spec.cases):
        what = f"optim_step {name} n={n:,}"
        ctx.progress(what)
        base = {"name": case.name or name, "optimizer": name, "params": n}
        try:
            memory = _CaseMemory(ctx)
            rng = _rng(ctx, index * 1000 + n % 997)
            params = _normal(rng, n, ctx.dtype, 0.1)
            grad = _normal(rng, n, ctx.dtype, 0.01)
            spec = OptimizerSpec(name=name, lr=case.lr, weight_decay=case.weight_decay)
            op = ctx.ops.optimizer_step(spec, params, grad)
            flops, nbytes = optimizer_work(name, n, ctx.itemsize, case.weight_decay)
            _, row = _timed_row(ctx, what, op.run, ctx.ops.sync, flops, nbytes, warnings)
            row["achieved_gflops"] = row.pop("gflops")  # "gflops" marks conv-like rows in the report
            row.pop("gflops_ci95", None)
            slots = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adagrad": 1}.get(name, 2)
            rows.append({**base, **row, **memory.fields((2 + slots) * params.nbytes), "op": op.info})
            del op
        except Exception as exc:  # noqa: BLE001
            rows.append(_failed_row(base, what, exc, warnings))
        gc.collect()
    return rows


def convergence_problem(conv, seed: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed classification problem: ``x`` ``(samples, features)`` standard normal, labels
    from a random linear teacher (argmax of ``x @ T``), int64."""
    rng = np.random.default_rng([seed, 7])
    x = rng.standard_normal((conv.samples, conv.features))
    teacher = rng.standard_normal((conv.features, conv.classes))
    return x.astype(dtype), np.argmax(x @ teacher, axis=1).astype(np.int64)


def run_convergence(ctx: BenchContext, warnings: list[str]) -> dict[str, list[float]]:
    """Loss of every step of each optimizer on `convergence_problem`, via ``backend.build``."""
    from ..backend import BuildRequest
    from ..layers import Dense
    from ..model import analyze, initial_weights
    from ..spec import DatasetSpec, ModelSpec, OptimizerSpec, TaskInfo, TaskSpec, TrainingSpec

    conv = ctx.spec.convergence
    if conv is None or not conv.steps:
        return {}
    seed = ctx.spec.bench.seed
    x, y = convergence_problem(conv, seed, ctx.dtype)
    model = ModelSpec(layers=(Dense(units=conv.hidden, activation="relu"), Dense(units=conv.classes)),
                      init="xavier_uniform")
    info = analyze(model, (conv.features,), conv.classes, ctx.spec.source)
    weights = initial_weights(model, info, seed, ctx.dtype)
    names = list(dict.fromkeys(name for case in ctx.spec.cases for name in case.optimizers))
    curves: dict[str, list[float]] = {}
    bs = conv.batch_size
    for name in names:
        ctx.progress(f"convergence {name} ({conv.steps} steps)")
        lr = convergence_lr(conv, name)
        task = TaskSpec(task=TaskInfo(name=f"{ctx.spec.name}-convergence-{name}"),
                        dataset=DatasetSpec(name="synthetic", validation_split=0.0, shape=(conv.features,)),
                        model=model, optimizer=OptimizerSpec(name=name, lr=lr, weight_decay=conv.weight_decay),
                        training=TrainingSpec(batch_size=bs, epochs=1, seed=seed, dtype=ctx.dtype),
                        backend=dict(ctx.spec.backend), source=ctx.spec.source)
        try:
            trainer = ctx.backend.build(BuildRequest(task, info, weights, ctx.device, conv.classes))
            batches = [trainer.to_device(x[i:i + bs], y[i:i + bs]) for i in range(0, conv.samples - bs + 1, bs)]
            handles = [trainer.train_step(batches[step % len(batches)], lr) for step in range(conv.steps)]
            trainer.sync(handles[-1])
            curves[name] = [float(v) for v in trainer.fetch(handles)[:, 0]]
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"convergence {name}: failed ({type(exc).__name__}: {exc})".splitlines()[0])
        gc.collect()
    return curves


# ---------------------------------------------------------------------------------------------
# Parameter scaling: the same models at growing input sizes, through the trainer
# ---------------------------------------------------------------------------------------------

def scaling_task(ctx: BenchContext, case: ScalingCase, size: int):
    """The training spec of ``case`` at ``size`` x ``size`` inputs, and its analysis."""
    from ..model import analyze
    from ..spec import DatasetSpec, ModelSpec, OptimizerSpec, TaskInfo, TaskSpec, TrainingSpec

    shape = (case.channels, size, size)
    model = ModelSpec(layers=case.layers, init=case.init)
    info = analyze(model, shape, case.classes, ctx.spec.source)
    task = TaskSpec(task=TaskInfo(name=f"{ctx.spec.name}-{case.model}-{size}"),
                    dataset=DatasetSpec(name="synthetic", validation_split=0.0, shape=shape), model=model,
                    optimizer=OptimizerSpec(name=case.optimizer, lr=case.lr),
                    training=TrainingSpec(batch_size=case.batch_size, epochs=1, seed=ctx.spec.bench.seed,
                                          dtype=ctx.dtype),
                    backend=dict(ctx.spec.backend), source=ctx.spec.source)
    return task, info


def _train_step(trainer, batch, lr: float) -> Callable[[], Any]:
    """One ``trainer.train_step`` on the same device batch, as a zero-argument op."""
    return lambda: trainer.train_step(batch, lr)


def run_param_scaling(ctx: BenchContext, warnings: list[str]) -> list[dict[str, Any]]:
    from ..backend import BuildRequest
    from ..model import initial_weights

    rows = []
    for index, case in enumerate(ctx.spec.cases):
        for size in case.inputs:
            what = f"param_scaling {case.model} {case.channels}x{size}x{size}"
            ctx.progress(what)
            base = {"name": case.model, "model": case.model, "input": size, "channels": case.channels,
                    "batch_size": case.batch_size}
            try:
                memory = _CaseMemory(ctx)
                task, info = scaling_task(ctx, case, size)
                base["params"] = info.trainable_count
                weights = initial_weights(task.model, info, task.training.seed, ctx.dtype)
                started = time.perf_counter()
                trainer = ctx.backend.build(BuildRequest(task, info, weights, ctx.device, case.classes))
                build_s = time.perf_counter() - started
                rng = _rng(ctx, index * 10_000 + size)
                x = _normal(rng, (case.batch_size, case.channels, size, size), ctx.dtype)
                y = rng.integers(0, case.classes, case.batch_size)
                batch = trainer.to_device(x, y)
                trainer.sync()
                flops = 3 * info.forward_flops * case.batch_size
                step = _train_step(trainer, batch, case.lr)
                _, row = _timed_row(ctx, what, step, trainer.sync, flops, None, warnings)
                row["achieved_gflops"] = row.pop("gflops")
                row.pop("gflops_ci95", None)
                slots = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adagrad": 1}.get(case.optimizer, 2)
                param_bytes = sum(int(np.prod(p.shape)) for p in info.params) * ctx.itemsize
                analytic = {"params": param_bytes * (2 + slots),  # weights, gradients, optimizer slots
                            "activations_per_batch": info.activation_floats * case.batch_size * ctx.itemsize}
                rows.append({**base, **row, "params_backend": trainer.num_trainable(), "build_s": build_s,
                             "samples_per_s": case.batch_size / row["median_s"] if row["median_s"] else None,
                             "first_step_s": row["first_call_s"], "analytic_memory_bytes": analytic,
                             "compile_info": dict(trainer.compile_info),
                             **memory.fields(sum(analytic.values()), trainer.peak_device_memory())})
                del trainer, batch, step
            except Exception as exc:  # noqa: BLE001
                rows.append(_failed_row(base, what, exc, warnings))
            gc.collect()
    return rows


# ---------------------------------------------------------------------------------------------

FAMILIES: dict[str, Callable[[BenchContext, list[str]], list[dict[str, Any]]]] = {
    "conv2d": run_conv2d, "dense": run_dense, "pooling": run_pooling, "batchnorm": run_batchnorm,
    "optim_step": run_optim_step, "param_scaling": run_param_scaling,
}
#: Families timed through `fwbench.ops.Ops` (param_scaling uses the trainer instead).
OPS_FAMILIES = ("conv2d", "dense", "pooling", "batchnorm", "optim_step")


def run_bench(spec: BenchSpec, backend, device: str, *, peak_flops: float | None = None,
              peak_bandwidth: float | None = None, progress: Callable[[str], None] = lambda m: None,
              protocol: Protocol | None = None) -> BenchResult:
    """Every case of ``spec`` on ``backend`` (already configured) -> metrics for the record.

    Raises:
        RuntimeError: every case failed (the first error is named).
    """
    # on a GPU a timed unit is a loop of calls and one sync (launch latency is not the op)
    protocol = protocol or Protocol.from_settings(spec.bench, sync_each_call=device != "gpu")
    ctx = BenchContext(spec, backend, device, protocol, peak_flops, peak_bandwidth, progress)
    compile_info: dict[str, Any] = {}
    if spec.family in OPS_FAMILIES:
        ctx.ops = backend.ops(device, spec.bench.dtype, dict(spec.backend))
        compile_info = dict(ctx.ops.compile_info)
    warnings: list[str] = []
    rows = FAMILIES[spec.family](ctx, warnings)
    if not compile_info:  # param_scaling: what its trainers reported
        compile_info = next((dict(r["compile_info"]) for r in rows if r.get("compile_info")), {})
    metrics: dict[str, Any] = {"family": spec.family, "cases": rows,
                               "peak_gflops": peak_flops / 1e9 if peak_flops else None,
                               "peak_bandwidth_gbps": peak_bandwidth / 1e9 if peak_bandwidth else None}
    if spec.family == "optim_step":
        metrics["convergence"] = run_convergence(ctx, warnings)
        if metrics["convergence"]:
            metrics["convergence_final_loss"] = {k: v[-1] for k, v in metrics["convergence"].items()}
    ok = [r for r in rows if "error" not in r]
    if rows and not ok:
        raise RuntimeError(f"every case failed; the first: {rows[0]['error']}")
    percents = [r["percent_of_peak"] for r in ok if r.get("percent_of_peak") is not None]
    # the record-level number: the best case (a machine's roofline is reached by its best kernel)
    metrics["percent_of_peak"] = max(percents) if percents else None
    metrics["cases_ok"], metrics["cases_failed"] = len(ok), len(rows) - len(ok)
    metrics["peak_host_bytes_seen"] = ctx.host_peak or None
    return BenchResult(metrics, warnings, compile_info)
