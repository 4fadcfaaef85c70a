"""Microbenchmark specs: ``[task] family`` other than "train", validated into a frozen `BenchSpec`.

A microbenchmark file has the ``[task]`` table (``family`` = one of `BENCH_FAMILIES`), a ``[bench]``
table (`BenchSettings`: dtype and the timing protocol), one ``[[cases]]`` table per case (its keys
depend on the family, see the ``*Case`` classes), optional ``[backend]`` options (``compile``...)
and ``[profiles.NAME]`` overrides, like a training spec; an override ``cases.KEY = value`` (in a
profile or ``--set``) sets KEY in every case. ``tasks/bench/conv2d.toml`` is a complete
example. Validation reuses `fwbench.spec.build`, so errors name file, key and fix the same way::

    tasks/bench/conv2d.toml [cases[3].kernel]: kernel 7 is larger than the padded input 5x5; ...
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..layers import INITS, Layer
from ..ops import BATCHNORM_PASSES, CONV_PASSES, DENSE_PASSES, POOL_PASSES
from ..spec import DTYPES, FAMILIES, OPTIMIZERS, TaskInfo, build, resolve_raw, suggest

BENCH_FAMILIES = tuple(f for f in FAMILIES if f != "train")
#: Short ``--set`` keys of a microbenchmark (applied before `fwbench.spec.ALIASES`).
BENCH_ALIASES = {"dtype": "bench.dtype", "seed": "bench.seed", "repeats": "bench.repeats",
                 "compile": "backend.compile"}


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """The timing protocol (see `fwbench.micro.protocol.measure`) and the data type of every case."""

    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    #: Timed units per case and pass; the statistics (median, CI...) are over these.
    repeats: int = field(default=15, metadata={"min": 3})
    #: A timed unit runs the op ``inner`` times, ``inner`` raised until a unit takes this long.
    min_unit_s: float = field(default=1e-3, metadata={"gt": 0.0})
    #: The most inner calls per unit (an op too fast even then gets a "too short" warning).
    max_inner: int = field(default=100_000, metadata={"min": 1})
    #: Warm-up ends when 3 successive calls agree within ``warmup_tolerance`` (relative), or
    #: after ``max_warmup`` calls or ``max_warmup_s`` seconds, whichever comes first.
    max_warmup: int = field(default=50, metadata={"min": 0})
    max_warmup_s: float = field(default=2.0, metadata={"min": 0.0})
    warmup_tolerance: float = field(default=0.05, metadata={"gt": 0.0})
    seed: int = field(default=0, metadata={"min": 0})


def _same_or_int_pad(padding: int | str, kernel: int) -> int:
    if padding == "valid":
        return 0
    if padding == "same":
        return (kernel - 1) // 2
    return int(padding)


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True, kw_only=True)
class Conv2DCase:
    """One convolution: input ``(batch, channels, size, size)``, ``filters`` kernels of
    ``kernel x kernel``, no bias. Padding as in `fwbench.layers.Conv2D`."""

    name: str = ""
    batch: int = field(metadata={"min": 1})
    channels: int = field(metadata={"min": 1})
    size: int = field(metadata={"min": 1})
    filters: int = field(metadata={"min": 1})
    kernel: int = field(metadata={"min": 1})
    stride: int = field(default=1, metadata={"min": 1})
    padding: int | str = field(default="same", metadata={"choices": ("valid", "same"), "min": 0})
    passes: tuple[str, ...] = field(default=CONV_PASSES, metadata={"items": CONV_PASSES})

    @property
    def pad(self) -> int:
        return _same_or_int_pad(self.padding, self.kernel)

    @property
    def out_size(self) -> int:
        return _out(self.size, self.kernel, self.stride, self.pad)

    @property
    def shape(self) -> str:
        """``"N,C,H,W×F k3/s1/p1"``: the label the report groups bars by."""
        return (f"{self.batch},{self.channels},{self.size},{self.size}×{self.filters} "
                f"k{self.kernel}/s{self.stride}/p{self.pad}")


@dataclass(frozen=True, kw_only=True)
class DenseCase:
    """One fully connected layer (a GEMM): ``(batch, in_features) @ (in_features, out_features)``."""

    name: str = ""
    batch: int = field(metadata={"min": 1})
    in_features: int = field(metadata={"min": 1})
    out_features: int = field(metadata={"min": 1})
    passes: tuple[str, ...] = field(default=DENSE_PASSES, metadata={"items": DENSE_PASSES})

    @property
    def shape(self) -> str:
        return f"{self.batch}×{self.in_features}→{self.out_features}"


@dataclass(frozen=True, kw_only=True)
class PoolCase:
    """Max or average pooling of ``(batch, channels, size, size)``, ``window`` square, no padding."""

    name: str = ""
    kind: str = field(default="max", metadata={"choices": ("max", "avg")})
    batch: int = field(metadata={"min": 1})
    channels: int = field(metadata={"min": 1})
    size: int = field(metadata={"min": 1})
    window: int = field(default=2, metadata={"min": 1})
    stride: int | None = field(default=None, metadata={"min": 1})
    passes: tuple[str, ...] = field(default=POOL_PASSES, metadata={"items": POOL_PASSES})

    @property
    def step(self) -> int:
        return self.stride or self.window

    @property
    def out_size(self) -> int:
        return _out(self.size, self.window, self.step, 0)

    @property
    def shape(self) -> str:
        return f"{self.kind} {self.batch},{self.channels},{self.size},{self.size} w{self.window}/s{self.step}"


@dataclass(frozen=True, kw_only=True)
class BatchNormCase:
    """Training-mode batch normalisation of ``(batch, channels, size, size)`` (PyTorch semantics,
    see `fwbench.layers`)."""

    name: str = ""
    batch: int = field(metadata={"min": 1})
    channels: int = field(metadata={"min": 1})
    size: int = field(metadata={"min": 1})
    momentum: float = field(default=0.1, metadata={"gt": 0.0, "max": 1.0})
    eps: float = field(default=1e-5, metadata={"gt": 0.0})
    passes: tuple[str, ...] = field(default=BATCHNORM_PASSES, metadata={"items": BATCHNORM_PASSES})

    @property
    def shape(self) -> str:
        return f"{self.batch},{self.channels},{self.size},{self.size}"


@dataclass(frozen=True, kw_only=True)
class OptimCase:
    """A grid: every optimizer in ``optimizers`` x every parameter count in ``params``. One timed
    call is one update of a float vector of that many values with a fixed gradient."""

    name: str = ""
    optimizers: tuple[str, ...] = field(default=OPTIMIZERS, metadata={"items": OPTIMIZERS})
    params: tuple[int, ...]
    lr: float = field(default=0.01, metadata={"gt": 0.0})
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})


@dataclass(frozen=True, kw_only=True)
class ConvergenceSpec:
    """The convergence check of ``optim_step``: each optimizer trains the same small MLP
    (``features -> hidden relu -> classes``) from the same weights on the same fixed synthetic
    classification problem for ``steps`` steps, through each backend's own trainer. The loss of
    every step is recorded; equal rules give equal curves across backends. ``steps = 0``: off."""

    steps: int = field(default=50, metadata={"min": 0})
    samples: int = field(default=512, metadata={"min": 2})
    batch_size: int = field(default=64, metadata={"min": 1})
    features: int = field(default=20, metadata={"min": 1})
    hidden: int = field(default=32, metadata={"min": 1})
    classes: int = field(default=4, metadata={"min": 2})
    #: L2 decay (decoupled for adamw) of every optimizer.
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    #: Learning rate per optimizer name; the ones not listed use `DEFAULT_CONVERGENCE_LR`.
    lr: dict[str, float] = field(default_factory=dict)


DEFAULT_CONVERGENCE_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "rmsprop": 0.003,
                          "adagrad": 0.05, "adam": 0.01, "adamw": 0.01}


@dataclass(frozen=True, kw_only=True)
class ScalingCase:
    """One model (``layers``, as in a training spec) trained on synthetic images of every size in
    ``inputs`` (``channels x size x size``): parameters from `fwbench.model.analyze`, step time
    through the backend's trainer."""

    model: str
    layers: tuple[Layer, ...]
    inputs: tuple[int, ...]
    channels: int = field(default=1, metadata={"min": 1})
    classes: int = field(default=10, metadata={"min": 2})
    batch_size: int = field(default=32, metadata={"min": 1})
    init: str = field(default="he_uniform", metadata={"choices": INITS})
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = field(default=0.001, metadata={"gt": 0.0})


