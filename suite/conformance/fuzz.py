"""Property-based conformance: random valid task specs, every backend against the reference.

`task_specs` is a hypothesis strategy over the whole spec vocabulary: every layer type with its
options (padding "same"/"valid"/integers, strides, overlapping pools, BatchNorm momentum/eps, the
leaky-ReLU slope, residual blocks with and without projection, dropout), every init, every
optimizer with every hyper-parameter, schedules with warm-up, both clipping kinds and both dtypes,
on the input shapes of the datasets that ship offline. Layers are drawn against the running shape
(`fwbench.model.analyze`), so every drawn spec is valid.

`fuzz` runs `fwbench.conformance.checks.check_task` (``full=False``: the spec's own optimizer) for every
backend on each drawn spec, each with its declared ``[backend]`` options drawn too (`drawable_options`); on a disagreement hypothesis shrinks the spec to a smallest failing
one, returned with its failed checks and as TOML (`spec_to_toml`) to paste into a test.
``bench check --random N --seed S`` is the command line; ``benchmarks/conformance_fuzz.py`` runs
a large number.
"""
from __future__ import annotations

import gc
import json
import math
import random
import time
import zlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from ..errors import SpecError
from ..frontends import bind, label_of
from ..layers import ACTIVATIONS, INITS
from ..spec import OPTIMIZERS, SCHEDULES, task_from_dict
from .coverage import Coverage
from .worker import RECYCLE_RSS_BYTES, RecycledWorker, WorkerDied

#: Datasets that ship inside installed packages (no download): their input shapes.
DATASETS = ("digits", "mnist_5k", "synthetic")
CURVE_STEPS = 6  # a spec without a train split (dataset.train_limit): enough steps for momentum, schedules, warm-up
#: declared ``[backend]`` options never drawn: a frontend's engine and conventions (one variant per
#: process, fixed), the ``compile`` aliases of ``execution``, and torch's execution (inductor
#: compiles for half a minute per trainer, and the checks build about ten per spec)
NOT_DRAWN = frozenset({"engine", "mode", "compile"})
NOT_DRAWN_FOR = frozenset({("torch", "execution")})
#: Single choices not drawn, per backend label: Keras' compiled step on torch is torch.compile too
#: (and with `Backend.release_caches` between specs it really compiles each time, instead of
#: falling back to eager after dynamo's 8 recompiles, as it silently did before).
NOT_DRAWN_CHOICES = frozenset({("keras[torch]", "execution", "compiled")})


def _floats(lo: float, hi: float, log: bool = False):
    """Floats in ``[lo, hi]`` rounded to 3 significant digits (readable TOML, shrinks well)."""
    if log:
        base = st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0 ** e)
    else:
        base = st.floats(lo, hi)
    return base.map(lambda v: float(f"{v:.3g}")).filter(lambda v: lo <= v <= hi)


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


