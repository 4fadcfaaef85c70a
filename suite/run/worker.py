"""One cell, in its own process: ``python -m fwbench.run.worker CELL.json RESULT.json``.

Never raises: every outcome, errors included, becomes a record written to RESULT.json. The driver
(`fwbench.run.local`) turns a process that dies without writing one into a failed record itself.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..backend import Unsupported
from ..errors import DeviceError, UsageError
from ..frontends import bind, identity_of
from ..records.record import CASES, ENERGY, PEAK_DEVICE, PEAK_HOST, TEST_ACCURACY, new_record
from ..records.results import now_iso
from .process import memory_status, pin_threads, watch_parent


def resolve_device(backend, requested: str) -> str:
    """``cpu`` / ``gpu`` as asked; ``auto`` asks the backend, which must answer without starting
    its framework's devices (`fwbench.backend.Backend.gpu_available`), so that `configure` still
    comes first. A ``gpu`` that is not there is found by `_check_gpu`, after `configure`."""
    if requested == "auto":
        return "gpu" if backend.gpu_available() else "cpu"
    return "gpu" if requested == "gpu" else "cpu"


def _check_gpu(backend) -> None:
    if not backend.gpu_available():
        checked = getattr(backend, "gpu_check", "the framework's device list")
        raise DeviceError(f"--device gpu: backend {backend.name!r} sees no GPU (checked {checked}); "
                          "use --device cpu, or --device auto to fall back to the CPU")


def progress(message: str) -> None:
    """One line for the driver's progress display (it reads the last line of our output)."""
    print(f"[fwbench] {message}", flush=True)


def not_applicable(reason: str) -> str:
    """The error text of a cell whose backend declined the task (`Backend.supports`, `Unsupported`)."""
    return f"not applicable: {reason or 'the backend does not support this task'}"


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Run one cell to a record. Exceptions become ``status: failed`` with the reason."""
    from ..plugins import get_plugin_manager, get_registry

    started, t0 = now_iso(), time.perf_counter()
    record: dict[str, Any] = new_record(
        run_id=cell["run_id"], cell_id=cell["cell_id"], backend=cell["backend"], task=cell["task"],
        device=cell["device"], overrides=cell.get("overrides") or {}, profile=cell.get("profile"),
        status="failed", started_at=started)
    threads = int(cell["threads"])
    try:
        cpus = pin_threads(threads, cell.get("cpus"))
        registry = get_registry()
        backend = registry.get_backend(cell["backend"])
        availability = backend.availability()
        if not availability.ok:
            record.update(status="skipped", error=str(availability))
            return record
        record["env"] = _environment(threads, get_plugin_manager())
        record["env"]["cpus"] = cpus
        from ..spec import is_bench_spec, load_task

        spec = load_task(cell["task_path"], cell.get("overrides"), cell.get("profile"))
        backend = bind(backend, spec.backend, spec.source)  # a frontend picks its engine
        support = backend.supports(spec)
        if not support.ok:
            record.update(status="skipped", error=not_applicable(support.reason),
                          dataset="synthetic" if is_bench_spec(spec) else spec.dataset.name)
            return record
        if not is_bench_spec(spec):
            from ..backend import precision_availability

            support = precision_availability(backend, spec, cell["device"])
            if not support.ok:
                record.update(status="skipped", error=not_applicable(support.reason),
                              dataset=spec.dataset.name, precision=spec.training.precision)
                return record
        if is_bench_spec(spec):
            _bench_cell(cell, record, backend, spec, threads)
        elif spec.task.scenario == "inference":
            from ..inference.scenario import run_inference_cell

            run_inference_cell(cell, record, backend, registry, threads, load_data=_load_data,
                               configure=_configure, progress=progress)
        else:
            _train_cell(cell, record, backend, registry, threads)
        _complete_environment(record)
        record["status"] = "ok"
    except UsageError as exc:
        record["error"] = str(exc)
    except Unsupported as exc:  # the backend declined the task in build: not applicable, no failure
        record.update(status="skipped", error=not_applicable(str(exc)))
    except BaseException as exc:  # noqa: BLE001 - a crash in a backend is data, not a crash of the run
        record["error"] = f"{type(exc).__name__}: {exc}".strip()
        record["traceback"] = traceback.format_exc(limit=20)
    finally:
        record["finished_at"] = now_iso()
        record["wall_s"] = time.perf_counter() - t0
    return record


def _environment(threads: int, pm) -> dict[str, Any]:
    from ..records.environment import collect

    env = collect(threads)
    extra = {}
    for item in pm.hook.fwbench_environment():
        if item:
            extra.update(item)
    env["plugins"] = extra
    return env


def _load_data(cell, record, registry, task):
    """The task's dataset, prepared (`fwbench.datasets.pipeline.prepare`), and the model's analysis:
    ``(dataset, data, info)``; the record gets the dataset's facts."""
    from ..datasets.base import default_data_dir
    from ..datasets.packaged import Synthetic
    from ..datasets.pipeline import prepare
    from ..model import analyze

    dataset = registry.get_dataset(task.dataset.name)
    if isinstance(dataset, Synthetic) and task.dataset.shape:
        dataset = Synthetic(input_shape=task.dataset.shape)
    if task.dataset.classes:  # a subset of the classes, relabelled 0..k-1
        from ..datasets.subset import ClassSubset

        dataset = ClassSubset(dataset, task.dataset.classes, task.source)
    record["dataset"] = dataset.name
    data_dir = Path(cell.get("data_dir") or default_data_dir())
    progress(f"loading {dataset.name}")
    arrays = dataset.load(data_dir)
    data = prepare(arrays, dataset, task.dataset, task.training.seed, task.training.dtype)
    record["synthetic_data"] = data.synthetic
    record["data"] = {"train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test),
                      "input_shape": list(data.input_shape), "normalization": data.normalization}
    info = analyze(task.model, data.input_shape, dataset.num_classes, task.source)
    record["params_expected"] = info.trainable_count
    return dataset, data, info


