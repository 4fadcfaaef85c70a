"""What ``bench tune`` decides, in one place: the search space and the judgement of its records.

`bench tune` (`fwbench.run.tune`) runs the cell as written and every configuration of
`search_space`; `judge` turns the records into, per backend × task (× device, dataset and the
user's other ``--set`` values), the cell as written, the cell at its best, the speed-up and why.
The command, the HTML report and ``bench compare`` all call `judge` on the records themselves, so
a results folder without ``tune.json`` is judged the same way.

The rule: a configuration is *eligible* when its test accuracy is within ``tolerance`` percentage
points of the as-written cell's; the fastest eligible one wins only if it is faster beyond both
95% intervals (its interval lies entirely above the as-written one's), else the cell as written
stays the best.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..execution import KEY as EXECUTION

#: accuracy a configuration may lose against the as-written cell, in percentage points
DEFAULT_TOLERANCE = 0.5
#: the override keys `bench tune` varies (every tune record carries the first and the last)
PRECISION, EXECUTION_KEY, STEP, PLACEMENT = ("training.precision", f"backend.{EXECUTION}", "backend.step",
                                             "dataset.placement")
TUNE_KEYS = (PRECISION, EXECUTION_KEY, STEP, PLACEMENT)
WINS = "faster beyond both 95% intervals, accuracy within the tolerance"


def search_space(backend, device: str) -> list[dict[str, Any]]:
    """The override tables tried for ``backend`` on ``device``; the first is the cell as written."""
    options = {o.name: o for o in getattr(backend, "declared_options", ())}
    gpu = device == "gpu"
    precisions = [p for p in (("fp32", "tf32", "bf16", "fp16") if gpu else ("fp32", "bf16"))
                  if p in backend.precisions]
    execution = options.get(EXECUTION)
    default_mode = execution.default if execution else None
    modes = [default_mode] + [m for m in (execution.choices if execution else ())
                              if m != default_mode and (gpu or m != "compiled+cudagraphs")]
    steps = [None] if "step" not in options else list(options["step"].choices)
    placements = ["host", "device"] if gpu else ["host"]
    out = []
    for precision in precisions:
        for mode in modes:
            for step in steps:
                for placement in placements:
                    table = {PRECISION: precision, PLACEMENT: placement}
                    if mode is not None:
                        table[EXECUTION_KEY] = mode
                    if step is not None:
                        table[STEP] = step
                    out.append(table)
    return out


def is_tune_record(record: dict[str, Any]) -> bool:
    """Whether ``record`` is a cell of `bench tune` (it names its precision and its placement)."""
    overrides = record.get("overrides") or {}
    return PRECISION in overrides and PLACEMENT in overrides


def config_of(record: dict[str, Any]) -> dict[str, Any]:
    """The record's configuration: precision, execution mode, step style, data placement."""
    over = record.get("overrides") or {}
    return {"precision": record.get("precision") or over.get(PRECISION, "fp32"),
            "execution": over.get(EXECUTION_KEY), "step": over.get(STEP),
            "placement": over.get(PLACEMENT, "host")}


def config_label(config: dict[str, Any]) -> str:
    """``bf16 · compiled · host``: the configuration's values that are set."""
    return " · ".join(str(v) for v in config.values() if v is not None)


def registry_as_written(backend: str, device: str) -> dict[str, Any] | None:
    """The as-written table of a registered backend (`search_space`'s first), or None if unknown."""
    from ..plugins import get_registry

    try:
        return search_space(get_registry().get_backend(backend), device)[0]
    except Exception:  # noqa: BLE001 - a backend not installed here: `_guess_as_written` decides
        return None


def _guess_as_written(items: list[dict]) -> dict | None:
    """Without the backend's declared options: fp32 on the host, in its eager mode if there are several."""
    plain = [r for r in items if config_of(r)["precision"] == "fp32" and config_of(r)["placement"] == "host"]
    modes = {config_of(r)["execution"] for r in plain}
    if len(modes) > 1:
        plain = [r for r in plain if config_of(r)["execution"] in ("eager", None)]
    return plain[0] if len(plain) == 1 else None


def _group_key(record: dict[str, Any]) -> tuple:
    rest = {k: v for k, v in (record.get("overrides") or {}).items() if k not in TUNE_KEYS and k != "dataset.name"}
    return (str(record.get("backend")), str(record.get("task")), str(record.get("device") or ""),
            str(record.get("dataset") or (record.get("overrides") or {}).get("dataset.name") or ""),
            json.dumps(rest, sort_keys=True, default=str))


def _tried(record: dict[str, Any], written: dict | None) -> dict[str, Any]:
    m = record.get("metrics") or {}
    return {"config": config_of(record), "status": record.get("status"), "error": record.get("error"),
            "samples_per_s": m.get("throughput_samples_per_s"), "ci95": m.get("throughput_ci95"),
            "test_accuracy": m.get("test_accuracy"), "cell_id": record.get("cell_id"),
            "as_written": record is written}