CASE_TYPES: dict[str, type] = {
    "conv2d": Conv2DCase, "dense": DenseCase, "pooling": PoolCase, "batchnorm": BatchNormCase,
    "optim_step": OptimCase, "param_scaling": ScalingCase,
}


@dataclass(frozen=True, kw_only=True)
class BenchSpec:
    """A whole, resolved microbenchmark. ``cases`` hold the family's ``*Case`` objects."""

    task: TaskInfo
    bench: BenchSettings = field(default_factory=BenchSettings)
    cases: tuple = ()  # built per family by `bench_from_dict`, never by `build`
    convergence: ConvergenceSpec | None = None  # optim_step only
    backend: dict[str, Any] = field(default_factory=dict)  # free-form backend options (compile...)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def family(self) -> str:
        return self.task.family


def bench_from_dict(raw: dict, source: str, overrides: dict | None = None, profile: str | None = None,
                    default_name: str = "") -> BenchSpec:
    """Apply profile and overrides, then validate ``raw`` into a `BenchSpec`.

    Raises:
        SpecError: naming the file, the key and the fix.
    """
    raw = copy.deepcopy(raw)
    per_case: dict[str, Any] = {}
    profiles = raw.get("profiles")
    if profile and isinstance(profiles, dict) and isinstance(profiles.get(profile), dict):
        profiles[profile], per_case = _split_case_keys(profiles[profile])
    overrides, per_case_cli = _split_case_keys(overrides or {})
    raw = resolve_raw(raw, source, overrides, profile, default_name, aliases=BENCH_ALIASES)
    cases_raw = raw.pop("cases", None)
    for key, value in {**per_case, **per_case_cli}.items():
        for i, case in enumerate(cases_raw if isinstance(cases_raw, list) else []):
            if not isinstance(case, dict):
                raise SpecError(source, f"cases[{i}]", f"expected a table, got {case!r}")
            case[key] = value
    spec = build(BenchSpec, raw, source)
    family = spec.task.family
    if family not in CASE_TYPES:  # "train" has its own loader: `fwbench.spec.task_from_dict`
        raise SpecError(source, "task.family", f"{family!r} is not a microbenchmark family; "
                        f"use one of: {', '.join(BENCH_FAMILIES)}")
    if cases_raw is None or cases_raw == []:
        raise SpecError(source, "cases", "no cases; add at least one [[cases]] table")
    if not isinstance(cases_raw, list):
        raise SpecError(source, "cases", f"expected an array of tables ([[cases]]), got {cases_raw!r}")
    cls = CASE_TYPES[family]
    cases = tuple(build(cls, case, source, f"cases[{i}]") for i, case in enumerate(cases_raw))
    for i, case in enumerate(cases):
        _check_case(case, source, f"cases[{i}]")
    convergence = spec.convergence
    if family == "optim_step":
        convergence = convergence or ConvergenceSpec()
        _check_convergence(convergence, source)
    elif convergence is not None:
        raise SpecError(source, "convergence", f"[convergence] is only for family \"optim_step\", "
                        f"not {family!r}; remove the table")
    return dataclasses.replace(spec, cases=cases, convergence=convergence, source=source)


