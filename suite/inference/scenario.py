"""The inference scenario (``bench run --scenario inference``): a trained model answering calls.

One cell process: load the data (for the input shape and real samples), configure the backend,
build the model with the canonical initial weights or a checkpoint (``inference.weights``,
``bench run --weights``) and, for each batch size of the sweep (``[inference] batch_sizes``), time
single ``Trainer.predict`` calls: eval mode (BatchNorm on running statistics, dropout off), the
logits back on the host as NumPy (which waits for the device) before the clock is read. Per batch size:

* ``first_call_s`` (tracing/compilation for that shape) apart, ``warmup_calls`` not counted;
* at least ``min_calls`` calls and ``min_time_s`` seconds (at most ``max_calls``), shape ``(n,)``;
* ``p50_s``, ``p90_s``, ``p99_s``, mean, min, max, CV and the throughput ``batch / p50``;
* joules per call and per sample over extra calls (`fwbench.measure.energy`), where a counter is readable.

``cold_start_s`` is the time from the cell process's start (the kernel's start time of this
process) to the first answer: interpreter, imports, data, build, first call; its parts are
recorded beside it. Peak memory: the process's high-water mark and the backend's device peak.
Intervals across repeats (processes) are made by `fwbench.inference.records.merge_inference`.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SpecError

#: A p99 from fewer calls than this is close to the maximum: the record says so.
TAIL_CALLS = 100


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: ``/proc/self/stat`` against ``CLOCK_BOOTTIME``,
    10 ms resolution), or None where that cannot be read."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the ")" of the name
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def served_weights(task, info, source: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """The weights the model serves: the checkpoint ``task.inference.weights`` (every array of the
    model, by canonical name and shape) or else the canonical initial weights; and the record's
    ``weights`` facts.

    Raises:
        SpecError: the checkpoint lacks an array of the model, has one of another shape, or holds
            arrays the model does not have (it was saved from another model).
    """
    from ..model import initial_weights
    from ..records.checkpoints import load_checkpoint

    dtype = task.training.dtype
    initial = initial_weights(task.model, info, task.training.seed, dtype)
    path = task.inference.weights
    if not path:
        return initial, None
    source = source or task.source
    try:
        checkpoint = load_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise SpecError(source, "inference.weights", f"cannot read checkpoint {path!r} ({exc}); give an .npz "
                        "written by `bench run --save-weights`") from None
    saved = checkpoint.weights
    missing = [n for n in initial if n not in saved]
    wrong = [f"{n} {tuple(saved[n].shape)} (model: {tuple(a.shape)})" for n, a in initial.items()
             if n in saved and tuple(saved[n].shape) != tuple(a.shape)]
    extra = [n for n in saved if n not in initial]
    if missing or wrong or extra:
        what = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
            f"shape of {', '.join(wrong[:2])}" if wrong else "",
            f"arrays the model lacks: {', '.join(extra[:3])}" if extra else "") if part)
        made = checkpoint.meta.get("task")
        raise SpecError(source, "inference.weights",
                        f"checkpoint {path} does not match this model ({what}); give a checkpoint saved "
                        f"from this task" + (f" (it was saved from {made!r})" if made else ""))
    weights = {n: np.asarray(saved[n]).astype(initial[n].dtype, copy=True) for n in initial}
    meta = checkpoint.meta
    return weights, {"path": str(path), "source": {k: meta.get(k) for k in (
        "backend", "task", "dataset", "dtype", "test_accuracy", "cell_id", "created_at")}}


def sample_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` real samples ``(batch, *x.shape[1:])``: the first ones, cycled when there are fewer."""
    index = np.arange(batch) % len(x)
    return np.ascontiguousarray(x[index])


