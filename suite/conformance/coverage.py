"""What the spec fuzzer drew: vocabulary items and pairs (``bench check --random N --coverage``).

`items` names what one raw spec uses (``layer:conv2d``, ``head:residual``, ``optimizer:adam``,
``schedule:step``, ``classes:subset``...); `pairs` names consecutive layer kinds at the top level
(``conv2d>batchnorm``). `VOCABULARY` is every item the fuzzer is meant to draw; a test keeps each
of them drawn at least once in `DEFAULT_EXAMPLES` specs of seed 0.
"""
from __future__ import annotations

import itertools
from collections import Counter

from ..layers import ACTIVATIONS, INITS, LAYER_TYPES
from ..spec import OPTIMIZERS, SCHEDULES

DEFAULT_EXAMPLES = 200
#: Every item the fuzzer draws (see `items`).
VOCABULARY: tuple[str, ...] = (
    *(f"layer:{kind}" for kind in LAYER_TYPES),
    *(f"activation:{fn}" for fn in ACTIVATIONS),
    *(f"init:{name}" for name in INITS),
    *(f"optimizer:{name}" for name in OPTIMIZERS),
    *(f"schedule:{name}" for name in SCHEDULES),
    "schedule:warmup", "clip:none", "clip:norm", "clip:value", "dtype:float32", "dtype:float64",
    "dataset:digits", "dataset:mnist_5k", "dataset:synthetic", "input:non-square", "classes:subset",
    "head:dense", "head:residual", "head:softmax", "residual:projected", "residual:identity",
    "residual:flat", "padding:same", "padding:valid", "padding:int", "pool:overlapping",
    "model:frozen", "weight_decay", "batch:1", "batch:>1", "batch:partial-last", "curve:multi-epoch",
    "dropout:>0",
)
#: Asked for by issue 21 and not drawn yet: they need changes to the checks themselves.
NOT_DRAWN = ("model.init_from (needs a checkpoint file per spec)",
             "[backend] mode = native (checked by its own conventions, not against the reference)",
             "torch.compile (half a minute of inductor per trainer)")


def _walk(layers):
    for layer in layers:
        yield layer
        if layer.get("type") == "residual":
            yield from _walk(layer.get("layers", []))


def items(raw: dict) -> set[str]:
    """The vocabulary items a raw spec (as `fwbench.conformance.fuzz.task_specs` draws it) uses."""
    out: set[str] = set()
    layers = raw["model"]["layers"]
    for layer in _walk(layers):
        kind = layer["type"]
        out.add(f"layer:{kind}")
        for key in ("activation", "fn"):
            if key in layer:
                out.add(f"activation:{layer[key]}")
        if "init" in layer:
            out.add(f"init:{layer['init']}")
        if kind == "conv2d":
            padding = layer.get("padding", "valid")
            out.add(f"padding:{padding}" if isinstance(padding, str) else "padding:int")
        if kind == "dropout" and layer.get("rate", 0.5) > 0:
            out.add("dropout:>0")
        if kind in ("maxpool", "avgpool") and layer.get("stride") not in (None, layer.get("size", 2)):
            out.add("pool:overlapping")
    for i, layer in enumerate(layers):
        if layer["type"] == "residual":
            flat = any(li["type"] in ("flatten", "global_avg_pool") for li in layers[:i])
            out.add("residual:flat" if flat else "residual:identity")
            if any(sub.get("stride", 1) > 1 or sub["type"] in ("conv2d", "maxpool", "avgpool")
                   for sub in layer["layers"]) and not flat:
                out.add("residual:projected")
    last = layers[-1]
    out.add(f"head:{last['type']}")
    if last.get("activation") == "softmax":
        out.add("head:softmax")
    out.add(f"init:{raw['model'].get('init', 'xavier_uniform')}")
    if raw["model"].get("frozen"):
        out.add("model:frozen")
    out.add(f"optimizer:{raw['optimizer']['name']}")
    if raw["optimizer"].get("weight_decay"):
        out.add("weight_decay")
    schedule = raw.get("schedule", {})
    out.add(f"schedule:{schedule.get('name', 'constant')}")
    if schedule.get("warmup_steps"):
        out.add("schedule:warmup")
    out.add(f"clip:{raw.get('clip', {}).get('kind', 'none')}")
    out.add(f"dtype:{raw['training'].get('dtype', 'float32')}")
    dataset = raw["dataset"]
    out.add(f"dataset:{dataset['name']}")
    shape = dataset.get("shape")
    if shape and len(shape) == 3 and shape[1] != shape[2]:
        out.add("input:non-square")
    if dataset.get("classes"):
        out.add("classes:subset")
    batch = raw["training"].get("batch_size", 1)
    out.add("batch:1" if batch == 1 else "batch:>1")
    limit = dataset.get("train_limit")
    if limit and not dataset.get("validation_split"):  # the fuzzer's train split (see CheckData.of)
        if limit % batch:
            out.add("batch:partial-last")
        if raw["training"].get("epochs", 1) > 1:
            out.add("curve:multi-epoch")
    return out


def pairs(raw: dict) -> set[str]:
    """Consecutive top-level layer kinds, ``"conv2d>batchnorm"``."""
    kinds = [layer["type"] for layer in raw["model"]["layers"]]
    return {f"{a}>{b}" for a, b in itertools.pairwise(kinds)}


class Coverage:
    """Counts of items and pairs over the drawn specs."""

    def __init__(self):
        self.items: Counter[str] = Counter()
        self.pairs: Counter[str] = Counter()
        self.options: Counter[str] = Counter()  # "label backend.key=value": drawn [backend] options
        self.specs = 0

    def add(self, raw: dict) -> None:
        self.specs += 1
        self.items.update(items(raw))
        self.pairs.update(pairs(raw))

    def add_options(self, drawn: dict[str, dict]) -> None:
        """Count the ``[backend]`` options drawn for one spec: ``{backend label: {key: value}}``."""
        self.options.update(f"{label} backend.{k}={v}" for label, table in drawn.items() for k, v in table.items())

    @property
    def missing(self) -> list[str]:
        return [item for item in VOCABULARY if not self.items[item]]

    def report(self) -> str:
        """Plain text: each item with its count, the pairs drawn, what was not drawn."""
        drawn = len(VOCABULARY) - len(self.missing)
        lines = [f"coverage of {self.specs} drawn specs ({drawn} of {len(VOCABULARY)} vocabulary items):"]
        lines += [f"  {item:<28} {self.items[item]}" for item in VOCABULARY]
        lines.append(f"layer pairs drawn ({len(self.pairs)}): "
                     + ", ".join(f"{p} {n}" for p, n in sorted(self.pairs.items())))
        if self.options:
            lines.append(f"[backend] options drawn ({len(self.options)}): "
                         + ", ".join(f"{o} {n}" for o, n in sorted(self.options.items())))
        lines.append("not drawn: " + (", ".join(self.missing) or "none"))
        lines.append("not in the fuzzer yet: " + "; ".join(NOT_DRAWN))
        return "\n".join(lines)