def _split_case_keys(items: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"cases.inputs": [28], "bench.repeats": 5}`` -> ``({"bench.repeats": 5}, {"inputs": [28]})``:
    a ``cases.KEY`` override sets KEY in every case."""
    rest, per_case = {}, {}
    for key, value in items.items():
        if key.startswith("cases.") and key.count(".") == 1 and key != "cases.":
            per_case[key.removeprefix("cases.")] = value
        else:
            rest[key] = value
    return rest, per_case


def _check_case(case, source: str, key: str) -> None:
    """Cross-field rules of one case (shapes that cannot exist)."""
    if isinstance(case, Conv2DCase):
        if case.padding == "same" and case.kernel % 2 == 0:
            raise SpecError(source, f"{key}.padding", f"'same' padding needs an odd kernel, got "
                            f"{case.kernel}; use an odd kernel or an integer padding")
        padded = case.size + 2 * case.pad
        if case.kernel > padded:
            raise SpecError(source, f"{key}.kernel", f"kernel {case.kernel} is larger than the padded "
                            f"input {padded}x{padded}; use a smaller kernel, more padding or a larger size")
    elif isinstance(case, PoolCase):
        if case.window > case.size:
            raise SpecError(source, f"{key}.window", f"pool window {case.window} is larger than the "
                            f"input {case.size}x{case.size}; use a smaller window or a larger size")
    elif isinstance(case, OptimCase | ScalingCase):
        values = case.params if isinstance(case, OptimCase) else case.inputs
        name = "params" if isinstance(case, OptimCase) else "inputs"
        if not values:
            raise SpecError(source, f"{key}.{name}", f"an empty list; give at least one {name[:-1]} count")
        for j, v in enumerate(values):
            if v < 1:
                raise SpecError(source, f"{key}.{name}[{j}]", f"{v!r} is too small; use a value >= 1")
        if isinstance(case, OptimCase) and not case.optimizers:
            raise SpecError(source, f"{key}.optimizers", "an empty list; name at least one optimizer")
        if isinstance(case, ScalingCase):
            _check_scaling(case, source, key)


def _check_scaling(case: ScalingCase, source: str, key: str) -> None:
    from ..model import analyze
    from ..spec import ModelSpec

    if not case.layers:
        raise SpecError(source, f"{key}.layers", "the model has no layers; add at least one layer")
    for j, size in enumerate(case.inputs):
        try:
            analyze(ModelSpec(layers=case.layers, init=case.init), (case.channels, size, size),
                    case.classes, source)
        except SpecError as exc:
            detail = str(exc).split("]: ", 1)[-1]
            raise SpecError(source, f"{key}.inputs[{j}]",
                            f"model {case.model!r} cannot take {case.channels}x{size}x{size} inputs: {detail}") from None


def _check_convergence(conv: ConvergenceSpec, source: str) -> None:
    for name, lr in conv.lr.items():
        if name not in OPTIMIZERS:
            raise SpecError(source, f"convergence.lr.{name}", f"unknown optimizer; {suggest(name, OPTIMIZERS)}")
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise SpecError(source, f"convergence.lr.{name}", f"expected a number > 0, got {lr!r}")
    if conv.steps and conv.batch_size > conv.samples:
        raise SpecError(source, "convergence.batch_size", f"{conv.batch_size} is larger than the "
                        f"{conv.samples} samples; lower it or raise convergence.samples")


def convergence_lr(conv: ConvergenceSpec, optimizer: str) -> float:
    return float(conv.lr.get(optimizer, DEFAULT_CONVERGENCE_LR[optimizer]))


def case_label(case) -> str:
    """A short, stable name for messages: the case's ``name`` or its shape."""
    name = getattr(case, "name", "") or getattr(case, "model", "")
    shape = getattr(case, "shape", "")
    return f"{name} ({shape})" if name and shape else (name or shape or type(case).__name__)


def itemsize(dtype: str) -> int:
    return 8 if dtype == "float64" else 4


__all__ = [
    "BENCH_FAMILIES",
    "BatchNormCase",
    "BenchSettings",
    "BenchSpec",
    "Conv2DCase",
    "ConvergenceSpec",
    "DenseCase",
    "OptimCase",
    "PoolCase",
    "ScalingCase",
    "bench_from_dict",
    "case_label",
    "convergence_lr",
    "itemsize",
]
