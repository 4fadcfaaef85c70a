"""Task specs: TOML files validated into frozen dataclasses, with ``--set`` overrides and grids.

A spec is framework-neutral data; every backend builds the same model from it. Keys and their
defaults are the dataclass fields below; ``tasks/mlp_mnist.toml`` is a complete example.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import families
from .errors import SpecError, UsageError
from .layers import INITS, LAYER_TYPES, Layer, Residual
from .precision import PRECISIONS

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine")
LOSSES = ("cross_entropy",)
DTYPES = ("float32", "float64")
#: ``[task] family``: "train" is a training task (`TaskSpec`); the others are microbenchmarks
#: (`fwbench.micro.spec.BenchSpec`, with ``[bench]`` settings and ``[[cases]]``).
FAMILIES = families.families()
#: ``[task] scenario`` (``bench run --scenario``): train the model, or serve it (`fwbench.inference.scenario`).
SCENARIOS = ("training", "inference")
#: The largest batch an inference sweep accepts: more is a typo (a batch of 10^6 MNIST images is 3 GB).
MAX_INFERENCE_BATCH = 65536


@dataclass(frozen=True, kw_only=True)
class TaskInfo:
    name: str = ""
    description: str = ""
    family: str = field(default="train", metadata={"choices": FAMILIES})
    scenario: str = field(default="training", metadata={"choices": SCENARIOS})


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    name: str
    validation_split: float = field(default=0.2, metadata={"min": 0.0, "lt": 1.0})
    normalize: str = field(default="standard", metadata={"choices": ("standard", "scale", "none")})
    augment: tuple[str, ...] = field(default=(), metadata={"items": ("hflip", "crop")})
    train_limit: int | None = field(default=None, metadata={"min": 1})
    test_limit: int | None = field(default=None, metadata={"min": 1})
    #: Fraction of the *training* split's labels replaced by a different, random class (seeded);
    #: validation and test labels stay clean. Makes memorisation visible (regularization study).
    label_noise: float = field(default=0.0, metadata={"min": 0.0, "lt": 1.0})
    #: Keep only these class labels (train and test), relabelled 0..k-1 in this order; the model
    #: then needs k outputs (`fwbench.datasets.subset`). Empty: every class.
    classes: tuple[int, ...] = ()
    #: Only for ``name = "synthetic"``: sample shape (C, H, W); default: the task's own dataset's.
    shape: tuple[int, ...] = ()
    #: Where the training split lives while training: "host" (each epoch's batches are made in
    #: NumPy and copied to the device before the epoch) or "device" (the whole split is uploaded
    #: once and each batch is gathered on the device: `fwbench.backend.Trainer.upload`).
    placement: str = field(default="host", metadata={"choices": ("host", "device")})


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The layers, their initial weights and which of them train.

    ``init_from``: a checkpoint (`fwbench.records.checkpoints`) to start from: every array whose canonical
    name and shape match is loaded, the rest keeps the canonical init; a relative path is resolved
    against the spec file's folder, then the current directory (stored resolved, absolute).

    ``frozen``: layer types (``"conv2d"``) and/or layer paths (``"0"``, ``"3.body.0"``; a path
    freezes everything inside it) whose parameters do not train: no gradient step, no weight
    decay, no optimizer state, not counted as trainable. BatchNorm follows PyTorch: a frozen
    BatchNorm keeps ``gamma``/``beta`` fixed but its running statistics still update in train mode.
    """

    layers: tuple[Layer, ...]
    init: str = field(default="xavier_uniform", metadata={"choices": INITS})
    init_scale: float = field(default=0.05, metadata={"gt": 0.0})  # std / bound of normal / uniform
    init_from: str | None = None
    frozen: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LossSpec:
    name: str = field(default="cross_entropy", metadata={"choices": LOSSES})