def time_calls(call: Callable[[], Any], *, warmup: int, min_calls: int, min_time_s: float, max_calls: int,
               clock: Callable[[], float] = time.perf_counter) -> tuple[float, np.ndarray]:
    """``(first call s, per-call seconds (n,))``: the first call alone, ``warmup`` uncounted calls,
    then single calls until both ``min_calls`` and ``min_time_s`` are reached (or ``max_calls``).
    ``call`` must return only when the answer is on the host (`Trainer.predict` returns host arrays)."""
    t0 = clock()
    call()
    first = clock() - t0
    for _ in range(warmup):
        call()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_calls and (len(times) < min_calls or spent < min_time_s):
        t0 = clock()
        call()
        elapsed = clock() - t0
        times.append(elapsed)
        spent += elapsed
    return first, np.asarray(times, dtype=np.float64)


def latency_summary(times: np.ndarray, batch: int, max_raw: int = 500) -> dict[str, Any]:
    """Percentiles of per-call seconds ``times (n,)`` for batches of ``batch`` samples."""
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    mean = float(times.mean())
    step = max(1, math.ceil(times.size / max_raw))
    return {"batch_size": batch, "calls": int(times.size), "p50_s": p50, "p90_s": p90, "p99_s": p99,
            "mean_s": mean, "min_s": float(times.min()), "max_s": float(times.max()),
            "cv": float(times.std(ddof=1) / mean) if times.size > 1 and mean > 0 else None,
            "throughput_samples_per_s": batch / p50 if p50 > 0 else None,
            "throughput_mean_samples_per_s": batch / mean if mean > 0 else None,
            "raw": times[::step].tolist(), "raw_stride": step}