def _train_cell(cell, record, backend, registry, threads) -> None:
    from ..backend import BuildRequest
    from ..model import check_weights, initial_weights
    from ..spec import load_task, spec_to_dict
    from ..training import train

    task = load_task(cell["task_path"], cell.get("overrides"), cell.get("profile"))
    record["config"] = spec_to_dict(task)
    dataset, data, info = _load_data(cell, record, registry, task)
    if task.training.batch_size > len(data.x_train):
        raise UsageError(f"{task.source} [training.batch_size]: {task.training.batch_size} is larger than "
                         f"the {len(data.x_train)} training samples; lower it or use more data")

    device, baseline = _configure(backend, cell, record, threads, task.training.precision)

    weights = initial_weights(task.model, info, task.training.seed, task.training.dtype)
    if task.model.init_from:  # a checkpoint: matching arrays replace the canonical init
        from ..records.checkpoints import apply_init_from

        weights, record["init_from"] = apply_init_from(task.model.init_from, weights, task.source)
        if record["init_from"].get("warning"):
            record["warnings"].append(record["init_from"]["warning"])
    check_weights(info, weights)  # the core checks the canonical table before any backend sees it
    t_build = time.perf_counter()
    trainer = backend.build(BuildRequest(task, info, weights, device, dataset.num_classes))
    build_s = time.perf_counter() - t_build
    record["params"] = trainer.num_trainable()
    if record["params"] != info.trainable_count:
        record["warnings"].append(f"parameter count {record['params']} differs from the spec's "
                                  f"{info.trainable_count}: the backend builds a different model")
    epochs = task.training.epochs
    from ..measure.energy import Meter, open_counter, training_energy

    meter = Meter(open_counter(device))  # the device's energy counter, or why there is none

    def on_epoch(row):
        if meter.available:
            row["energy_j"] = meter.since_start()  # cumulative, for the energy to target accuracy
        progress(f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} val_acc {row['val_accuracy']:.4f}")

    peak = _peak_of(record)
    result = train(task, trainer, data, info, peak_flops=peak.flops if peak else None,
                   peak_precision=peak.precision if peak else None, on_epoch=on_epoch)
    result.metrics[ENERGY] = training_energy(meter, result.metrics)
    memory = memory_status()
    result.metrics.update({
        "build_s": build_s,
        PEAK_HOST: memory.get("VmHWM"),
        "host_baseline_bytes": baseline,
        "peak_host_above_baseline_bytes": max(0, memory.get("VmHWM", 0) - baseline),
        PEAK_DEVICE: trainer.peak_device_memory(),
        "analytic_memory_bytes": _analytic_memory(info, task),
    })
    filters = _first_layer_filters(info, result.final_weights)
    if filters is not None:
        result.metrics["first_layer_filters"] = filters
    record["metrics"] = result.metrics
    record["warnings"] += result.warnings
    record["compile_info"] = dict(trainer.compile_info)
    from ..precision import recorded

    record["precision"] = recorded(record)
    if cell.get("save_weights"):  # the final weights (early stopping's best, if restored)
        from ..records.checkpoints import save_checkpoint

        record["weights_path"] = str(save_checkpoint(
            Path(cell["save_weights"]) / f"{cell['cell_id']}.npz", result.final_weights,
            backend=backend.name, task=cell["task"], config=record["config"], dtype=task.training.dtype,
            input_shape=data.input_shape, num_classes=dataset.num_classes, dataset=dataset.name,
            cell_id=cell["cell_id"], run_id=cell["run_id"], test_accuracy=result.metrics.get(TEST_ACCURACY)))