@dataclass(frozen=True, kw_only=True)
class OptimizerSpec:
    """Update rules (PyTorch's conventions; every backend implements exactly these).

    ``g`` is the gradient after clipping; ``wd`` = weight_decay; t counts steps from 1::

        L2 (all but adamw): g = g + wd * p
        sgd:       p -= lr * g
        momentum:  b = momentum * b + g;               p -= lr * b          (b starts at 0)
        nesterov:  b = momentum * b + g;               p -= lr * (g + momentum * b)
        rmsprop:   v = alpha * v + (1 - alpha) * g^2;  p -= lr * g / (sqrt(v) + eps)
        adagrad:   s = s + g^2 (s starts at initial_accumulator); p -= lr * g / (sqrt(s) + eps)
        adam:      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
                   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
        adamw:     p *= 1 - lr * wd (decoupled, no L2), then the adam update

    Epsilon is always outside the square root. BatchNorm parameters are decayed like the rest.
    Clipping (``[clip]``) acts on the raw gradients before weight decay is added.
    """

    name: str = field(metadata={"choices": OPTIMIZERS})
    lr: float = field(metadata={"gt": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "lt": 1.0})  # momentum, nesterov
    beta1: float = field(default=0.9, metadata={"min": 0.0, "lt": 1.0})
    beta2: float = field(default=0.999, metadata={"min": 0.0, "lt": 1.0})
    alpha: float = field(default=0.99, metadata={"min": 0.0, "lt": 1.0})  # rmsprop smoothing
    eps: float = field(default=1e-8, metadata={"gt": 0.0})  # outside the square root
    initial_accumulator: float = field(default=0.0, metadata={"min": 0.0})  # adagrad
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})  # L2; decoupled for adamw


@dataclass(frozen=True, kw_only=True)
class ScheduleSpec:
    """Learning rate per optimizer step, computed by the suite and handed to the backend.

    constant; step: ``lr * gamma ** (epoch // step_epochs)``; exponential: ``lr * gamma ** epoch``;
    cosine: ``min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2`` over all steps after warm-up.
    ``warmup_steps`` > 0 scales linearly from ``lr / warmup_steps`` to ``lr`` first.
    """

    name: str = field(default="constant", metadata={"choices": SCHEDULES})
    gamma: float = field(default=0.1, metadata={"gt": 0.0, "max": 1.0})
    step_epochs: int = field(default=1, metadata={"min": 1})
    min_lr: float = field(default=0.0, metadata={"min": 0.0})
    warmup_steps: int = field(default=0, metadata={"min": 0})


@dataclass(frozen=True, kw_only=True)
class ClipSpec:
    """Gradient clipping on the raw gradients, before weight decay.

    norm: ``g *= min(1, max / (norm + 1e-6))`` with ``norm`` the global L2 norm over every trainable
    array (PyTorch's ``clip_grad_norm_``); value: ``g = clip(g, -max, max)``.
    """

    kind: str = field(default="none", metadata={"choices": ("none", "norm", "value")})
    max: float = field(default=1.0, metadata={"gt": 0.0})


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingSpec:
    monitor: str = field(default="val_loss", metadata={"choices": ("val_loss", "val_accuracy")})
    patience: int = field(default=0, metadata={"min": 0})  # 0 = off
    restore_best: bool = True
    min_delta: float = field(default=0.0, metadata={"min": 0.0})


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    """The training loop. ``epochs = 0`` evaluates the initial (or ``model.init_from``) weights only.

    ``record_grad_norms``: at the end of every epoch (outside the timed region) the suite computes
    the L2 norm of each layer's weight gradient on a fixed training batch (`Trainer.loss_and_grads`)
    into the history row's ``grad_norms`` ``{layer path: norm}``.
    ``eval_train``: also evaluate the training split in eval mode after every epoch (history rows get
    ``train_eval_loss``/``train_eval_accuracy``; metrics ``final_train_accuracy`` and
    ``final_val_accuracy`` of the final weights), outside the timed region: the honest train
    accuracy for a train-validation gap (the train-mode one is averaged over the epoch, dropout on).
    """

    batch_size: int = field(metadata={"min": 1})
    epochs: int = field(metadata={"min": 0})
    seed: int = field(default=0, metadata={"min": 0})
    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    #: The precision policy (`fwbench.precision`): fp32 | tf32 | bf16 | fp16; needs dtype float32.
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS})
    eval_batch_size: int = field(default=1000, metadata={"min": 1})
    target_accuracy: float | None = field(default=None, metadata={"gt": 0.0, "max": 1.0})
    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    record_grad_norms: bool = False
    eval_train: bool = False


