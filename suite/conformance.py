"""Cross-backend conformance: same weights + same batch → same logits, loss, gradients and updates.

The reference is the NumPy backend in float64; the backend under test runs in float32 (the NumPy
backend in float32 is checked against its own float64 path). Dropout is switched off (rate 0) so
train-mode passes are deterministic; BatchNorm runs on batch statistics. Checks per task:

* ``logits``: eval-mode predictions from the canonical initial weights;
* ``loss`` and ``grad:<name>``: one train-mode forward/backward (`Trainer.loss_and_grads`);
* ``step:<optimizer>``: every parameter (and BN state) after 3 steps of each optimizer, with L2 /
  decoupled weight decay on, both sides in float64 (see `check_task`); ``step:clip-norm``,
  ``step:clip-value`` and ``step:lr-per-step`` (the schedule's lr is the one applied) likewise;
* ``curve``: the loss of 20 training steps with the task's own optimizer and schedule
  (relative tolerance 1e-3), and the eval logits after them (1e-2 relative, 1e-3 absolute).

Each backend is checked in its own process (``python -m fwbench.conformance BACKEND``), which
prints one JSON line per task as it finishes; each (backend, task) stands alone: an exception in
one task fails that task only, a task the backend declines (`Backend.supports`, or
`fwbench.backend.Unsupported` from ``build``) is listed as skipped, and a process that dies keeps
the tasks it finished and is started again for the rest. Input shapes and class counts come from
the dataset registry, so a dataset added by a plugin is checked at its own shape.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import BuildRequest, Unsupported
from .errors import UsageError
from .layers import Dropout, Layer, Residual
from .model import analyze, initial_weights
from .spec import OPTIMIZERS, ClipSpec, OptimizerSpec, TaskSpec, parse_value

RTOL, ATOL = 1e-4, 1e-5  # float32 against the float64 reference
CURVE_RTOL = 1e-3
STEP_RTOL, STEP_ATOL = 1e-6, 1e-6  # float64 against float64; a wrong rule is off by ~lr
BATCH = 8
STEPS = 3
CURVE_STEPS = 20
REFERENCE = "numpy"


@dataclass
class Check:
    backend: str
    task: str
    quantity: str
    max_abs: float
    max_rel: float
    passed: bool
    note: str = ""
    skipped: bool = False  # not applicable: the backend declined the task (or this variant of it)


def skipped_check(backend: str, task: str, quantity: str, reason: str) -> Check:
    return Check(backend, task, quantity, np.nan, np.nan, False, f"not applicable: {reason}", skipped=True)


def task_input(task: TaskSpec, registry=None) -> tuple[tuple[int, ...], int]:
    """The input shape ``(C, H, W)`` and class count of ``task``'s dataset, from the registry."""
    if registry is None:
        from .plugins import get_registry

        registry = get_registry()
    dataset = registry.get_dataset(task.dataset.name)
    shape = tuple(task.dataset.shape) if task.dataset.name == "synthetic" and task.dataset.shape else dataset.input_shape
    classes = len(task.dataset.classes) or dataset.num_classes  # `dataset.classes`: a subset, relabelled
    return tuple(shape), classes


def _no_dropout(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    out = []
    for layer in layers:
        if isinstance(layer, Dropout):
            layer = dataclasses.replace(layer, rate=0.0)
        elif isinstance(layer, Residual):
            layer = dataclasses.replace(layer, layers=_no_dropout(layer.layers))
        out.append(layer)
    return tuple(out)


def deterministic(task: TaskSpec, dtype: str, **changes) -> TaskSpec:
    model = dataclasses.replace(task.model, layers=_no_dropout(task.model.layers))
    training = dataclasses.replace(task.training, dtype=dtype, batch_size=BATCH)
    return dataclasses.replace(task, model=model, training=training, **changes)


def compare(reference: np.ndarray, candidate: np.ndarray, rtol: float = RTOL, atol: float = ATOL):
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return np.inf, np.inf, False
    diff = np.abs(reference - candidate)
    max_abs = float(diff.max(initial=0.0))
    max_rel = float((diff / np.maximum(np.abs(reference), 1e-12)).max(initial=0.0))
    return max_abs, max_rel, bool(np.all(diff <= atol + rtol * np.abs(reference)))


class Side:
    """One backend at one dtype, able to build fresh trainers for variants of a task."""

    def __init__(self, backend, task: TaskSpec, shape, num_classes: int, dtype: str, device: str = "cpu"):
        self.backend, self.task, self.shape, self.num_classes, self.dtype = backend, task, shape, num_classes, dtype
        self.device = device

    def build(self, **changes):
        task = deterministic(self.task, self.dtype, **changes)
        info = analyze(task.model, self.shape, self.num_classes, task.source)
        weights = initial_weights(task.model, info, task.training.seed, self.dtype)
        return self.backend.build(BuildRequest(task, info, weights, self.device, self.num_classes))


def batches(shape, num_classes: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, *shape)), rng.integers(0, num_classes, BATCH)) for _ in range(n)]


