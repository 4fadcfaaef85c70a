"""The plugin kit's checks, framework-neutral and independent of pytest (`fwbench.testing` runs them).

Each check takes a backend name and (for most) a task name and either returns a short text for
the test report, raises `NotApplicable` (the backend declines the task: a skip) or raises
`KitFailure` with a message that names what is wrong and where the contract says how it should be.
Everything runs in the calling process, on the CPU, with the backend configured once.
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

from ..backend import BuildRequest, Unsupported
from ..measure.timing import too_fast

#: How long a sync may take to return before the audit calls it a hang.
SYNC_TIMEOUT_S = 120.0
#: Steps timed per mode in the sync audit (after `WARMUP` untimed ones).
AUDIT_STEPS, WARMUP = 10, 3


class KitFailure(AssertionError):
    """A contract violation; the message names it and the fix."""


class NotApplicable(Exception):
    """The backend declines this task (`Backend.supports` or `Unsupported` from build)."""


def threads() -> int:
    """The kit's cells get the threads `bench run` gives a cell."""
    from ..run.placement import default_threads

    return default_threads()


@cache
def configured(name: str):
    """The registered backend ``name``, configured once per process on the CPU with one thread."""
    from ..plugins import get_registry

    registry = get_registry()
    if name not in registry.backends:
        raise KitFailure(f"no backend {name!r} is registered (known: {', '.join(sorted(registry.backends))}); "
                         "install its package, whose entry point in the 'fwbench' group registers it")
    backend = registry.backends[name]
    availability = backend.availability()
    if not availability.ok:
        raise KitFailure(f"backend {name!r} is {availability}")
    backend.configure(device="cpu", threads=1)
    return backend


def training_tasks() -> list[str]:
    """Every registered task of the training family (the shipped ones and any a plugin adds)."""
    from ..conformance.checks import training_tasks as names
    from ..plugins import get_registry

    return names(get_registry())


def load(task_name: str):
    from ..plugins import get_registry
    from ..spec import load_task

    return load_task(get_registry().get_task_file(task_name))


def _supported(backend, task) -> None:
    support = backend.supports(task)
    if not support.ok:
        raise NotApplicable(f"not applicable: {support.reason}")


def build(backend, task, dtype: str = "float32"):
    """A trainer for ``task`` at its dataset's shape, with the canonical initial weights."""
    import dataclasses

    from ..conformance.checks import task_input
    from ..model import analyze, initial_weights

    _supported(backend, task)
    task = dataclasses.replace(task, training=dataclasses.replace(task.training, dtype=dtype))
    shape, classes = task_input(task)
    info = analyze(task.model, shape, classes, task.source)
    weights = initial_weights(task.model, info, task.training.seed, dtype)
    try:
        trainer = backend.build(BuildRequest(task, info, weights, "cpu", classes))
    except Unsupported as exc:
        raise NotApplicable(f"not applicable: {exc}") from None
    return trainer, info, weights, shape, classes


def check_conformance(backend_name: str, task_name: str) -> str:
    """`bench check` for one (backend, task): every check against the NumPy float64 reference."""
    from ..conformance.checks import REFERENCE, check_one

    backend, reference = configured(backend_name), configured(REFERENCE)
    checks = check_one(task_name, load(task_name), backend, reference)
    if checks and all(c.skipped for c in checks):
        raise NotApplicable(checks[0].note)
    failed = [c for c in checks if not c.passed and not c.skipped]
    if failed:
        lines = [f"{c.quantity}: max abs err {c.max_abs:.2e}, max rel err {c.max_rel:.2e} {c.note}".rstrip()
                 for c in failed]
        raise KitFailure(f"{len(failed)} of {len(checks)} conformance checks failed on {task_name} "
                         "(see docs/plugins.md, Conventions):\n  " + "\n  ".join(lines))
    skipped = [f"{c.quantity} ({c.note})" for c in checks if c.skipped]
    return f"{len(checks) - len(skipped)} checks passed" + (f"; skipped: {', '.join(skipped)}" if skipped else "")