@st.composite
def conv_layer(draw, shape):
    _, h, w = shape
    side = min(h, w)
    padding = draw(st.sampled_from(["valid", "same", 0, 1, 2]))
    pad = {"valid": 0, "same": None}.get(padding, padding)
    kernels = [k for k in (1, 2, 3, 5) if k <= side + 2 * (pad if pad is not None else (k - 1) // 2)
               and (padding != "same" or k % 2)]
    kernel = draw(st.sampled_from(kernels))
    layer = {"type": "conv2d", "filters": draw(st.integers(1, 4)), "kernel": kernel,
             "stride": draw(st.integers(1, 3)), "padding": padding}
    if draw(st.booleans()):
        layer["activation"] = draw(st.sampled_from(ACTIVATIONS))
    if draw(st.booleans()):
        layer["use_bias"] = False
    if draw(st.integers(0, 3)) == 0:
        layer["init"] = draw(st.sampled_from(INITS))
    return layer


@st.composite
def pool_layer(draw, shape):
    side = min(shape[1], shape[2])
    layer = {"type": draw(st.sampled_from(["maxpool", "avgpool"])), "size": draw(st.integers(1, min(3, side)))}
    if draw(st.booleans()):
        layer["stride"] = draw(st.integers(1, 3))  # < size: overlapping windows
    return layer


def batchnorm_layer():
    return st.fixed_dictionaries({"type": st.just("batchnorm")},
                                 optional={"momentum": _floats(0.01, 1.0), "eps": _floats(1e-5, 1e-2, log=True)})


@st.composite
def activation_layer(draw):
    layer = {"type": "activation", "fn": draw(st.sampled_from(ACTIVATIONS))}
    if layer["fn"] == "leaky_relu" and draw(st.booleans()):
        layer["alpha"] = draw(_floats(0.0, 0.5))
    return layer


def dropout_layer():
    return st.fixed_dictionaries({"type": st.just("dropout"), "rate": _floats(0.0, 0.9)})


def _analyze(layers: list[dict], shape):
    from ..model import analyze
    from ..spec import ModelSpec, build_layer

    model = ModelSpec(layers=tuple(build_layer(l, "<random>", f"l[{i}]") for i, l in enumerate(layers)))
    return analyze(model, shape)


def _shape_after(layers: list[dict], shape) -> tuple[int, ...]:
    """The output shape of ``layers`` on ``shape`` (raises `SpecError` when they do not fit)."""
    return _analyze(layers, shape).output_shape if layers else tuple(shape)


@st.composite
def training_tables(draw, layers: list[dict], shape) -> tuple[dict, dict]:
    """``([training], [dataset] additions)``: a batch size of 1-16 (not 1 with a BatchNorm over one
    value per channel, which `bench run` refuses), 1-3 epochs and a train split
    (``dataset.train_limit``, no validation split) of 2-3 full batches plus a partial one of 0 to
    ``batch_size - 1`` samples: the curve crosses epoch boundaries and ends on that partial batch."""
    from ..run.preflight import one_value_batchnorm

    low = 2 if one_value_batchnorm(_analyze(layers, shape)) else 1
    batch = draw(st.integers(low, 16))
    split = batch * draw(st.integers(2, 3)) + draw(st.integers(0, batch - 1))
    training = {"batch_size": batch, "epochs": draw(st.integers(1, 3))}
    return training, {"train_limit": split, "validation_split": 0.0}


@st.composite
def image_layer(draw, shape, depth: int = 0):
    kinds = ["conv2d", "pool", "batchnorm", "activation", "dropout"] + (["residual"] if depth == 0 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "conv2d":
        return draw(conv_layer(shape))
    if kind == "pool":
        return draw(pool_layer(shape))
    if kind == "batchnorm":
        return draw(batchnorm_layer())
    if kind == "activation":
        return draw(activation_layer())
    if kind == "dropout":
        return draw(dropout_layer())
    body, inner = [], shape
    for _ in range(draw(st.integers(1, 3))):
        layer = draw(image_layer(inner, depth + 1))
        try:
            inner = _shape_after([layer], inner)
        except SpecError:
            continue
        if min(inner[1:]) < 1:
            reject()
        body.append(layer)
    if not body:
        body = [draw(batchnorm_layer())]
        inner = shape
    layer = {"type": "residual", "layers": body}
    if inner == shape and draw(st.booleans()):
        layer["projection"] = "none"
    if draw(st.booleans()):
        layer["activation"] = draw(st.sampled_from(ACTIVATIONS))
    return layer


@st.composite
def model_layers(draw, shape, classes: int = 10) -> list[dict]:
    """A valid layer stack: image layers, then flatten or global pooling, dense layers, a head."""
    layers: list[dict] = []
    for _ in range(draw(st.integers(0, 4))):
        layer = draw(image_layer(shape))
        try:
            new = _shape_after([layer], shape)
        except SpecError:
            continue  # e.g. a residual whose shortcut cannot be a strided 1x1 convolution
        layers.append(layer)
        shape = new
    layers.append({"type": draw(st.sampled_from(["flatten", "global_avg_pool"]))})
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["dense", "batchnorm", "activation", "dropout"]))
        if kind == "dense":
            layer = {"type": "dense", "units": draw(st.integers(1, 8))}
            if draw(st.booleans()):
                layer["activation"] = draw(st.sampled_from(ACTIVATIONS))
            if draw(st.booleans()):
                layer["use_bias"] = False
        else:
            layer = draw({"batchnorm": batchnorm_layer(), "activation": activation_layer(),
                          "dropout": dropout_layer()}[kind])
        layers.append(layer)
    head = {"type": "dense", "units": classes}
    if draw(st.booleans()):
        head["activation"] = draw(st.sampled_from(["linear", "softmax"]))
    if draw(st.integers(0, 3)) == 0:
        head["init"] = draw(st.sampled_from(INITS))
    layers.append(head)
    if draw(st.integers(0, 3)) == 0:  # a residual block on the flat logits ends the model
        block = {"type": "residual", "layers": [{"type": "dense", "units": classes}]}
        if draw(st.booleans()):
            block["layers"].insert(0, draw(st.sampled_from([{"type": "batchnorm"},
                                                            {"type": "activation", "fn": "tanh"}])))
        block["activation"] = draw(st.sampled_from(ACTIVATIONS))
        layers.append(block)
    return layers


