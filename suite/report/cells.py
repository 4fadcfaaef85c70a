"""What the report sections share: cell labels, settings, groups of comparable cells, backend colours."""
from __future__ import annotations

import json
import math
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ..records.record import CASES, CONVERGENCE, INFERENCE

#: Override keys that say *which data* a cell used; shown as the dataset, not as a setting.
DATA_KEYS = ("dataset.name", "dataset.shape")

#: One colour per backend, the same in every figure and table of every report; every two of these
#: and of `EXTRA_COLORS` are at least 30 apart in CIELAB (ΔE*76), so no two backends look alike.
BACKEND_COLORS = {
    "numpy": "#4C72B0",       # blue
    "torch": "#D9482B",       # PyTorch red-orange
    "tensorflow": "#E8A020",  # amber
    "jax": "#2A9D6E",         # green
    "keras": "#8E44AD",       # purple
    "flax": "#17BECF",        # cyan
}
#: Colours for backends not named above, picked by a stable hash of the name.
EXTRA_COLORS = ("#937860", "#DA8BC3", "#6B8E23", "#3D2B56", "#F0E442", "#B2DF8A")


def backend_color(name: str | None) -> str:
    name = str(name or "?")
    if name in BACKEND_COLORS:
        return BACKEND_COLORS[name]
    return EXTRA_COLORS[zlib.crc32(name.encode()) % len(EXTRA_COLORS)]


def backend_order(records: Iterable[dict[str, Any]]) -> list[str]:
    """Known backends in their canonical order first, then the others alphabetically."""
    names = {str(r.get("backend")) for r in records}
    known = [b for b in BACKEND_COLORS if b in names]
    return known + sorted(names - set(known))


def settings(record: dict[str, Any]) -> dict[str, Any]:
    """The record's overrides minus the ones that only pick the dataset."""
    return {k: v for k, v in sorted((record.get("overrides") or {}).items()) if k not in DATA_KEYS}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def settings_label(record: dict[str, Any], keys: Iterable[str] | None = None) -> str:
    """``optimizer.lr=0.01 training.batch_size=32``, or ``defaults`` when nothing is overridden."""
    items = settings(record)
    if keys is not None:
        keys = set(keys)
        items = {k: v for k, v in items.items() if k in keys}
    return " ".join(f"{k}={format_value(v)}" for k, v in items.items()) or "defaults"


def config_value(record: dict[str, Any], dotted: str) -> Any:
    """The value of a dotted spec key (``optimizer.lr``) in the record's resolved config, or None."""
    node: Any = record.get("config") or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict) else node


def short_settings_label(record: dict[str, Any], keys: Iterable[str]) -> str:
    """Like `settings_label` for ``keys`` only, with the last part of each dotted key (``lr=0.01``).

    A key the cell did not override shows the task's own value, marked ``(default)``.
    """
    own = settings(record)
    parts, defaults = [], False
    for k in sorted(set(keys)):
        if k in own:
            parts.append(f"{k.rsplit('.', 1)[-1]}={format_value(own[k])}")
        elif (value := config_value(record, k)) is not None:
            parts.append(f"{k.rsplit('.', 1)[-1]}={format_value(value)}")
            defaults = True
    if not parts:
        return "defaults"
    return " ".join(parts) + (" (default)" if defaults else "")


def group_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """Cells with the same key are comparable across backends: (task, dataset, device)."""
    return (str(record.get("task")), str(record.get("dataset") or _override_dataset(record) or "?"),
            str(record.get("device") or "?"))


def group_label(key: tuple[str, str, str]) -> str:
    return " · ".join(key)


def _override_dataset(record: dict[str, Any]) -> str | None:
    value = (record.get("overrides") or {}).get("dataset.name")
    return str(value) if value is not None else None


def cell_label(record: dict[str, Any]) -> str:
    parts = [str(record.get("backend")), *group_key(record)]
    label = settings_label(record)
    return " · ".join(parts) + ("" if label == "defaults" else f" [{label}]")


def task_family(record: dict[str, Any]) -> str:
    return str(((record.get("config") or {}).get("task") or {}).get("family") or "train")


def is_ok(record: dict[str, Any]) -> bool:
    return record.get("status") == "ok"


def number(value: Any) -> float | None:
    """A finite float, or None (for missing, NaN, infinite and non-numeric values)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric(record: dict[str, Any], name: str) -> Any:
    return (record.get("metrics") or {}).get(name)


def _natural(value: Any) -> tuple:
    """Numbers sort by value (0.001 < 0.01 < 0.1), everything else as text after them."""
    n = number(value)
    if n is None and isinstance(value, str):
        try:
            n = number(float(value))
        except ValueError:
            n = None
    return (0, n, "") if n is not None else (1, 0.0, format_value(value))


def settings_sort_key(record: dict[str, Any]) -> tuple:
    """Defaults first, then by each overridden value in natural order."""
    return tuple((k, _natural(v)) for k, v in settings(record).items())


def sort_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    records = list(records)
    order = {b: i for i, b in enumerate(backend_order(records))}
    return sorted(records, key=lambda r: (group_key(r), settings_sort_key(r),
                                          order.get(str(r.get("backend")), 99), str(r.get("cell_id"))))


def section_of(record: dict[str, Any]) -> str | None:
    """The report section of a record that is not a training cell (None for training cells)."""
    metrics = record.get("metrics") or {}
    if record.get("scenario") == "inference" or isinstance(metrics.get(INFERENCE), dict):
        return "inference"
    cases = [c for c in metrics.get(CASES) or [] if isinstance(c, dict)]
    family = task_family(record)
    if family == "conv2d" or any("gflops" in c for c in cases):
        return "conv2d"
    if family in ("optimizer", "optimizers") or isinstance(metrics.get(CONVERGENCE), dict) \
            or any("optimizer" in c for c in cases):
        return "optimizers"
    if family == "scaling" or any("model" in c and "input" in c for c in cases):
        return "scaling"
    return None


def by_group(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in sort_records(list(records)):
        groups[group_key(r)].append(r)
    return dict(groups)


def sweep_keys(records: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between cells of one group (what a ``--set a,b,c`` varied)."""
    values: dict[str, set[str]] = defaultdict(set)
    all_keys = {k for r in records for k in settings(r)}
    for r in records:
        s = settings(r)
        for k in all_keys:
            values[k].add(format_value(s.get(k, "(default)")))
    return sorted(k for k, v in values.items() if len(v) > 1)


def sweeps(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups (same task, dataset, device) whose cells differ only in overrides, with ≥ 2 settings.

    Returns dicts ``{"key", "label", "keys" (the varied override keys), "records"}``.
    """
    out = []
    for key, members in by_group(r for r in records if section_of(r) is None).items():
        varied = sweep_keys(members)
        if varied:
            out.append({"key": key, "label": group_label(key), "keys": varied, "records": members})
    return out


def run_ids(records: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({str(r.get("run_id")) for r in records if r.get("run_id")})


def is_conv(record: dict[str, Any]) -> bool:
    """A model with a conv2d layer (its first-layer filters and confusion matrix are shown)."""
    if metric(record, "first_layer_filters"):
        return True
    layers = ((record.get("config") or {}).get("model") or {}).get("layers") or []
    return any(isinstance(layer, dict) and layer.get("type") == "conv2d" for layer in layers)