def _put(trainer, batch, dtype):
    x, y = batch
    return trainer.to_device(x.astype(dtype), y.astype(np.int64))


def check_task(name: str, task: TaskSpec, candidate_backend, reference_backend, device: str = "cpu") -> list[Check]:
    """The candidate on ``device`` against the reference (always the CPU, float64)."""
    shape, classes = task_input(task)
    ref = Side(reference_backend, task, shape, classes, "float64")
    cand = Side(candidate_backend, task, shape, classes, "float32", device)
    data = batches(shape, classes, max(STEPS, CURVE_STEPS))
    checks: list[Check] = []

    def add(quantity, a, b, rtol=RTOL, atol=ATOL):
        max_abs, max_rel, ok = compare(a, b, rtol, atol)
        checks.append(Check(candidate_backend.name, name, quantity, max_abs, max_rel, ok))

    r, c = ref.build(), cand.build()
    add("logits", r.predict(_put(r, data[0], "float64")), c.predict(_put(c, data[0], "float32")))
    r_logits, r_loss, r_grads = r.loss_and_grads(_put(r, data[0], "float64"))
    try:
        c_logits, c_loss, c_grads = c.loss_and_grads(_put(c, data[0], "float32"))
    except Unsupported:
        raise
    except NotImplementedError:  # optional in the contract: the other checks still run
        checks.append(Check(candidate_backend.name, name, "loss_and_grads", np.nan, np.nan, False,
                            "not implemented by the backend (Trainer.loss_and_grads)"))
    else:
        add("train logits", r_logits, c_logits)
        add("loss", np.array([r_loss]), np.array([c_loss]))
        for key in sorted(r_grads):
            add(f"grad:{key}", r_grads[key], c_grads.get(key, np.full(1, np.nan)))

    # Update rules are checked in float64 on both sides: adaptive rules divide by sqrt(v), so in
    # float32 a gradient of pure rounding noise (1e-9) can become a full-size step of either sign
    # and hide what is being tested. In float64 the rule itself must agree to 1e-6.
    variants = {f"step:{opt}": {"optimizer": OptimizerSpec(name=opt, lr=0.01, weight_decay=0.01)}
                for opt in OPTIMIZERS}
    variants["step:clip-norm"] = {"optimizer": OptimizerSpec(name="sgd", lr=0.1), "clip": ClipSpec(kind="norm", max=0.05)}
    variants["step:clip-value"] = {"optimizer": OptimizerSpec(name="sgd", lr=0.1), "clip": ClipSpec(kind="value", max=1e-3)}
    variants["step:lr-per-step"] = {"optimizer": OptimizerSpec(name="momentum", lr=0.1), "lrs": (0.1, 0.03, 0.001)}
    ref64, cand64 = Side(reference_backend, task, shape, classes, "float64"), Side(candidate_backend, task, shape, classes, "float64")
    for quantity, changes in variants.items():
        lrs = changes.pop("lrs", (changes["optimizer"].lr,) * STEPS)
        try:
            c = cand64.build(**changes)
        except Unsupported as exc:  # e.g. an optimizer the backend does not have
            checks.append(skipped_check(candidate_backend.name, name, quantity, str(exc)))
            continue
        r = ref64.build(**changes)
        for batch, step_lr in zip(data[:STEPS], lrs):
            r.sync(r.train_step(_put(r, batch, "float64"), step_lr))
            c.sync(c.train_step(_put(c, batch, "float64"), step_lr))
        rw, cw = r.get_weights(), c.get_weights()
        worst = max((compare(rw[k], cw.get(k, np.full(1, np.nan)), STEP_RTOL, STEP_ATOL) for k in rw),
                    key=lambda t: (not t[2], t[0]))
        checks.append(Check(candidate_backend.name, name, quantity, *worst))

    from .schedules import make_schedule

    r, c = ref.build(), cand.build()
    lr = make_schedule(task.schedule, task.optimizer.lr, CURVE_STEPS, CURVE_STEPS)
    r_handles = [r.train_step(_put(r, b, "float64"), lr(i)) for i, b in enumerate(data[:CURVE_STEPS])]
    c_handles = [c.train_step(_put(c, b, "float32"), lr(i)) for i, b in enumerate(data[:CURVE_STEPS])]
    c.sync()
    add("curve", r.fetch(r_handles)[:, 0], c.fetch(c_handles)[:, 0], rtol=CURVE_RTOL, atol=0.0)
    add("logits after curve", r.predict(_put(r, data[0], "float64")), c.predict(_put(c, data[0], "float32")),
        rtol=10 * CURVE_RTOL, atol=1e-3)  # after 20 steps + BN running stats: looser
    return checks