def _frozen(draw, layers: list[dict]) -> list[str]:
    """Freeze a layer type of the body (never every parameter: the head is a dense layer)."""
    kinds = sorted({layer["type"] for layer in layers[:-1]} & {"conv2d", "batchnorm", "residual"})
    return [draw(st.sampled_from(kinds))] if kinds and draw(st.integers(0, 3)) == 0 else []


@st.composite
def optimizer_table(draw) -> dict:
    name = draw(st.sampled_from(OPTIMIZERS))
    table = {"name": name, "lr": draw(_floats(1e-4, 0.1, log=True))}
    hypers = {"momentum": ("momentum", "nesterov"), "beta1": ("adam", "adamw"), "beta2": ("adam", "adamw"),
              "alpha": ("rmsprop",), "eps": ("rmsprop", "adagrad", "adam", "adamw"),
              "initial_accumulator": ("adagrad",)}
    ranges = {"momentum": _floats(0.0, 0.99), "beta1": _floats(0.0, 0.99), "beta2": _floats(0.5, 0.9999),
              "alpha": _floats(0.5, 0.999), "eps": _floats(1e-10, 1e-3, log=True),
              "initial_accumulator": _floats(0.0, 1.0)}
    for key, users in hypers.items():
        if name in users and draw(st.booleans()):
            table[key] = draw(ranges[key])
    if draw(st.booleans()):
        table["weight_decay"] = draw(_floats(1e-5, 0.1, log=True))
    return table


@st.composite
def task_specs(draw) -> dict:
    """A raw, valid task table (what a TOML file holds), as `fwbench.spec.task_from_dict` reads it."""
    from ..plugins import get_registry

    dataset = draw(st.sampled_from(DATASETS))
    shape = tuple(get_registry().get_dataset(dataset).input_shape)
    raw: dict = {"task": {"name": "random"}, "dataset": {"name": dataset}}
    classes = 10
    if dataset == "synthetic" and draw(st.booleans()):  # non-square, any channel count
        shape = (draw(st.integers(1, 3)), draw(st.integers(3, 12)), draw(st.integers(3, 12)))
        raw["dataset"]["shape"] = list(shape)
    elif dataset != "synthetic" and draw(st.integers(0, 3)) == 0:  # a class subset, relabelled
        subset = draw(st.lists(st.integers(0, 9), min_size=2, max_size=5, unique=True))
        raw["dataset"]["classes"] = subset
        classes = len(subset)
    model: dict = {"layers": draw(model_layers(shape, classes))}
    frozen = _frozen(draw, model["layers"])
    if frozen:
        model["frozen"] = frozen
    if draw(st.booleans()):
        model["init"] = draw(st.sampled_from(INITS))
    if draw(st.booleans()):
        model["init_scale"] = draw(_floats(0.01, 0.5))
    raw["model"] = model
    raw["optimizer"] = draw(optimizer_table())
    schedule = {"name": draw(st.sampled_from(SCHEDULES))}
    if schedule["name"] in ("step", "exponential") and draw(st.booleans()):
        schedule["gamma"] = draw(_floats(0.1, 1.0))
    if schedule["name"] == "step" and draw(st.booleans()):
        schedule["step_epochs"] = draw(st.integers(1, 3))
    if schedule["name"] == "cosine" and draw(st.booleans()):
        schedule["min_lr"] = draw(_floats(0.0, 1e-4))
    if draw(st.booleans()):
        schedule["warmup_steps"] = draw(st.integers(1, 4))
    raw["schedule"] = schedule
    kind = draw(st.sampled_from(["none", "norm", "value"]))
    if kind != "none":
        raw["clip"] = {"kind": kind, "max": draw(_floats(1e-3, 10.0, log=True))}
    training, split = draw(training_tables(model["layers"], shape))
    raw["dataset"].update(split)
    raw["training"] = {**training, "seed": draw(st.integers(0, 1000)),
                       "dtype": draw(st.sampled_from(["float32", "float64"]))}
    return raw


