"""``bench tune``: each cell as written, and at its best (the command: `fwbench.commands.tune`).

Takes ``bench run``'s selection flags. For each backend it runs, in one run (repeats interleaved
across every configuration, so a busy neighbour hurts them alike), the cell as written (fp32,
the backend's default execution mode, data on the host) and every configuration of its search
space: the precisions it implements × its execution modes (× the Flax step style) × data
placement. The default search is small on a CPU (fp32 and bf16; no CUDA graphs; host placement)
and full on a GPU (tf32 and fp16 too, device placement).

A configuration is *eligible* when its test accuracy is within ``--tolerance`` points of the
as-written cell's; the fastest eligible one wins only if it is faster beyond both intervals (the
suite's repeat statistics: its 95% interval lies above the as-written one's), else the cell as
written stays the best (`fwbench.run.tuning`, which the HTML report and ``bench compare`` call too).
``tune.json`` in the run folder keeps what was tried, what won and by how much; the table shows
both columns.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .options import RunOptions
from .tuning import DEFAULT_TOLERANCE, config_label, judge, search_space


def _quote(table: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, str) and any(c in v for c in ',+') else v}"
            for k, v in table.items()]


def tune(options: RunOptions, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """``bench tune``: plan ``options``' cells once per configuration of each backend's search
    space, run them as one run, judge them (``tune.json``) and print the table; the run's exit code."""
    from ..plugins import get_registry
    from .matrix import Plan, pick_backends, plan_run, run_planned

    registry = get_registry()
    device = options.devices[0] if options.devices else "cpu"
    if len(options.devices) != 1 or device == "auto":
        raise _usage("bench tune searches one device at a time: give --device cpu or --device gpu")
    cells, first = [], None
    for name in pick_backends(registry, options.backends):
        backend = registry.get_backend(name)
        for table in search_space(backend, device):
            sub = dataclasses.replace(options, backends=[name], overrides=[*options.overrides, *_quote(table)])
            plan = plan_run(sub)
            first = first or plan
            cells += [dataclasses.replace(c, run_id=first.manifest["run_id"]) for c in plan.cells]
    if first is None:
        raise _usage("bench tune: no backend selected")
    seen, unique = set(), []
    for cell in cells:  # a backend without an option runs one cell for several tables
        if cell.cell_id not in seen:
            seen.add(cell.cell_id)
            unique.append(cell)
    plan = Plan(unique, first.run_dir, set(), {**first.manifest, "command": "tune"})
    code = run_planned(plan, options)
    from ..records.results import load_records

    records = [r for r in load_records(plan.run_dir) if r.get("cell_id") in seen]
    summary = judge(records, registry, device, tolerance)
    (plan.run_dir / "tune.json").write_text(json.dumps(summary, indent=2, default=str))
    from .display import make_console

    make_console().print(tune_table(summary))
    return code


def _usage(message: str):
    from ..errors import UsageError

    return UsageError(message)


def tune_table(summary: list[dict[str, Any]]):
    """The terminal table: each cell as written and at its best."""
    from rich.table import Table

    table = Table(title="bench tune: as written vs at its best", header_style="bold")
    for col in ("backend", "task", "as written", "samples/s", "acc", "at its best", "samples/s ",
                "acc ", "speed-up", "tried"):
        table.add_column(col.strip(), justify="right" if col.strip() in ("samples/s", "acc", "speed-up", "tried")
                         else "left")
    for e in summary:
        w, b = e["as_written"] or {}, e["best"] or {}

        def fmt(t, key, spec):
            return format(t[key], spec) if t.get(key) is not None else "—"

        table.add_row(e["backend"], e["task"], config_label(w.get("config", {})), fmt(w, "samples_per_s", ",.0f"),
                      fmt(w, "test_accuracy", ".2%"), config_label(b.get("config", {})),
                      fmt(b, "samples_per_s", ",.0f"), fmt(b, "test_accuracy", ".2%"),
                      f"{e['speedup']:.2f}×" if e["speedup"] else "—", str(len(e["tried"])))
    return table


def load_tune(run_dir: Path) -> list[dict[str, Any]] | None:
    """``tune.json`` of a run folder, or None."""
    path = Path(run_dir) / "tune.json"
    return json.loads(path.read_text()) if path.exists() else None