def headline(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Top-level metrics the table, compare and the report read: latency at the smallest batch,
    throughput at the largest."""
    ok = [b for b in batches if b.get("p50_s")]
    if not ok:
        return {}
    small, large = min(ok, key=lambda b: b["batch_size"]), max(ok, key=lambda b: b["batch_size"])
    out = {"latency_batch": small["batch_size"], "latency_p50_s": small["p50_s"], "latency_p99_s": small["p99_s"],
           "throughput_batch": large["batch_size"],
           "inference_throughput_samples_per_s": large.get("throughput_samples_per_s")}
    energy = [b.get("energy") or {} for b in ok]
    if any(e.get("available") for e in energy):
        out["energy_j_per_sample"] = {b["batch_size"]: e["joules_per_unit"] for b, e in zip(ok, energy)
                                      if e.get("available")}
    return out


def run_inference(task, trainer, x: np.ndarray, *, energy_counter=None, progress=None,
                  on_first_answer: Callable[[], None] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Time the sweep of ``task.inference`` on ``trainer`` with samples ``x (N, ...)``.

    Returns ``(metrics["inference"], warnings)``. ``on_first_answer`` runs right after the very
    first call returns (the end of the cold start)."""
    from ..measure.energy import measure

    spec = task.inference
    dtype = np.dtype(task.training.dtype)
    rows, warnings = [], []
    for batch in spec.batch_sizes:
        if progress:
            progress(f"inference batch {batch}")
        xb = sample_batch(x, batch).astype(dtype, copy=False)
        fed = trainer.to_device(xb, np.zeros(batch, np.int64))
        trainer.sync()

        def call(fed=fed):
            # host NumPy logits (the `Trainer.predict` contract): the copy waits for the device, so
            # the answer is complete when it returns; a `sync` after it would only add the cost of
            # walking the trainer's whole state (~8 µs a call on JAX at batch 1)
            return trainer.predict(fed)

        t0 = time.perf_counter()
        logits = call()
        first_alone = time.perf_counter() - t0
        if on_first_answer is not None:
            on_first_answer()
            on_first_answer = None
        if not isinstance(logits, np.ndarray):  # a device array may still be computing: untimeable
            raise TypeError(f"predict returned a {type(logits).__name__}, not a host NumPy array "
                            "(the Trainer.predict contract); return e.g. np.asarray(logits)")
        if np.shape(logits)[0] != batch:
            raise RuntimeError(f"predict returned {np.shape(logits)[0]} rows for a batch of {batch}")
        _, times = time_calls(call, warmup=spec.warmup_calls, min_calls=spec.min_calls,
                              min_time_s=spec.min_time_s, max_calls=spec.max_calls)
        row = latency_summary(times, batch)
        row["first_call_s"] = first_alone
        if times.size < TAIL_CALLS:
            warnings.append(f"inference batch {batch}: p99 from {times.size} calls (< {TAIL_CALLS}) is "
                            "close to the slowest call; raise inference.min_calls or min_time_s")
        if spec.energy and energy_counter is not None:
            row["energy"] = measure(energy_counter, call, units=batch)
        rows.append(row)
    return {"batches": rows, **headline(rows)}, warnings


def run_inference_cell(cell, record, backend, registry, threads, *, load_data, configure, progress) -> None:
    """The body of an inference cell (called by `fwbench.run.worker`): fills ``record``.

    ``load_data(cell, record, registry, task)`` -> ``(dataset, data, info)`` and
    ``configure(backend, cell, record, threads)`` -> ``(device, baseline)`` are the worker's own
    steps, shared with training cells."""
    from ..backend import BuildRequest
    from ..measure.energy import open_counter
    from ..run.process import memory_status
    from ..spec import load_task, spec_to_dict

    task = load_task(cell["task_path"], cell.get("overrides"), cell.get("profile"))
    record["config"] = spec_to_dict(task)
    record["scenario"] = "inference"
    t_data = time.perf_counter()
    dataset, data, info = load_data(cell, record, registry, task)
    data_s = time.perf_counter() - t_data
    weights, record["weights"] = served_weights(task, info)
    device, baseline = configure(backend, cell, record, threads)
    t_build = time.perf_counter()
    trainer = backend.build(BuildRequest(task, info, weights, device, dataset.num_classes))
    build_s = time.perf_counter() - t_build
    record["params"] = trainer.num_trainable()
    counter = open_counter(device) if task.inference.energy else None
    answered: dict[str, float | None] = {}

    def first_answer() -> None:
        answered["age"] = process_age_s()
        answered["build_to_answer"] = time.perf_counter() - t_build

    x = data.x_test if len(data.x_test) else data.x_train
    metrics, warnings = run_inference(task, trainer, x, energy_counter=counter, progress=progress,
                                      on_first_answer=first_answer)
    memory = memory_status()
    metrics.update(
        cold_start_s=answered.get("age"),
        cold_start_parts={"configure_s": record.get("configure_s"), "data_s": data_s, "build_s": build_s,
                          "first_call_s": (metrics["batches"][0].get("first_call_s") if metrics["batches"] else None)},
        build_s=build_s,
        peak_host_bytes=memory.get("VmHWM"), host_baseline_bytes=baseline,
        peak_host_above_baseline_bytes=max(0, memory.get("VmHWM", 0) - baseline),
        peak_device_bytes=trainer.peak_device_memory(),
        energy_counter=(None if counter is None else getattr(counter, "name", str(counter))),
    )
    if answered.get("age") is None:
        warnings.append("cold start: this process's start time is not readable here (/proc); not recorded")
    record["metrics"] = {"inference": metrics, **{k: metrics[k] for k in (
        "latency_batch", "latency_p50_s", "latency_p99_s", "throughput_batch", "inference_throughput_samples_per_s",
        "cold_start_s", "peak_host_bytes", "peak_device_bytes", "energy_j_per_sample") if k in metrics}}
    record["warnings"] += warnings
    record["compile_info"] = dict(trainer.compile_info)


def check_servable(registry, task) -> None:
    """Refuse, before any cell starts, a checkpoint (``inference.weights``) that does not match the
    model at its dataset's input shape (`served_weights`). Unknown datasets are left to the planner."""
    from ..model import analyze

    dataset = registry.datasets.get(task.dataset.name)
    if dataset is None or not task.inference.weights:
        return
    shape = tuple(task.dataset.shape) or tuple(dataset.input_shape)
    classes = len(task.dataset.classes) or dataset.num_classes or None
    served_weights(task, analyze(task.model, shape, classes, task.source))