# ----------------------------------------------------------------------------------------------
# TOML output of a raw spec (the subset `task_specs` draws: tables, scalars, arrays of tables)
# ----------------------------------------------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def spec_to_toml(raw: dict) -> str:
    """A raw task table as a TOML file (``tomllib.loads`` gives ``raw`` back)."""
    lines: list[str] = []
    for section, table in raw.items():
        scalars = {k: v for k, v in table.items() if k != "layers"}
        lines.append(f"[{section}]")
        lines += [f"{k} = {_value(v)}" for k, v in scalars.items()]
        lines.append("")
        for layer in table.get("layers", []):
            lines.append(f"[[{section}.layers]]")
            lines += [f"{k} = {_value(v)}" for k, v in layer.items()]
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

def drawable_options(backend) -> dict[str, tuple]:
    """``{key: choices}``: the declared ``[backend]`` options of ``backend`` the fuzzer draws."""
    from ..frontends import label_of
    from ..options import declared

    label = label_of(backend)
    out = {}
    for key, option in sorted(declared(backend).items()):
        choices = tuple(c for c in option.choices if (label, key, c) not in NOT_DRAWN_CHOICES)
        if key not in NOT_DRAWN and (backend.name, key) not in NOT_DRAWN_FOR and len(choices) > 1:
            out[key] = choices
    return out


def options_for(raw: dict, label: str, drawable: dict[str, tuple]) -> dict:
    """The ``[backend]`` options backend ``label`` gets on spec ``raw``: drawn from a generator seeded
    by the spec itself, not from hypothesis, so that every process of one ``--seed`` (a frontend's
    further engines run in their own) draws the same specs whatever options its backends take."""
    rng = random.Random(zlib.crc32(f"{label}\n{spec_to_toml(raw)}".encode()))
    return {key: rng.choice(choices) for key, choices in drawable.items()}


class Disagreement(AssertionError):
    """A drawn spec on which some backend failed a check (or crashed), with the ``[backend]``
    options drawn for each backend."""

    def __init__(self, raw: dict, failed: list, options: dict | None = None):
        self.raw, self.failed, self.options = raw, failed, options or {}
        super().__init__("; ".join(f"{c.backend} {c.quantity}{_errors(c)}{' ' + c.note if c.note else ''}"
                                   f"{_with(self.options.get(c.backend))}" for c in failed[:6]))


def _errors(check) -> str:
    """`` (abs 1.00e-03, rel 2.00e-02)``, or nothing for a check that measured no error (it raised,
    or its process died)."""
    if math.isnan(check.max_abs) and math.isnan(check.max_rel):
        return ""
    return f" (abs {check.max_abs:.2e}, rel {check.max_rel:.2e})"


def _with(options: dict | None) -> str:
    return f" [with {' '.join(f'backend.{k}={v}' for k, v in options.items())}]" if options else ""