def _add_peak(cell: dict[str, Any], record: dict[str, Any], device: str, precision: str = "fp32") -> None:
    """The peak of the cell's device in its precision (`fwbench.micro.peak.peak_for_cell`), for
    every record; ``env.peak_note`` says when the run has peaks but none in this precision."""
    from ..micro.peak import peak_for_cell, peak_precision

    peak = peak_for_cell(cell, device, precision)
    record["env"]["peak"] = peak.summary() if peak else None
    record["env"]["peak_gflops"] = peak.gflops if peak else None
    if peak is None and peak_for_cell(cell, device) is not None:
        record["env"]["peak_note"] = f"peak not measured for {peak_precision(precision, device)}"


def _peak_of(record: dict[str, Any]):
    """The record's `fwbench.micro.peak.Peak` (``env.peak``), or None."""
    from ..micro.peak import Peak

    return Peak.from_summary(record["env"].get("peak"))


def _complete_environment(record: dict[str, Any]) -> None:
    """Facts known only once the backend ran: dtype, compile mode, BLAS libraries then loaded
    (frameworks bring their own), the GPU and its driver."""
    from ..records.environment import blas_info, framework_kernels, gpu_info, summarize

    env, config = record["env"], record.get("config") or {}
    env["dtype"] = ((config.get("training") or config.get("bench") or {}).get("dtype"))
    env["compile"] = dict(record.get("compile_info") or {})
    try:
        env["blas_loaded"] = blas_info()
    except Exception:  # noqa: BLE001 - a fact, never a failure
        env["blas_loaded"] = None
    env["kernels"] = framework_kernels()
    if record.get("device") == "gpu":
        env["gpu"] = gpu_info()
    env["summary"] = summarize(record)


def _configure(backend, cell, record, threads, precision: str = "fp32") -> tuple[str, int]:
    """Resolve the device and configure the backend (its import happens here, timed apart);
    the record gets the device's peak in ``precision``.

    Returns the device and the resident memory afterwards: the baseline for the cell's peak.
    """
    device = resolve_device(backend, cell["device"])
    record["device"] = device
    _add_peak(cell, record, device, precision)
    progress(f"configuring {backend.name} on {device}")
    t_configure = time.perf_counter()
    from ..records.environment import backend_facts

    record["env"]["backend"] = backend_facts(backend.configure(device=device, threads=threads), device)
    record["configure_s"] = time.perf_counter() - t_configure  # mostly the framework's import
    if device == "gpu":
        _check_gpu(backend)
    record["backend_version"] = backend.version()
    record.update(identity_of(backend))  # frontend, engine and their versions
    return device, memory_status().get("VmRSS", 0)


def _bench_cell(cell, record, backend, spec, threads) -> None:
    """A microbenchmark cell (`fwbench.micro.families`): configure, run every case, record."""
    from ..micro.families import run_bench
    from ..spec import spec_to_dict

    record["config"] = spec_to_dict(spec)
    record["dataset"], record["synthetic_data"] = "synthetic", True
    device, baseline = _configure(backend, cell, record, threads)
    peak = _peak_of(record)
    bandwidth = peak.bandwidth_gbps if peak else None
    result = run_bench(spec, backend, device, peak_flops=peak.flops if peak else None,
                       peak_bandwidth=bandwidth * 1e9 if bandwidth else None, progress=progress)
    memory = memory_status()
    host_peak = max(memory.get("VmHWM", 0), result.metrics.pop("peak_host_bytes_seen", None) or 0)
    device_peaks = [c.get(PEAK_DEVICE) for c in result.metrics[CASES] if c.get(PEAK_DEVICE)]
    result.metrics.update({
        PEAK_HOST: host_peak,
        "host_baseline_bytes": baseline,
        "peak_host_above_baseline_bytes": max(0, host_peak - baseline),
        PEAK_DEVICE: max(device_peaks) if device_peaks else None,
    })
    record["metrics"] = result.metrics
    record["warnings"] += result.warnings
    record["compile_info"] = result.compile_info


def _analytic_memory(info, task) -> dict[str, int]:
    itemsize = 8 if task.training.dtype == "float64" else 4
    params = sum(math.prod(p.shape) for p in info.params)
    return {"params": params * itemsize,
            "activations_per_batch": info.activation_floats * task.training.batch_size * itemsize}


def _first_layer_filters(info, weights) -> list | None:
    """The first conv layer's weights (for the report's filter images), if small enough."""
    for layer in info.walk():
        if layer.layer.kind == "conv2d":
            w = weights.get(f"{layer.path}.weight") if weights else None
            return w.tolist() if w is not None and w.size <= 4096 else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    watch_parent()  # a killed driver takes this cell (and what it started) with it
    cell_path, out_path = map(Path, argv)
    cell = json.loads(cell_path.read_text())
    record = run_cell(cell)
    from ..records.results import dumps

    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(dumps(record))
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