def check_backend(backend_name: str, task_names: list[str] | None = None, device: str = "cpu",
                  options: dict | None = None) -> list[Check]:
    """Run every check for one backend in this process (use `run_checks` for process isolation)."""
    return [check for _, checks in iter_checks(backend_name, task_names, device, options) for check in checks]


def iter_checks(backend_name: str, task_names: list[str] | None = None, device: str = "cpu",
                options: dict | None = None):
    """``(task, checks)`` for each task in turn (default: every training task), in this process,
    the candidate on ``device``.

    ``options``: a ``[backend]`` table for the backend (a frontend's engine and mode), see
    `fwbench.backend.Backend.for_options`; checks are labelled with the bound backend's label.
    """
    from .plugins import get_registry
    from .spec import load_task

    registry = get_registry()
    candidate = registry.get_backend(backend_name).for_options(options or {}, "bench check")
    reference = registry.get_backend(REFERENCE)
    candidate.configure(device=device, threads=1)
    if reference is not candidate:
        reference.configure(device="cpu", threads=1)
    for name in task_names or training_tasks(registry):
        task = load_task(registry.get_task_file(name))
        found = check_one(name, task, candidate, reference, device)
        for check in found:
            check.backend = candidate.label
        yield name, _native_differences(candidate, task, found)


def _native_differences(backend, task: TaskSpec, checks: list[Check]) -> list[Check]:
    """In a frontend's native mode (``backend.mode = "native"``) a differing quantity is listed
    with the conventions that explain it (``Backend.native_differences``) instead of failing."""
    explain = getattr(backend, "native_differences", None)
    if explain is None:
        return checks
    for check in checks:
        if not check.passed and not check.skipped:
            reasons = explain(task, check.quantity)
            if reasons:
                check.passed = True
                check.note = "differs in native mode: " + "; ".join(reasons)
    return checks


def training_tasks(registry) -> list[str]:
    """The registered tasks of the training family (the ones `bench check` checks), sorted."""
    from .spec import load_task

    return [name for name in sorted(registry.task_files)
            if load_task(registry.get_task_file(name)).task.family == "train"]


def check_one(name: str, task: TaskSpec, candidate, reference, device: str = "cpu") -> list[Check]:
    """Every check of one (backend, task), standing alone: a declined task is one skipped row, an
    exception one failed row naming it; neither stops the other tasks."""
    support = candidate.supports(task)
    if not support.ok:
        return [skipped_check(candidate.name, name, "task", support.reason)]
    try:
        return check_task(name, task, candidate, reference, device)
    except Unsupported as exc:
        return [skipped_check(candidate.name, name, "task", str(exc))]
    except Exception as exc:  # noqa: BLE001 - a backend's error is a failed check, not a crash
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return [Check(candidate.name, name, "task", np.nan, np.nan, False, f"raised {text}")]


def run_checks(backends: list[str | tuple[str, dict]], tasks: list[str] | None, timeout: float = 1800,
               device: str = "cpu") -> list[Check]:
    """Each backend (a name, or ``(name, [backend] options)``) in its own process, each task
    standing alone: the process prints one line per finished task; one that dies (or times out)
    fails the task it was on, keeps the finished ones and is started again for the rest."""
    from .plugins import get_registry

    tasks = list(tasks or training_tasks(get_registry()))
    results = []
    for entry in backends:
        backend, options = (entry, {}) if isinstance(entry, str) else entry
        label = backend + (f"[{','.join(f'{k}={v}' for k, v in options.items())}]" if options else "")
        todo = list(tasks)
        while todo:
            done, reason = _check_process(backend, todo, timeout, device, options)
            for rows in done.values():
                results += [Check(**row) for row in rows]
            todo = [t for t in todo if t not in done]
            if todo:  # the process ended inside todo[0]
                results.append(Check(label, todo[0], "task", np.nan, np.nan, False, reason))
                todo = todo[1:]
    return results