@dataclass(frozen=True, kw_only=True)
class InferenceSpec:
    """The inference scenario (``[task] scenario = "inference"``, ``bench run --scenario inference``).

    The model in eval mode answers batches of each size in ``batch_sizes``, one call at a time, each
    call timed with the device synchronised (the logits back on the host): ``warmup_calls`` calls
    first (not counted), then at least ``min_calls`` calls and ``min_time_s`` seconds, at most
    ``max_calls``. ``weights``: a checkpoint (`fwbench.records.checkpoints`) holding every array of the
    model (``bench run --weights``); none: the canonical initial weights. ``energy``: read the
    device's energy counter (`fwbench.measure.energy`) over extra calls after the timed ones.
    """

    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    warmup_calls: int = field(default=5, metadata={"min": 0})
    min_calls: int = field(default=50, metadata={"min": 1})
    min_time_s: float = field(default=0.5, metadata={"gt": 0.0, "max": 600.0})
    max_calls: int = field(default=100_000, metadata={"min": 1})
    weights: str | None = None
    energy: bool = True


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """The whole, resolved task. ``source`` is where it came from (for error messages)."""

    task: TaskInfo
    dataset: DatasetSpec
    model: ModelSpec
    optimizer: OptimizerSpec
    training: TrainingSpec
    loss: LossSpec = field(default_factory=LossSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    clip: ClipSpec = field(default_factory=ClipSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    backend: dict[str, Any] = field(default_factory=dict)  # free-form backend options (compile...)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def name(self) -> str:
        return self.task.name


# --------------------------------------------------------------------------------------------
# Generic validation: dataclass fields + metadata -> precise errors
# --------------------------------------------------------------------------------------------

_FREE_FORM = {"backend", "profiles"}


def suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(sorted(options))}"


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _check_number(value, meta, source, key):
    if "min" in meta and value < meta["min"]:
        raise SpecError(source, key, f"{value!r} is too small; use a value >= {meta['min']}")
    if "gt" in meta and value <= meta["gt"]:
        raise SpecError(source, key, f"{value!r} is out of range; use a value > {meta['gt']}")
    if "max" in meta and value > meta["max"]:
        raise SpecError(source, key, f"{value!r} is too large; use a value <= {meta['max']}")
    if "lt" in meta and value >= meta["lt"]:
        raise SpecError(source, key, f"{value!r} is out of range; use a value < {meta['lt']}")


def _convert(value, tp, meta, source: str, key: str):
    """Check ``value`` against the type hint ``tp`` and field metadata; return the converted value."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        # try str choices first so 'same' is not reported as "not an int"
        for option in sorted((o for o in options if o is not type(None)), key=lambda o: o is not str):
            try:
                return _convert(value, option, meta, source, key)
            except SpecError as exc:
                errors.append(exc)
        if isinstance(value, str) and "choices" in meta:
            raise SpecError(source, key, f"unknown value {value!r}; {suggest(value, meta['choices'])}")
        if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
            raise errors[0]
        names = " or ".join(_type_name(o) for o in options)
        raise SpecError(source, key, f"expected {names}, got {type(value).__name__} {value!r}")
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            raise SpecError(source, key, f"expected a list, got {type(value).__name__} {value!r}")
        if item_tp is Layer:
            return tuple(build_layer(v, source, f"{key}[{i}]") for i, v in enumerate(value))
        items = tuple(_convert(v, item_tp, {}, source, f"{key}[{i}]") for i, v in enumerate(value))
        for i, item in enumerate(items):
            if "items" in meta and item not in meta["items"]:
                raise SpecError(source, f"{key}[{i}]", f"unknown value {item!r}; {suggest(item, meta['items'])}")
        return items
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, key)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise SpecError(source, key, f"expected a table, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(source, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(source, key, f"expected an integer, got {type(value).__name__} {value!r}")
        _check_number(value, meta, source, key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(source, key, f"expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise SpecError(source, key, f"{value!r} is not a finite number; use a finite value")
        _check_number(float(value), meta, source, key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(source, key, f"expected a string, got {type(value).__name__} {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            raise SpecError(source, key, f"unknown value {value!r}; {suggest(value, meta['choices'])}")
        return value
    raise TypeError(f"unsupported spec type {tp!r}")  # a bug in fwbench, not user input


def build(cls, data, source: str, prefix: str = ""):
    """Build dataclass ``cls`` from a TOML table, rejecting unknown keys and bad values."""
    if not isinstance(data, dict):
        raise SpecError(source, prefix, f"expected a table, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "source"}
    dotted = (prefix + ".") if prefix else ""
    for name in data:
        if name not in fields:
            raise SpecError(source, dotted + name, f"unknown key; {suggest(name, fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = dotted + name
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise SpecError(source, key, "missing required key; add it to the spec")
            continue
        kwargs[name] = _convert(data[name], hints[name], f.metadata, source, key)
    return cls(**kwargs)


def build_layer(data, source: str, key: str) -> Layer:
    if not isinstance(data, dict) or "type" not in data:
        raise SpecError(source, key, f"each layer needs a 'type' ({', '.join(LAYER_TYPES)})")
    kind = data["type"]
    if kind not in LAYER_TYPES:
        raise SpecError(source, f"{key}.type", f"unknown layer {kind!r}; {suggest(str(kind), LAYER_TYPES)}")
    body = {k: v for k, v in data.items() if k != "type"}
    layer = build(LAYER_TYPES[kind], body, source, key)
    if isinstance(layer, Residual) and not layer.layers:
        raise SpecError(source, f"{key}.layers", "a residual block needs at least one layer in 'layers'")
    return layer


# --------------------------------------------------------------------------------------------
# Overrides: --set key=value and grids
# --------------------------------------------------------------------------------------------

def parse_value(text: str):
    """Parse an override value as a TOML literal (``3``, ``0.1``, ``true``, ``"x"``, ``[1, 2]``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def parse_overrides(items: list[str]) -> list[dict[str, Any]]:
    """``["lr=0.1,0.01", "training.epochs=2"]`` → the grid of override dicts (cartesian product)."""
    axes = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip() or any(not part for part in key.split(".")):
            raise UsageError(f"bad --set {item!r}: expected KEY=VALUE with a dotted key, "
                             "e.g. --set optimizer.lr=0.01 or --set optimizer.lr=0.1,0.01 for a grid")
        values = [parse_value(v.strip()) for v in _split_top_level(text)]
        if any(v == "" for v in values):
            raise UsageError(f"bad --set {item!r}: empty value in the list; write KEY=A,B,C")
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


#: Short aliases accepted by --set (``lr`` is ``optimizer.lr``...).
ALIASES = {
    "lr": "optimizer.lr", "optimizer": "optimizer.name", "batch_size": "training.batch_size",
    "epochs": "training.epochs", "seed": "training.seed", "dtype": "training.dtype",
    "compile": "backend.compile", "dataset": "dataset.name", "scenario": "task.scenario",
    "batch_sizes": "inference.batch_sizes", "precision": "training.precision", "placement": "dataset.placement",
}


def apply_overrides(raw: dict, overrides: dict[str, Any], source: str) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(source, ".".join(parts[: i + 1]), f"is a value, not a table; cannot set {key!r}")
            node = child
        if parts[0] == "model" and parts[-1] == "layers":
            raise SpecError(source, key, "layers cannot be set from the command line; copy the spec and edit it")
        node[parts[-1]] = value
    return raw


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), "", f"not valid TOML ({exc}); fix the syntax at that line") from None
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read: {exc.strerror}") from None


