"""``bench study NAME``: plan a study's cells for each backend, run them, write the report.

Every cell runs through the normal runner (`fwbench.run.local.execute`, one process per cell) into
``<out>/<run_id>/``; each record carries ``study`` (name, kind, title, description, the cell's
label...) and the study's profile. A cell that starts from another cell's weights
(``model.init_from = "@label"``) gets that cell's checkpoint of the same backend,
``<run folder>/weights/<cell_id>.npz``, and runs after it; if that cell failed it is not run
(a failed record says why). The report (`fwbench.report`) ends the run.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..run.cell import Cell
from ..run.local import LocalExecutor, failed_record
from .spec import REFERENCE_KEY, Study, StudyCell

#: Study facts copied into every record's ``study`` (the rest is per cell).
STUDY_FIELDS = ("name", "title", "kind", "description", "source", "profile")


def plan_cells(study: Study, backends: list[str], *, run_id: str, run_dir: Path, threads: int,
               device: str = "cpu", timeout_s: float = 3600.0, data_dir: str | None = None
               ) -> tuple[list[Cell], dict[str, dict[str, Any]], dict[str, str]]:
    """The runner's cells (dependency order, then backend), their record tags, their prerequisites.

    Returns ``(cells, tags, needs)``: ``tags[cell_id]`` is the record's ``study`` entry and
    ``needs[cell_id]`` the cell id whose checkpoint the cell starts from.
    """
    weights_dir = (run_dir / "weights").resolve()
    info = {"name": study.name, "title": study.info.title, "kind": study.info.kind,
            "description": study.info.description, "source": study.source, "profile": study.profile}
    planned: dict[tuple[str, str], Cell] = {}
    cells, tags, needs = [], {}, {}
    for position, sc in enumerate(study.cells):
        for backend in backends:
            overrides = dict(sc.overrides)
            source = planned.get((sc.reference, backend)) if sc.reference else None
            if source is not None:
                overrides[REFERENCE_KEY] = str(weights_dir / f"{source.cell_id}.npz")
            cell = Cell(run_id=run_id, backend=backend, task=sc.task, task_path=str(sc.task_path),
                        device=device, overrides=overrides, profile=None, threads=threads,
                        timeout_s=timeout_s, data_dir=data_dir,
                        save_weights=str(weights_dir) if sc.save_weights else None)
            planned[(sc.label, backend)] = cell
            if cell.cell_id in tags:  # ids are cut at 180 characters: a long --out path can do that
                raise UsageError(f"study {study.name!r}: cells {tags[cell.cell_id]['label']!r} and {sc.label!r} "
                                 f"({backend}) would share the cell id {cell.cell_id!r}; use a shorter --out path")
            tags[cell.cell_id] = {**info, **_cell_tag(sc, position)}
            if source is not None:
                needs[cell.cell_id] = source.cell_id
            cells.append(cell)
    return cells, tags, needs


def _cell_tag(sc: StudyCell, position: int) -> dict[str, Any]:
    return {"label": sc.label, "group": sc.group, "order": position, "grid": dict(sc.grid),
            "saves_weights": sc.save_weights, "init_from": sc.reference, "note": sc.note}


class StudyExecutor:
    """Runs cells one at a time with an inner executor; tags each record with its study, and
    does not run a cell whose checkpoint source failed (a failed record names that cell)."""

    name = "study"

    def __init__(self, inner, tags: dict[str, dict[str, Any]], needs: dict[str, str], profile: str | None):
        self.inner, self.tags, self.needs, self.profile = inner, tags, needs, profile

    def run(self, cells, run_dir, on_record, on_start, on_output) -> None:
        status: dict[str, str] = {}

        def tagged(cell: Cell, record: dict) -> None:
            record["study"] = self.tags.get(cell.cell_id)
            record["profile"] = self.profile
            status[cell.cell_id] = str(record.get("status"))
            on_record(cell, record)

        labels = {cid: tag["label"] for cid, tag in self.tags.items()}
        for cell in cells:
            need = self.needs.get(cell.cell_id)
            if need and status.get(need, "ok") != "ok":
                on_start(cell)
                tagged(cell, failed_record(cell, "failed", f"not run: it starts from the weights of cell "
                                           f"{labels.get(need)!r} ({cell.backend}), which {status[need]}"))
                continue
            self.inner.run([cell], run_dir, tagged, on_start, on_output)


def study_table(records: list[dict[str, Any]], title: str):
    """One row per cell: variant, backend, status, test accuracy, epochs, training time, params."""
    from rich.table import Table
    from rich.text import Text

    from ..run.display import STATUS_STYLE, format_value

    table = Table(title=title, header_style="bold", title_justify="left")
    for name in ("variant", "backend", "task · dataset", "status", "test acc", "epochs", "train s", "params"):
        table.add_column(name, justify="right" if name in ("test acc", "epochs", "train s", "params") else "left")
    order = {"numpy": 0, "torch": 1, "tensorflow": 2, "jax": 3}
    for r in sorted(records, key=lambda r: ((r.get("study") or {}).get("order", 0),
                                            order.get(str(r.get("backend")), 9))):
        m = r.get("metrics") or {}
        status = str(r.get("status")) + (f" ({len(r['warnings'])}⚠)" if r.get("warnings") else "")
        table.add_row(str((r.get("study") or {}).get("label", "?")), str(r.get("backend")),
                      f"{r.get('task')} · {r.get('dataset') or '?'}",
                      Text(status, style=STATUS_STYLE.get(r.get("status"), "")), format_value(m.get("test_accuracy"), ".2%"),
                      format_value(m.get("epochs_run"), "d"), format_value(m.get("train_time_s"), ".2f"), format_value(r.get("params"), ","))
    return table


def cmd_study(args) -> int:
    from ..plugins import get_registry
    from ..records.results import load_records
    from ..report import write_report
    from ..run.cell import new_run_id
    from ..run.display import RunDisplay, make_console, results_notes
    from ..run.local import execute
    from ..run.matrix import ensure_dataset, pick_backends
    from ..run.placement import available_cores
    from ..spec import load_task, parse_overrides
    from .spec import load_study

    registry = get_registry()
    path = registry.get_study_file(args.name)
    grid = parse_overrides(args.overrides)
    if len(grid) > 1:
        raise UsageError("bench study --set takes one value per key (a study's grids live in its file); "
                         "write KEY=VALUE")
    if args.device not in ("cpu", "gpu", "auto"):
        raise UsageError(f"unknown device {args.device!r} in --device; expected cpu, gpu or auto")
    profile = None if args.profile == "full" else args.profile
    study = load_study(path, registry, profile, grid[0])
    backends = pick_backends(registry, args.backend)
    from ..run.placement import threads_per_cell

    threads = threads_per_cell(args.threads, 1, available_cores())  # as `bench run` gives a cell
    for name in sorted({load_task(c.task_path, c.overrides).dataset.name for c in study.cells}):
        ensure_dataset(registry, name, args.data_dir)

    run_id = new_run_id()
    run_dir = args.out / run_id
    cells, tags, needs = plan_cells(study, backends, run_id=run_id, run_dir=run_dir, threads=threads,
                                    device=args.device, timeout_s=args.timeout,
                                    data_dir=str(args.data_dir) if args.data_dir else None)
    console = make_console(stderr=True)
    console.print(f"fwbench study [bold]{study.name}[/] ({study.info.title}): {len(study.cells)} cell(s) x "
                  f"{len(backends)} backend(s), profile {args.profile}, {threads} thread(s) each → {run_dir}")
    manifest = {"run_id": run_id, "argv": list(map(str, sys.argv)), "threads": threads,
                "study": {"name": study.name, "source": study.source, "profile": args.profile,
                          "backends": backends}}
    executor = StudyExecutor(LocalExecutor(), tags, needs, args.profile)
    show = not args.no_progress and sys.stderr.isatty()
    with RunDisplay(len(cells), console, enabled=show) as display:
        outcome = execute(cells, run_dir, executor, display=display, manifest=manifest)
    ids = {c.cell_id for c in cells}
    records = [r for r in load_records(run_dir) if r.get("cell_id") in ids]
    out = make_console()
    out.print(study_table(records, title=f"Study {study.name} ({study.info.title}): run {run_id}"))
    for line in results_notes(records):
        out.print(line)
    report_path = args.report or run_dir / "report.html"
    write_report(records, report_path)
    out.print(f"records: {run_dir}")
    out.print(f"report: {report_path}")
    failed = [r for r in outcome.records if r.get("status") in ("failed", "timeout")]
    return 1 if failed else 0