@dataclass
class FuzzResult:
    examples: int = 0
    seconds: float = 0.0
    backends: list[str] = field(default_factory=list)
    failure: Disagreement | None = None
    stopped: bool = False  # ``progress`` asked to stop (another process of the run has failed)
    coverage: Coverage = field(default_factory=lambda: Coverage())
    processes: int = 0  # check processes started (``isolate``); 0: checked in the calling process
    flaky: bool = False  # the failure did not happen again on the same spec (a crash, a killed process)
    largest_rss: int = 0  # bytes: the largest resident size of a check process after a spec (``isolate``)

    @property
    def toml(self) -> str:
        """The failing spec as TOML, after one comment line per failing backend that had options drawn
        (how to check it again: ``bench check -t FILE -b NAME --set backend.KEY=VALUE``)."""
        if not self.failure:
            return ""
        failing = sorted({c.backend for c in self.failure.failed})
        notes = [f"# {name} ran with --set {' --set '.join(f'backend.{k}={v}' for k, v in opts.items())}"
                 for name in failing if (opts := self.failure.options.get(name))]
        return "\n".join([*notes, spec_to_toml(self.failure.raw)])


def check_spec(raw: dict, backends: dict, reference, options: dict[str, dict] | None = None) -> list:
    """Every check of every backend on one raw spec, each backend with its ``[backend]`` options
    (``options[label]``): training and inference, as `bench check` runs a task (`check_one`: what a
    backend declines is skipped, a crash is one failed check). The failed checks."""
    from .checks import CheckData, check_one, with_backend_options

    task = task_from_dict(raw, "<random>")
    data = CheckData.of(task)
    failed = []
    for name, backend in backends.items():
        checks = check_one("random", with_backend_options(task, (options or {}).get(name)), backend, reference,
                           full=False, curve_steps=CURVE_STEPS, data=data)
        for check in checks:
            check.backend = name  # the label (a frontend with its engine), as the options are keyed
        failed += [c for c in checks if not c.passed and not c.skipped]
    return failed


def _bound(entries) -> dict[str, tuple]:
    """``{label: (backend, fixed options)}`` for backends given as names or ``(name, options)``."""
    from ..plugins import get_registry

    registry = get_registry()
    out = {}
    for entry in entries:
        name, options = (entry, {}) if isinstance(entry, str) else entry
        backend = registry.get_backend(name)
        if options:
            backend = bind(backend, options, "--set")
        out[label_of(backend)] = backend, dict(options)
    return out


def _checkers(entries) -> tuple[dict, object]:
    """The backends of ``entries`` by label and the reference, each configured for the checks
    (CPU, one thread)."""
    from ..plugins import get_registry
    from .checks import REFERENCE

    reference = get_registry().get_backend(REFERENCE)
    reference.configure(device="cpu", threads=1)
    backends = {label: backend for label, (backend, _) in _bound(entries).items()}
    for backend in backends.values():
        if backend is not reference:
            backend.configure(device="cpu", threads=1)
    return backends, reference


def _check_and_release(raw: dict, backends: dict, reference, options: dict[str, dict]) -> list:
    """`check_spec`, then what the frameworks keep of this spec's models is dropped: hundreds of
    specs run in one process."""
    try:
        return check_spec(raw, backends, reference, options)
    finally:
        for backend in backends.values():
            backend.release_caches()
        gc.collect()


#: In a check process (`RecycledWorker`): ``{entries as JSON: (backends, reference)}``, built once.
_CHECKERS_HERE: dict[str, tuple] = {}


def check_in_process(entries: list, raw: dict, options: dict[str, dict]) -> list:
    """`check_spec` in a check process of `fuzz` (``isolate``), its backends built on the first spec."""
    key = json.dumps(entries, sort_keys=True)
    if key not in _CHECKERS_HERE:
        _CHECKERS_HERE[key] = _checkers(entries)
    backends, reference = _CHECKERS_HERE[key]
    return _check_and_release(raw, backends, reference, options)


def _died(labels, why: str) -> list:
    """One failed check per backend of a check process that ended inside a spec."""
    from .compare import Check

    return [Check(label, "random", "task", math.nan, math.nan, False, why) for label in labels]