def load_task(path: str | Path, overrides: dict[str, Any] | None = None, profile: str | None = None):
    """Read, override and validate a task spec. Raises `SpecError` naming file, key and fix.

    Returns a `TaskSpec` for ``[task] family = "train"`` (the default), else a microbenchmark
    `fwbench.micro.spec.BenchSpec`; tell them apart with `is_bench_spec` or ``spec.task.family``.
    """
    path = Path(path)
    source = str(path)
    raw = read_toml(path)
    load = families.loader(task_family(raw, source))
    return load(raw, source, overrides, profile, default_name=path.stem)


def task_family(raw: dict, source: str) -> str:
    """The validated ``[task] family`` of a raw spec table ("train" when absent)."""
    info = raw.get("task", {})
    family = info.get("family", "train") if isinstance(info, dict) else "train"
    known = families.families()
    if not isinstance(family, str) or family not in known:
        raise SpecError(source, "task.family", f"unknown value {family!r}; {suggest(str(family), known)}")
    return family


def is_bench_spec(spec) -> bool:
    """Whether a loaded spec is a microbenchmark (anything but a training `TaskSpec`)."""
    return spec.task.family != "train"


def resolve_raw(raw: dict, source: str, overrides: dict | None, profile: str | None,
                default_name: str = "", aliases: dict[str, str] | None = None) -> dict:
    """A copy of ``raw`` with the profile's and then the command line's overrides applied.

    ``aliases`` map short override keys before the global `ALIASES` do (a microbenchmark's
    ``dtype`` is ``bench.dtype``, not ``training.dtype``).
    """
    raw = copy.deepcopy(raw)

    def local(items: dict) -> dict:
        return {(aliases or {}).get(k, k): v for k, v in items.items()}

    profiles = raw.get("profiles", {})
    if profile and profile != "full":
        if not isinstance(profiles, dict) or profile not in profiles:
            known = ["full", *(profiles if isinstance(profiles, dict) else [])]
            raise SpecError(source, "profiles", f"no profile {profile!r}; {suggest(profile, known)}")
        if not isinstance(profiles[profile], dict):
            raise SpecError(source, f"profiles.{profile}", "expected a table of KEY = VALUE overrides")
        raw = apply_overrides(raw, local(profiles[profile]), source)
    if overrides:
        raw = apply_overrides(raw, local(overrides), source)
    if not isinstance(raw.setdefault("task", {}), dict):
        raise SpecError(source, "task", f"expected a table, got {raw['task']!r}")
    raw["task"].setdefault("name", default_name)
    return raw


