"""Example records with the real schema (`fwbench.records.record.new_record`), for tests and report previews
(no training needed).

    from record_samples import example_records
    write_report(example_records(), "preview.html")   # every section of the report has data
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from fwbench.measure.timing import summarize
from fwbench.records.record import new_record

RUN_ID = "20260101-120000-c0ffee"
UNSTABLE = "train step: unstable (CV 12.0% > 5%); close other programs or add repeats"


def _env(backend: str, threads: int = 2) -> dict[str, Any]:
    return {
        "fwbench": "0.1.0", "git": {"commit": "0123456789abcdef", "dirty": False}, "python": "3.11.7",
        "implementation": "CPython", "os": "Linux 6.1", "platform": "Linux-6.1-x86_64", "hostname": "example-host",
        "cpu": {"model": "Example CPU 3000", "machine": "x86_64", "logical_cores": 8, "affinity": threads,
                "flags": ["avx", "avx2", "fma"]},
        "threads": threads,
        "blas": [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.27", "num_threads": threads,
                  "threading_layer": "pthreads", "architecture": "Haswell"}],
        "numpy": "2.0.0", "env_vars": {"OMP_NUM_THREADS": str(threads)}, "argv": [], "plugins": {},
        "backend": {"framework": backend, f"{backend}_version": "1.0", "threads": threads},
    }


def example_record(backend: str = "torch", task: str = "mlp_mnist", *, dataset: str = "digits",
                   device: str = "cpu", overrides: dict | None = None, status: str = "ok",
                   error: str | None = None, step_time: float = 0.01, noise: float = 0.0003,
                   n_steps: int = 40, seed: int = 0, accuracy: float = 0.9, params: int = 9610,
                   peak_host_bytes: int = 400 * 2**20, compile_s: float | None = 0.5, epochs: int = 3,
                   batch_size: int = 64, conv: bool | None = None, run_id: str = RUN_ID,
                   warnings: list[str] | None = None, family: str = "train", repeats: int = 1,
                   repeat_cv: float = 0.02) -> dict[str, Any]:
    """One record as `fwbench.run.worker` writes it. ``step_time ± noise`` gives the raw step times.

    ``repeats > 1``: that many repeats (processes) whose step times differ by ``repeat_cv`` (log-normal,
    seeded), merged into one record as `bench run --repeat` does (`fwbench.measure.repeats.merge_repeats`).
    """
    if repeats > 1 and status == "ok":
        from fwbench.measure.repeats import merge_repeats

        rng = np.random.default_rng([seed, 7])
        factors = np.exp(repeat_cv * rng.standard_normal(repeats))
        singles = []
        for i, factor in enumerate(factors, start=1):
            one = example_record(backend, task, dataset=dataset, device=device, overrides=overrides,
                                 step_time=step_time * factor, noise=noise * factor, n_steps=n_steps,
                                 seed=seed * 1000 + i, accuracy=accuracy, params=params,
                                 peak_host_bytes=peak_host_bytes, compile_s=compile_s, epochs=epochs,
                                 batch_size=batch_size, conv=conv, run_id=run_id, warnings=warnings, family=family)
            one["repeat"] = i
            singles.append(one)
        return merge_repeats(singles)
    overrides = {"dataset.name": dataset, **(overrides or {})}
    conv = task.startswith("cnn") if conv is None else conv
    cell_id = "__".join([backend, task, device] + [f"{k}={v}" for k, v in sorted(overrides.items())])
    record: dict[str, Any] = new_record(
        run_id=run_id, cell_id=cell_id, backend=backend, backend_version="1.0", task=task, device=device,
        dataset=dataset, synthetic_data=False, overrides=overrides, profile="quick", status=status, error=error,
        warnings=list(warnings or []), params_expected=params,
        config={"task": {"name": task, "description": "example", "family": family},
                "model": {"layers": [{"type": "conv2d", "filters": 8, "kernel": 3}] if conv
                          else [{"type": "dense", "units": 10}]},
                "optimizer": {"name": "adam", "lr": 0.001},
                "training": {"batch_size": batch_size, "epochs": epochs}},
        started_at="2026-01-01T12:00:00+00:00", finished_at="2026-01-01T12:00:10+00:00", wall_s=10.0)
    if status != "ok":
        record["error"] = error or f"example {status} cell"
        return record
    rng = np.random.default_rng(seed)
    raw = step_time + noise * rng.standard_normal(n_steps)
    stats = summarize(np.abs(raw))
    history = []
    for epoch in range(1, epochs + 1):
        frac = epoch / epochs
        history.append({"epoch": epoch, "train_loss": 2.3 * math.exp(-1.5 * frac),
                        "train_accuracy": accuracy * frac * 0.95,
                        "val_loss": 2.0 * math.exp(-1.4 * frac), "val_accuracy": accuracy * (0.6 + 0.4 * frac),
                        "lr": 0.001, "train_time_s": epoch * n_steps * step_time / epochs})
    n_classes = 10
    per_class = 36
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    for k in range(n_classes):
        right = round(per_class * accuracy)
        confusion[k, k] = right
        confusion[k, (k + 1) % n_classes] = per_class - right
    metrics: dict[str, Any] = {
        "test_accuracy": accuracy, "test_loss": 0.3, "best_val": {"epoch": epochs, "val_loss": history[-1]["val_loss"]},
        "throughput_samples_per_s": batch_size / stats["median"],
        "throughput_ci95": [batch_size / stats["ci95_high"], batch_size / stats["ci95_low"]],
        "step_time_s": stats, "first_step_s": (compile_s or 0) + step_time, "compile_s": compile_s,
        "epochs_run": epochs, "steps": n_steps + 1, "history": history,
        "early_stopping": {"stopped_early": False, "best_epoch": epochs, "restored_best": False,
                           "monitor": "val_loss", "patience": 3},
        "confusion_matrix": confusion.tolist(), "class_names": [str(k) for k in range(n_classes)],
        "peak_host_bytes": peak_host_bytes, "peak_device_bytes": None,
    }
    if conv:
        metrics["first_layer_filters"] = rng.standard_normal((8, 1, 3, 3)).round(4).tolist()
    record.update(params=params, metrics=metrics, env=_env(backend),
                  compile_info={"mode": "jit" if backend == "jax" else "eager"},
                  data={"train": 1293, "val": 144, "test": 360, "input_shape": [1, 8, 8]})
    return record


def conv2d_record(backend: str, speed: float = 1.0) -> dict[str, Any]:
    """A conv2d sweep record: GFLOP/s per shape and pass, and the machine's peak."""
    record = example_record(backend, "conv2d_sweep", family="conv2d", accuracy=0.0)
    cases = []
    for i, shape in enumerate(["32x3x32x32 k3 f16", "32x16x16x16 k3 f32", "8x64x8x8 k3 f64"]):
        for j, p in enumerate(["forward", "backward"]):
            g = speed * (20 + 15 * i) / (1 + j)
            cases.append({"shape": shape, "pass": p, "median_s": 0.5 / g, "gflops": g, "ci95": [0.9 * g, 1.1 * g]})
    record["metrics"] = {"cases": cases, "peak_gflops": 120.0}
    record["params"] = None
    return record