def judge(records: list[dict], registry=None, device: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
          as_written: Callable[[str, str], dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:
    """Per backend × task (× device, dataset, other overrides): what was tried, the cell as written,
    the best, the speed-up, the accuracy cost and why.

    Args:
        records: `bench tune`'s records (others are ignored: see `is_tune_record`).
        registry: where the backends' declared options come from (default: the plugins installed).
        device: the device of records that do not say theirs.
        tolerance: accuracy a configuration may lose, in percentage points.
        as_written: ``(backend, device) -> override table`` of the cell as written; default
            `search_space`'s first, guessed from the records when the backend is not installed.
    """
    if as_written is None:
        def as_written(backend: str, dev: str):
            if registry is None:
                return registry_as_written(backend, dev)
            return search_space(registry.get_backend(backend), dev)[0]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if is_tune_record(r):
            groups.setdefault(_group_key(r), []).append(r)
    return [_judge_group(items, tolerance, as_written, device) for _, items in sorted(groups.items())]


def _judge_group(items: list[dict], tolerance: float, as_written, device: str | None) -> dict[str, Any]:
    first = items[0]
    dev = first.get("device") or device or "cpu"
    table = as_written(str(first["backend"]), dev)
    if table is None:
        written_record = _guess_as_written(items)
    else:
        written_record = next((r for r in items if all((r.get("overrides") or {}).get(k) == v
                                                       for k, v in table.items())), None)
    tried = [_tried(r, written_record) for r in items]
    written = next((t for t in tried if t["as_written"]), None)
    rest = json.loads(_group_key(first)[-1])
    entry = {"backend": first["backend"], "task": first["task"], "device": first.get("device") or device,
             "dataset": _group_key(first)[3] or None,
             "settings": " ".join(f"{k}={v}" for k, v in rest.items()), "tolerance_points": tolerance,
             "tried": tried, "as_written": written, "best": None, "speedup": None, "accuracy_cost_points": None}
    usable = written is not None and written["status"] == "ok" and bool(written["samples_per_s"])
    if not usable:
        entry["why"] = ("the cell as written was not among the records" if written is None
                        else f"the cell as written did not run ({written['status']}): nothing to judge against")
        return entry
    entry.update(best=written, speedup=1.0, accuracy_cost_points=0.0)
    ran = [t for t in tried if t["status"] == "ok" and t["samples_per_s"]]
    if written["test_accuracy"] is None:
        eligible = [written]
    else:
        floor = written["test_accuracy"] - tolerance / 100
        eligible = [t for t in ran if t["test_accuracy"] is not None and t["test_accuracy"] >= floor]
    for t in tried:
        t["eligible"] = t in eligible
    fastest = max(eligible, key=lambda t: t["samples_per_s"])
    if fastest is not written and _beyond(fastest["ci95"], written["ci95"]):
        cost = None
        if written["test_accuracy"] is not None and fastest["test_accuracy"] is not None:
            cost = 100 * (written["test_accuracy"] - fastest["test_accuracy"])
        entry.update(best=fastest, speedup=fastest["samples_per_s"] / written["samples_per_s"],
                     accuracy_cost_points=cost, why=WINS)
    elif fastest is not written:
        entry["why"] = (f"the fastest within the tolerance ({config_label(fastest['config'])}) is not faster "
                        "beyond both intervals: the cell as written stays")
    else:
        quicker = [t for t in ran if t["samples_per_s"] > written["samples_per_s"] and t not in eligible]
        entry["why"] = "nothing within the tolerance runs faster: the cell as written stays"
        if quicker:
            top = max(quicker, key=lambda t: t["samples_per_s"])
            lost = 100 * (written["test_accuracy"] - top["test_accuracy"]) if top["test_accuracy"] is not None else None
            entry["why"] += (f" ({config_label(top['config'])} is faster but "
                             + (f"loses {lost:.2f} points" if lost is not None else "has no accuracy")
                             + f", beyond {tolerance:g})")
    if len(ran) < len(tried):
        entry["why"] += f"; {len(tried) - len(ran)} configuration(s) did not run"
    return entry


def run_tolerance(records: list[dict[str, Any]]) -> float:
    """The ``--tolerance`` of the tune run the records come from (its ``tune.json``), else the default."""
    for folder in sorted({str(Path(r["_path"]).parent) for r in records if r.get("_path")}):
        path = Path(folder) / "tune.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        first = entries[0] if isinstance(entries, list) and entries else None
        value = first.get("tolerance_points") if isinstance(first, dict) else None
        if isinstance(value, int | float):
            return float(value)
    return DEFAULT_TOLERANCE


def _beyond(candidate, base) -> bool:
    """Whether interval ``candidate`` lies entirely above ``base`` (missing intervals: no)."""
    if not candidate or not base or None in candidate or None in base:
        return False
    return candidate[0] > base[1]


def summary_lines(entries: list[dict[str, Any]]) -> list[str]:
    """One line per judged cell: ``torch mlp_mnist: as written fp32 · eager · host 1,234/s; at its best …``."""
    lines = []
    for e in entries:
        where = " ".join(filter(None, [str(e["backend"]), str(e["task"]), e.get("settings") or ""]))
        w, b = e["as_written"], e["best"]
        if b is None:
            lines.append(f"{where}: {e['why']}")
            continue
        text = f"{where}: as written {config_label(w['config'])} {_rate(w)}"
        if b is w:
            text += f"; at its best: as written ({e['why']})"
        else:
            cost = e["accuracy_cost_points"]
            text += (f"; at its best {config_label(b['config'])} {_rate(b)}, {e['speedup']:.2f}×"
                     + (f", accuracy {-cost:+.2f} points" if cost is not None else ""))
        lines.append(text + f" [{len(e['tried'])} tried]")
    return lines


def _rate(t: dict[str, Any]) -> str:
    v = t.get("samples_per_s")
    return "—" if v is None else f"{v:,.0f} samples/s"