def task_from_dict(raw: dict, source: str, overrides: dict | None = None, profile: str | None = None,
                   default_name: str = "") -> TaskSpec:
    raw = resolve_raw(raw, source, overrides, profile, default_name)
    sizes = (raw.get("inference") or {}).get("batch_sizes") if isinstance(raw.get("inference"), dict) else None
    if isinstance(sizes, int) and not isinstance(sizes, bool):  # --set inference.batch_sizes=1,8: a grid
        raw["inference"]["batch_sizes"] = [sizes]
    spec = build(TaskSpec, raw, source)
    spec = dataclasses.replace(spec, source=source)
    _check_consistency(spec)
    if spec.model.init_from:
        from .records.checkpoints import resolve_init_from

        path = resolve_init_from(spec.model.init_from, source)
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, init_from=str(path)))
    if spec.inference.weights:
        from .records.checkpoints import resolve_init_from

        path = resolve_init_from(spec.inference.weights, source, key="inference.weights")
        spec = dataclasses.replace(spec, inference=dataclasses.replace(spec.inference, weights=str(path)))
    return spec


def _check_consistency(spec: TaskSpec) -> None:
    """Cross-field rules that single fields cannot express."""
    source = spec.source
    if not spec.model.layers:
        raise SpecError(source, "model.layers", "the model has no layers; add at least one [[model.layers]]")
    if spec.training.precision != "fp32" and spec.training.dtype != "float32":
        raise SpecError(source, "training.precision",
                        f"{spec.training.precision} is a policy over float32 parameters; set "
                        "training.dtype = \"float32\" or precision = \"fp32\"")
    if spec.dataset.placement == "device" and spec.dataset.augment:
        raise SpecError(source, "dataset.placement",
                        "augmentation runs in NumPy on the host; with augment set use placement = \"host\"")
    es = spec.training.early_stopping
    if es.patience and spec.dataset.validation_split == 0.0:
        raise SpecError(source, "training.early_stopping.patience",
                        "early stopping needs a validation set; set dataset.validation_split > 0 or patience = 0")
    if spec.training.target_accuracy is not None and spec.dataset.validation_split == 0.0:
        raise SpecError(source, "training.target_accuracy",
                        "time-to-accuracy is measured on the validation set; set dataset.validation_split > 0")
    _check_batch_sizes(spec.inference.batch_sizes, source)
    if spec.inference.max_calls < spec.inference.min_calls:
        raise SpecError(source, "inference.max_calls", f"{spec.inference.max_calls} is below inference.min_calls "
                        f"({spec.inference.min_calls}); raise max_calls or lower min_calls")


def _check_batch_sizes(sizes: tuple[int, ...], source: str) -> None:
    """An inference sweep: 1 to `MAX_INFERENCE_BATCH` samples per call, each size once."""
    key = "inference.batch_sizes"
    if not sizes:
        raise SpecError(source, key, "the list is empty; give at least one batch size, e.g. [1, 8, 64, 256]")
    for i, size in enumerate(sizes):
        if size < 1:
            raise SpecError(source, f"{key}[{i}]", f"{size} is not a batch size; use 1 or more samples per call")
        if size > MAX_INFERENCE_BATCH:
            raise SpecError(source, f"{key}[{i}]", f"{size:,} samples per call is absurd for this sweep; "
                            f"use at most {MAX_INFERENCE_BATCH:,}")
    if len(set(sizes)) != len(sizes):
        twice = next(s for s in sizes if sizes.count(s) > 1)
        raise SpecError(source, key, f"batch size {twice} is listed twice; list each size once")


def spec_to_dict(spec: TaskSpec) -> dict:
    """The fully resolved spec as plain data (layers keep their ``type``), for result records."""

    def convert(obj):
        if isinstance(obj, Layer):
            out = {"type": obj.kind}
            out.update({f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
            return out
        if dataclasses.is_dataclass(obj):
            return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, tuple | list):
            return [convert(v) for v in obj]
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        return obj

    return convert(spec)


def task_from_record_config(config: dict) -> TaskSpec:
    """Rebuild a `TaskSpec` from a record's ``config`` (the inverse of `spec_to_dict`)."""
    raw = copy.deepcopy(config)
    source = raw.pop("source", "<record>")
    return task_from_dict(raw, source)