def fuzz(backend_names: list[str | tuple[str, dict]], examples: int, seed: int = 0, progress=None,
         elsewhere: list[tuple[str, dict]] = (), isolate: bool = False,
         recycle_rss: int = RECYCLE_RSS_BYTES) -> FuzzResult:
    """Draw ``examples`` specs (hypothesis, seeded) and check every backend on each.

    A backend is a name or ``(name, [backend] options)`` (a frontend on one engine: Keras can hold
    only one engine per process, so `fwbench.commands.check` runs each backend in its own process).

    Each backend also gets its ``[backend]`` options drawn per spec (`drawable_options`: execution
    modes, layouts, step styles, optimizer implementations), on top of its fixed ones. The options
    of the backends checked ``elsewhere`` (other processes of the same run) are drawn from the spec
    alone, so they are counted in this coverage too, without checking them here.

    With ``isolate`` (``bench check --random``), the specs are checked in a child process
    (`RecycledWorker`), replaced whenever it is left more than ``recycle_rss`` bytes resident, so
    that a long run's memory stays bounded; a child that dies in a spec fails that spec. Without
    it, they are checked in this process.

    Returns the count, the wall time and, on a disagreement, the shrunk failing spec.
    ``progress(i, raw)`` is called before each example; if it returns False, the run stops there
    (``stopped``: another process of the same run has failed, see `fwbench.commands.check`).
    """
    entries = [entry if isinstance(entry, str) else [entry[0], dict(entry[1])] for entry in backend_names]
    here = _bound(entries)
    labels = list(here)
    fixed = {label: options for label, (_, options) in here.items()}

    def drawable_of(bound):
        return {label: {k: c for k, c in drawable_options(b).items() if k not in fixed_options}
                for label, (b, fixed_options) in bound.items()}

    drawable, drawable_elsewhere = drawable_of(here), drawable_of(_bound(elsewhere))
    worker = RecycledWorker(recycle_rss) if isolate else None
    backends, reference = (None, None) if isolate else _checkers(entries)
    result = FuzzResult(backends=labels)

    def check(raw, options):
        if worker is None:
            return _check_and_release(raw, backends, reference, options)
        try:
            return worker.call(check_in_process, entries, raw, options)
        except WorkerDied as exc:
            return _died(labels, str(exc))

    @settings(max_examples=examples, deadline=None, database=None, print_blob=False,
              verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck),
              phases=(Phase.generate, Phase.target, Phase.shrink))
    @hypothesis_seed(seed)
    @given(raw=task_specs())
    def prop(raw):
        if result.stopped or (progress and progress(result.examples + 1, raw) is False):
            result.stopped = True  # hypothesis draws the rest of its examples, none is checked
            return
        drawn = {label: options_for(raw, label, drawable[label]) for label in labels}
        result.examples += 1
        result.coverage.add(raw)
        result.coverage.add_options(drawn)
        result.coverage.add_options({label: options_for(raw, label, d) for label, d in drawable_elsewhere.items()})
        failed = check(raw, {k: {**fixed[k], **v} for k, v in drawn.items()})
        if failed:
            raise Disagreement(raw, failed, drawn)

    start = time.perf_counter()
    try:
        prop()
    except Disagreement as exc:
        result.failure = exc
    except Flaky as exc:  # it failed once and passed when hypothesis checked the same spec again
        once = [e for e in (*getattr(exc, "exceptions", ()), exc.__cause__) if isinstance(e, Disagreement)]
        if not once:
            raise
        result.failure, result.flaky = once[0], True
    finally:
        if worker is not None:
            worker.close()
            result.processes, result.largest_rss = worker.started, worker.largest
    result.seconds = time.perf_counter() - start
    return result


def draw_coverage(examples: int, seed: int = 0) -> Coverage:
    """What `fuzz` with these ``examples`` and ``seed`` would draw, without checking anything."""
    coverage = Coverage()

    @settings(max_examples=examples, deadline=None, database=None, verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate,))
    @hypothesis_seed(seed)
    @given(raw=task_specs())
    def draw(raw):
        coverage.add(raw)

    draw()
    return coverage