def check_weights(backend_name: str, task_name: str) -> str:
    """get_weights returns the canonical names, shapes, dtype and the weights it was built with;
    set_weights loads new ones (get_weights returns them, predict changes with them)."""
    backend = configured(backend_name)
    trainer, _, weights, shape, _ = build(backend, load(task_name))
    got = trainer.get_weights()
    if set(got) != set(weights):
        raise KitFailure(f"get_weights names differ from the canonical ones: missing {sorted(set(weights) - set(got))}, "
                         f"unexpected {sorted(set(got) - set(weights))} (names: fwbench.model, layouts: fwbench.layers)")
    for name, want in weights.items():
        have = np.asarray(got[name])
        if have.shape != want.shape or have.dtype != want.dtype:
            raise KitFailure(f"get_weights()[{name!r}] is {have.dtype}{have.shape}, expected the canonical "
                             f"{want.dtype}{want.shape} (layouts: fwbench.layers)")
        if not np.array_equal(have, want):
            raise KitFailure(f"get_weights()[{name!r}] differs from the weights build() was given "
                             f"(max abs diff {np.max(np.abs(have - want)):.2e}); load request.weights as they are")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, *shape)).astype(np.float32)
    batch = trainer.to_device(x, np.zeros(4, np.int64))
    before = np.asarray(trainer.predict(batch), np.float64)
    new = {k: (v + rng.normal(scale=0.1, size=v.shape)).astype(v.dtype) for k, v in weights.items()}
    trainer.set_weights(new)
    again = trainer.get_weights()
    bad = [k for k in new if not np.allclose(np.asarray(again[k]), new[k], rtol=1e-6, atol=1e-7)]
    if bad:
        raise KitFailure(f"after set_weights, get_weights returns other values for {bad[:3]}: the round trip "
                         "must be exact (canonical layouts both ways)")
    after = np.asarray(trainer.predict(batch), np.float64)
    if np.allclose(before, after):
        raise KitFailure("predict gives the same logits after set_weights with other weights: set_weights "
                         "does not reach the model")
    return f"{len(weights)} arrays round-trip"


def check_params(backend_name: str, task_name: str) -> str:
    backend = configured(backend_name)
    trainer, info, *_ = build(backend, load(task_name))
    count = trainer.num_trainable()
    if count != info.trainable_count:
        raise KitFailure(f"num_trainable() is {count}, the spec's model has {info.trainable_count} trainable "
                         "parameters: the backend builds a different model")
    return f"{count} trainable parameters"


def _sync_returns(trainer, handle) -> None:
    """``trainer.sync(handle)``, failing if it raises or does not return within `SYNC_TIMEOUT_S`."""
    error: list[BaseException] = []

    def target():
        try:
            trainer.sync(handle)
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(SYNC_TIMEOUT_S)
    if worker.is_alive():
        raise KitFailure(f"sync() did not return within {SYNC_TIMEOUT_S:g} s")
    if error:
        raise KitFailure(f"sync() raised {type(error[0]).__name__}: {error[0]}")


def machine_peak_flops(backend_name: str, given_gflops: float | None = None) -> tuple[float, str]:
    """FLOP/s the machine reaches and where the number comes from: ``given_gflops``, else the best
    float32 matmul of this backend's ops (if it has them) and NumPy's, measured now, in this
    process (`fwbench.micro.peak.machine_peak` with an in-process measurement and no cache).

    Measured here rather than read from the run cache so that the peak and the steps it bounds are
    timed under the same load: on a shared machine a peak cached at a busy moment is far too low.
    Both numbers are best-of-repeats (a lower bound of the true peak).
    """
    from ..micro.peak import machine_peak, measure_matmul
    from ..plugins import get_registry

    def measure_here(name: str, threads: int, with_bandwidth: bool, device: str = "cpu") -> dict[str, Any]:
        try:
            return {"backend": name, **measure_matmul(configured(name).ops("cpu", "float32"))}
        except KitFailure as exc:
            return {"error": str(exc)}

    backends = get_registry().backends
    among = [n for n in dict.fromkeys([backend_name, "numpy"]) if n in backends and backends[n].has_ops()]
    peak = machine_peak("cpu", 1, among, refresh=True, given=given_gflops, given_as="given with --fwbench-peak",
                        among=among, measure=measure_here, cache=False)
    if peak is None:
        raise KitFailure("no machine peak: neither this backend nor numpy has a matmul op; "
                         "pass --fwbench-peak GFLOPS")
    if peak.source != "measured":
        return peak.flops, peak.source
    return peak.flops, f"{peak.best_backend} float32 matmul, measured now"