def _check_process(backend: str, tasks: list[str], timeout: float, device: str = "cpu",
                   options: dict | None = None) -> tuple[dict[str, list[dict]], str]:
    """Run ``python -m fwbench.conformance BACKEND TASK... --device DEVICE [--options JSON]``; the
    rows of each finished task and, if it did not finish them all, why."""
    cmd = [sys.executable, "-m", "fwbench.conformance", backend, *tasks, "--device", device]
    if options:
        cmd += ["--options", json.dumps(options)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        stdout, stderr, why = proc.stdout, proc.stderr, f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as exc:
        decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        stdout, stderr, why = decode(exc.stdout), decode(exc.stderr), f"timed out after {timeout:g} s"
    done = {}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and "task" in item:
            done[item["task"]] = item["checks"]
    tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    return done, f"check process died in this task ({why}): {tail[0]}"


# -- which (backend, options) variants `bench check` runs -----------------------------------------
def backend_options(items: list[str]) -> dict[str, Any]:
    """``["backend.mode=native"]`` -> ``{"mode": "native"}``; only ``backend.*`` keys."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("backend.") or len(key) <= len("backend."):
            raise UsageError(f"bad --set {item!r}: bench check takes backend options only, "
                             "e.g. --set backend.mode=native or --set backend.engine=jax")
        options[key[len("backend."):]] = parse_value(value.strip())
    return options


def check_variants(registry, backends: list[str], items: list[str]) -> list[tuple[str, dict]]:
    """Each backend with each option table to check: the given options, on every installed engine
    of a frontend unless ``backend.engine`` is given. Options are validated here (exit 2)."""
    options = backend_options(items)
    out = []
    for name in backends:
        backend = registry.get_backend(name)
        variants = [{}] if "engine" in options else backend.conformance_variants()
        for variant in variants:
            table = {**variant, **options}
            if table:
                backend.for_options(table, "--set")  # raises SpecError for an unknown value
            out.append((name, table))
    return out


def summary_table(checks: list[Check]):
    """One row per (backend, task, quantity group): the largest errors and pass/fail."""
    from rich.markup import escape
    from rich.table import Table

    groups: dict[tuple[str, str, str], list[Check]] = {}
    for check in checks:
        group = check.quantity.split(":")[0] if check.quantity.startswith("grad:") else check.quantity
        groups.setdefault((check.backend, check.task, group), []).append(check)
    table = Table(title="Conformance against the NumPy float64 reference", header_style="bold")
    for col in ("backend", "task", "quantity", "max abs err", "max rel err", "result"):
        table.add_column(col, justify="right" if "err" in col else "left")
    for (backend, task, group), items in groups.items():
        if all(c.skipped for c in items):
            table.add_row(backend, task, group, "—", "—", f"[yellow]skipped[/] {items[0].note}")
            continue
        items = [c for c in items if not c.skipped]
        ok = all(c.passed for c in items)
        worst = max(items, key=lambda c: (c.passed, -(c.max_abs if np.isfinite(c.max_abs) else np.inf)))
        label = f"{group} ({len(items)})" if len(items) > 1 else group
        note = "" if ok else f" {worst.quantity} {worst.note}".rstrip()
        explained = next((c.note for c in items if c.passed and c.note), "")  # native mode
        result = f"[red]FAIL[/]{escape(note)}" if not ok else (
            f"[yellow]{escape(explained)}[/]" if explained else "[green]pass[/]")
        table.add_row(escape(backend), task, label, f"{max(c.max_abs for c in items):.2e}",
                      f"{max(c.max_rel for c in items):.2e}", result)
    return table


def main(argv: list[str]) -> int:
    """The check process: one JSON line ``{"task", "checks"}`` per task, as each finishes."""
    device, options = "cpu", {}
    if "--device" in argv:
        at = argv.index("--device")
        device, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    if "--options" in argv:
        at = argv.index("--options")
        options, argv = json.loads(argv[at + 1]), argv[:at] + argv[at + 2:]
    backend_name, *tasks = argv
    for name, checks in iter_checks(backend_name, tasks or None, device, options):
        print(json.dumps({"task": name, "checks": [dataclasses.asdict(c) for c in checks]}, default=float),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