def optimizer_record(backend: str, speed: float = 1.0) -> dict[str, Any]:
    """An optimizer benchmark record: update time per parameter count, convergence per optimizer."""
    record = example_record(backend, "optimizers", family="optimizer", accuracy=0.0)
    names = ["sgd", "momentum", "adam", "rmsprop"]
    cases = [{"optimizer": o, "params": p, "median_s": (1 + k) * p * 2e-9 / speed}
             for k, o in enumerate(names) for p in (10_000, 100_000, 1_000_000)]
    convergence = {o: [2.3 * math.exp(-(0.05 + 0.02 * k) * s) for s in range(60)] for k, o in enumerate(names)}
    record["metrics"] = {"cases": cases, "convergence": convergence}
    record["params"] = None
    return record


def scaling_record(backend: str, speed: float = 1.0) -> dict[str, Any]:
    """A parameter-scaling record: params and step time per input size, MLP and CNN."""
    record = example_record(backend, "param_scaling", family="scaling", accuracy=0.0)
    cases = []
    for size in (8, 16, 28, 56):
        cases.append({"model": "mlp", "input": size, "params": size * size * 128 + 128 * 10 + 138,
                      "median_s": size * size * 4e-7 / speed})
        cases.append({"model": "cnn", "input": size, "params": 21386 + 64 * 10 * (size // 4) ** 2,
                      "median_s": size * size * 2e-6 / speed})
    record["metrics"] = {"cases": cases}
    record["params"] = None
    return record


def study_records() -> list[dict[str, Any]]:
    """A small `regularization` study run (`fwbench.studies.spec`): two variants on two backends."""
    out = []
    for backend, speed in (("torch", 1.0), ("jax", 2.0)):
        for order, (task, label, train, val) in enumerate((("mlp_overfit", "none", 1.0, 0.80),
                                                            ("mlp_overfit_dropout", "dropout", 0.86, 0.87))):
            record = example_record(backend, task, dataset="mnist_5k", step_time=0.004 / speed, accuracy=val,
                                    seed=5 + order, params=669706, epochs=4, run_id="20260101-130000-f00d01")
            for row in record["metrics"]["history"]:
                row["train_eval_accuracy"] = min(1.0, train * (0.7 + 0.1 * row["epoch"]))
            record["metrics"].update(final_train_accuracy=train, final_val_accuracy=val)
            record["study"] = {"name": "regularization", "title": "Regularization: closing the gap", "kind":
                               "regularization", "label": label, "group": label, "order": order, "grid": {},
                               "saves_weights": False, "init_from": None, "note": f"{label} variant",
                               "description": "A wide MLP memorises its training digits.\n\nRun it with "
                                              "`bench study regularization`.", "profile": "quick"}
            out.append(record)
    return out


def frontend_records() -> list[dict[str, Any]]:
    """Keras on JAX and torch, and Flax, beside the raw torch/jax mlp_mnist cells of
    `example_records` (the report's frontend x engine view)."""
    out = []
    for backend, engine, slowdown, seed in (("keras", "jax", 1.3, 11), ("keras", "torch", 3.0, 12),
                                            ("flax", "jax", 1.1, 13)):
        raw_speed = 2.0 if engine == "jax" else 1.0
        overrides = {"backend.engine": engine} if backend == "keras" else {}
        record = example_record(backend, "mlp_mnist", overrides=overrides, step_time=0.002 / raw_speed * slowdown,
                                accuracy=0.905, seed=seed)
        record.update(frontend=backend, engine=engine, frontend_version="1.0", engine_version="1.0",
                      backend_mode="exact")
        out.append(record)
    return out


def tune_records() -> list[dict[str, Any]]:
    """A `bench tune` run (`fwbench.run.tune`): torch, where compiled fp32 wins (bf16 is faster but
    loses 2 points), and numpy, whose bf16 is not faster beyond both intervals (fp32 stays)."""
    out = []
    for backend, precision, execution, step_time, accuracy in (
            ("torch", "fp32", "eager", 0.002, 0.92), ("torch", "fp32", "compiled", 0.0012, 0.921),
            ("torch", "bf16", "eager", 0.0008, 0.90), ("numpy", "fp32", None, 0.004, 0.92),
            ("numpy", "bf16", None, 0.0039, 0.919)):
        overrides = {"training.precision": precision, "dataset.placement": "host"}
        if execution:
            overrides["backend.execution"] = execution
        record = example_record(backend, "mlp_mnist", dataset="mnist_5k", overrides=overrides, step_time=step_time,
                                accuracy=accuracy, seed=21, repeats=3, run_id="20260101-140000-7e7e01")
        record["precision"] = precision
        out.append(record)
    return out


def inference_sample(backend: str, speed: float = 1.0, task: str = "mlp_mnist", repeats: int = 3,
                     joules: float | None = None) -> dict[str, Any]:
    """An inference record (`bench run --scenario inference`) of ``repeats`` merged processes."""
    from fwbench.measure.repeats import merge_repeats

    rng = np.random.default_rng(len(backend))
    singles = []
    for i in range(1, repeats + 1):
        factor = float(np.exp(0.03 * rng.standard_normal()))
        batches = []
        for batch in (1, 8, 64, 256):
            p50 = (5e-5 + 2e-6 * batch) / speed * factor
            energy = ({"available": True, "counter": "nvml", "joules_per_unit": joules * factor / batch ** 0.5,
                       "joules_per_call": joules * factor * batch ** 0.5} if joules
                      else {"available": False, "reason": "unavailable: no RAPL package domain (example)"})
            batches.append({"batch_size": batch, "calls": 400, "p50_s": p50, "p90_s": p50 * 1.3, "p99_s": p50 * 2.5,
                            "throughput_samples_per_s": batch / p50, "first_call_s": p50 * 20, "energy": energy})
        one = example_record(backend, task, seed=40 + i)
        one.update(repeat=i, scenario="inference", overrides={**one["overrides"], "scenario": "inference"},
                   cell_id=one["cell_id"] + "__scenario=inference")
        one["metrics"] = {"inference": {"batches": batches, "cold_start_s": 2.0 / speed + 0.1 * i},
                          "peak_host_bytes": 300 * 2**20}
        singles.append(one)
    return merge_repeats(singles)


def example_records() -> list[dict[str, Any]]:
    """Records that give every section of the report some data (two backends, a sweep, a study,
    failures)."""
    records = []
    for backend, speed, acc in (("torch", 1.0, 0.90), ("jax", 2.0, 0.91)):
        records.append(example_record(backend, "mlp_mnist", step_time=0.002 / speed, accuracy=acc, seed=1))
        records.append(example_record(backend, "cnn_mnist", step_time=0.02 / speed, accuracy=acc + 0.03,
                                      params=21386, seed=2, warnings=[UNSTABLE]))
        for lr, delta in ((0.1, -0.05), (0.01, 0.04)):
            records.append(example_record(backend, "mlp_mnist", overrides={"optimizer.lr": lr},
                                          step_time=0.002 / speed, accuracy=acc + delta, seed=3))
        records.append(conv2d_record(backend, speed))
        records.append(optimizer_record(backend, speed))
        records.append(scaling_record(backend, speed))
    records += study_records()
    records += frontend_records()
    records += tune_records()
    records += [inference_sample("torch", 1.0, joules=0.02), inference_sample("jax", 1.4),
                inference_sample("onnxruntime", 2.0)]
    records.append(example_record("tensorflow", "mlp_mnist", status="failed",
                                  error="RuntimeError: example failure"))
    records.append(example_record("numpy", "cnn_mnist", status="skipped", error="numpy is not installed"))
    return records