def check_sync(backend_name: str, task_name: str, given_peak_gflops: float | None = None) -> str:
    """The sync audit: steps timed with a sync after each and with one sync after all of them.

    Fails if sync raises or hangs, or if either timing implies more FLOP/s than the machine's
    peak (a step that "beats" the machine returned before its work was done: a missing sync).
    """
    backend = configured(backend_name)
    task = load(task_name)
    trainer, info, _, shape, classes = build(backend, task)
    bs = task.training.batch_size
    rng = np.random.default_rng(0)
    batch = trainer.to_device(rng.normal(size=(bs, *shape)).astype(np.float32),
                              rng.integers(0, classes, bs).astype(np.int64))
    lr = task.optimizer.lr
    for _ in range(WARMUP):
        _sync_returns(trainer, trainer.train_step(batch, lr))
    _sync_returns(trainer, None)
    synced = []
    for _ in range(AUDIT_STEPS):
        start = time.perf_counter()
        handle = trainer.train_step(batch, lr)
        trainer.sync(handle)
        synced.append(time.perf_counter() - start)
    start = time.perf_counter()
    handles = [trainer.train_step(batch, lr) for _ in range(AUDIT_STEPS)]
    dispatched = time.perf_counter() - start
    trainer.sync(handles[-1])
    trainer.sync()
    unsynced = (time.perf_counter() - start) / AUDIT_STEPS
    values = np.asarray(trainer.fetch(handles), np.float64)
    if values.shape != (AUDIT_STEPS, 2) or not np.all(np.isfinite(values[:, 0])):
        raise KitFailure(f"fetch(handles) gave {values.shape} (finite losses: {np.isfinite(values[:, 0]).all() if values.ndim == 2 else False}), "
                         f"expected ({AUDIT_STEPS}, 2) of loss and correct count")
    flops = 3 * info.forward_flops * bs
    peak, source = machine_peak_flops(backend_name, given_peak_gflops)
    fastest = min(min(synced), unsynced)
    text = (f"step {statistics.median(synced) * 1e3:.3f} ms synced (min {min(synced) * 1e3:.3f}), "
            f"{unsynced * 1e3:.3f} ms per step with one final sync, {dispatched / AUDIT_STEPS * 1e3:.3f} ms to "
            f"dispatch; {flops / fastest / 1e9:.2f} GFLOP/s at best vs a peak of {peak / 1e9:.1f} ({source})")
    if too_fast(flops / fastest, peak):  # the suite's one margin (fwbench.measure.timing.TOO_FAST_MARGIN)
        raise KitFailure(f"a train step is faster than the machine can compute: {text}. sync(handle) must "
                         "block until the step's work is done (see docs/plugins.md, section 3, Sync)")
    return text


@contextmanager
def _replaced(backend, **methods):
    """Replace methods of the backend instance for a cell run in this process; `configure` becomes
    a no-op too (the kit configured the backend once already, and some frameworks allow it once)."""
    methods.setdefault("configure", lambda **kwargs: {"configured": "once, by the kit"})
    for name, method in methods.items():
        setattr(backend, name, method)  # an instance attribute shadows the class's method
    try:
        yield backend
    finally:
        for name in methods:
            delattr(backend, name)


def _cell(backend_name: str, task_name: str, data_dir: str) -> dict[str, Any]:
    from ..plugins import get_registry

    path = get_registry().get_task_file(task_name)
    return {"run_id": "kit", "cell_id": f"kit-{backend_name}-{task_name}", "backend": backend_name,
            "task": task_name, "task_path": str(path), "device": "cpu", "threads": threads(),
            "overrides": {"dataset.name": "digits", "training.epochs": 1}, "profile": None,
            "data_dir": data_dir}


def check_fault_crash_in_build(backend_name: str, task_name: str) -> str:
    """A crash in build becomes a failed record naming it, with its traceback (never skipped)."""
    from ..run.worker import run_cell

    backend = configured(backend_name)
    _supported(backend, load(task_name))

    def crash(request):
        raise RuntimeError("fwbench kit: injected crash in build")

    with tempfile.TemporaryDirectory() as data_dir, _replaced(backend, build=crash):
        record = run_cell(_cell(backend_name, task_name, data_dir))
    if record["status"] != "failed" or "injected crash in build" not in str(record.get("error")):
        raise KitFailure(f"a RuntimeError in build gave a {record['status']!r} record ({record.get('error')}), "
                         "expected 'failed' naming it: let exceptions in build propagate")
    if not record.get("traceback"):
        raise KitFailure("the failed record carries no traceback")
    return f"failed record: {record['error']}"


def check_fault_unsupported(backend_name: str, declined_task: str | None, supported_task: str | None) -> str:
    """A task the backend declines becomes a skipped record saying why; so does `Unsupported`
    raised from build (tried on a supported task with build replaced)."""
    from ..run.worker import run_cell

    backend = configured(backend_name)
    seen = []
    with tempfile.TemporaryDirectory() as data_dir:
        if declined_task:
            record = run_cell(_cell(backend_name, declined_task, data_dir))
            if record["status"] != "skipped" or not str(record.get("error")).startswith("not applicable"):
                raise KitFailure(f"{declined_task} (declined by supports) gave a {record['status']!r} record "
                                 f"({record.get('error')}), expected 'skipped' with 'not applicable: <reason>'")
            seen.append(f"{declined_task}: {record['error']}")
        if supported_task:
            def decline(request):
                raise Unsupported("fwbench kit: declined in build")

            with _replaced(backend, build=decline):
                record = run_cell(_cell(backend_name, supported_task, data_dir))
            if record["status"] != "skipped" or "declined in build" not in str(record.get("error")):
                raise KitFailure(f"Unsupported raised from build gave a {record['status']!r} record "
                                 f"({record.get('error')}), expected 'skipped'")
            seen.append(f"Unsupported from build: {record['error']}")
    if not seen:
        raise NotApplicable("no task to try")
    return "; ".join(seen)
