"""Studies: named experiments as data files, each ending in a report section a teacher can show.

A study file (TOML; the shipped ones are in ``studies/``) says what to compare and how to show it::

    [study]
    title = "Learning rate"
    description = \"\"\"What the student should look at (shown in the report, as text).\"\"\"
    kind = "sweep"         # sweep | regularization | architectures | vanishing_gradients | transfer

    [profiles.quick]       # overrides for every cell with `bench study NAME --profile quick`
    "training.epochs" = 3

    [[cells]]
    label = "lr={lr}"      # {short key} placeholders are filled from `grid`; else "k=v" is appended
    task = "mlp_digits"    # a task name (`bench list tasks`) or a .toml path next to the study
    set = { "optimizer.name" = "sgd" }           # overrides, as `bench run --set`
    grid = { "optimizer.lr" = [0.1, 0.01, 0.001] }  # lists: one cell per combination
    save_weights = true    # write this cell's final weights (a checkpoint) for later cells
    profiles = { quick = { "training.epochs" = 5 } }  # this cell's own profile overrides

    [[cells]]
    label = "finetune"
    task = "cnn_digits"
    set = { "model.init_from" = "@pretrain" }    # the checkpoint of cell "pretrain", same backend

Overrides apply in this order (later wins): the task file, the cell's ``set``, its ``grid``
values, the study's ``[profiles.P]`` (so a profile makes every cell quick), the cell's own
``profiles.P``, then ``bench study --set``. A study never uses its tasks' own ``[profiles]``: the
study says everything. Cells run in the order
their ``@label`` references need (a cell after the one whose weights it starts from), each in its
own process through the normal runner. Every check reuses `fwbench.spec`: errors are one line
naming the study file, the key and the fix.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError, UnknownNameError
from ..spec import ALIASES, build, read_toml, suggest, task_family, task_from_dict

STUDY_KINDS = ("sweep", "regularization", "architectures", "vanishing_gradients", "transfer")
REFERENCE_KEY = "model.init_from"


@dataclass(frozen=True, kw_only=True)
class StudyInfo:
    title: str
    description: str = ""  # the teacher's explanation, shown (escaped) in the report section
    kind: str = field(default="sweep", metadata={"choices": STUDY_KINDS})


@dataclass(frozen=True, kw_only=True)
class CellSpec:
    """One ``[[cells]]`` entry (a ``grid`` makes several cells of it)."""

    label: str
    task: str
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    save_weights: bool = False
    profiles: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # one line about this variant, shown in the report's table


@dataclass(frozen=True, kw_only=True)
class StudyFile:
    study: StudyInfo
    cells: tuple[CellSpec, ...]
    profiles: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyCell:
    """One expanded, validated cell: run once per backend."""

    label: str
    group: str  # the [[cells]] label it came from (grid cells share it)
    index: int  # position of its [[cells]] entry
    task: str  # the task's name (file stem)
    task_path: Path
    overrides: dict[str, Any]  # everything but a reference, in application order
    grid: dict[str, Any]
    save_weights: bool
    reference: str | None  # the label whose checkpoint ``model.init_from`` names ("@label")
    note: str = ""


@dataclass(frozen=True)
class Study:
    name: str
    source: str
    info: StudyInfo
    cells: tuple[StudyCell, ...]  # in dependency order
    profile: str | None = None


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.1}}`` (TOML's unquoted dotted keys) -> ``{"optimizer.lr": 0.1}``."""
    out = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[ALIASES.get(dotted, dotted)] = value
    return out


def _profile_table(table: dict[str, Any], profile: str | None, source: str, key: str,
                   required: bool) -> dict[str, Any]:
    if not profile:
        return {}
    if profile not in table:
        if required:
            known = ["full", *table]
            raise SpecError(source, key, f"no profile {profile!r}; {suggest(profile, known)} "
                            f"(add [{key}.{profile}] to the study)")
        return {}
    value = table[profile]
    if not isinstance(value, dict):
        raise SpecError(source, f"{key}.{profile}", "expected a table of KEY = VALUE overrides")
    return _flatten(value)


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _grid_combos(cell: CellSpec, source: str, key: str) -> list[dict[str, Any]]:
    axes = []
    for name, values in _flatten(cell.grid).items():
        if not isinstance(values, list) or not values:
            raise SpecError(source, f"{key}.grid.{name}", f"expected a non-empty list of values, got "
                            f"{values!r}; write e.g. grid = {{ \"{name}\" = [0.1, 0.01] }}")
        axes.append([(name, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _label(template: str, combo: dict[str, Any], source: str, key: str) -> str:
    if not combo:
        return template
    values = {_short(k): v for k, v in combo.items()}
    if "{" in template:
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            raise SpecError(source, f"{key}.label", f"{template!r} uses a placeholder the grid does not "
                            f"fill ({exc}); use {', '.join('{' + k + '}' for k in values)}") from None
    extra = " ".join(f"{k}={v}" for k, v in values.items())
    return f"{template} {extra}".strip()


def _task_path(task: str, registry, study_source: str, key: str) -> Path:
    if task.endswith(".toml") or "/" in task:
        path = Path(task) if Path(task).is_absolute() else Path(study_source).parent / task
        if not path.is_file():
            raise SpecError(study_source, key, f"no task file {str(path)!r}; give a task name from "
                            "`bench list tasks` or a .toml path relative to the study file")
        return path.resolve()
    try:
        return Path(registry.get_task_file(task)).resolve()
    except UnknownNameError:
        raise SpecError(study_source, key, f"unknown task {task!r}; "
                        f"{suggest(task, registry.task_files)} (see `bench list tasks`)") from None


def _spec_error_text(exc: SpecError) -> str:
    """The message of a `SpecError` without its ``source [key]:`` prefix."""
    where = f"{exc.source} [{exc.key}]" if exc.key else exc.source
    return str(exc).removeprefix(f"{where}: ")


def load_study(path: str | Path, registry, profile: str | None = None,
               overrides: dict[str, Any] | None = None) -> Study:
    """Read and validate a study file; expand grids; resolve and order ``@label`` references.

    Every cell's task is validated with its overrides (`fwbench.spec.task_from_dict`), so a bad key
    or value fails here, before anything runs. Raises `SpecError` (one line: file, key, fix).
    """
    path = Path(path)
    source = str(path)
    raw = read_toml(path)
    spec = build(StudyFile, raw, source)
    profile = None if profile in (None, "full") else profile
    study_profile = _profile_table(spec.profiles, profile, source, "profiles", required=True)
    if not spec.cells:
        raise SpecError(source, "cells", "the study has no cells; add at least one [[cells]] entry")

    expanded: list[StudyCell] = []
    seen: dict[str, str] = {}
    for i, cell in enumerate(spec.cells):
        key = f"cells[{i}]"
        task_path = _task_path(cell.task, registry, source, f"{key}.task")
        for combo in _grid_combos(cell, source, key):
            label = _label(cell.label, combo, source, key)
            if not label.strip():
                raise SpecError(source, f"{key}.label", "a cell needs a non-empty label")
            if label in seen:
                raise SpecError(source, f"{key}.label", f"label {label!r} is used twice (also by {seen[label]}); "
                                "give each cell its own label")
            seen[label] = key
            merged = {**_flatten(cell.set), **combo, **study_profile,
                      **_profile_table(cell.profiles, profile, source, f"{key}.profiles", required=False),
                      **_flatten(overrides or {})}
            value = merged.pop(REFERENCE_KEY, None)
            reference = None
            if isinstance(value, str) and value.startswith("@"):
                reference = value[1:]
            elif value is not None:
                merged[REFERENCE_KEY] = value
            expanded.append(StudyCell(label, cell.label, i, task_path.stem, task_path, merged, combo,
                                      cell.save_weights, reference, cell.note))

    by_label = {c.label: c for c in expanded}
    for cell in expanded:
        key = f"cells[{cell.index}].set.{REFERENCE_KEY}"
        if cell.reference is None:
            continue
        target = by_label.get(cell.reference)
        savers = [c.label for c in expanded if c.save_weights]
        if target is None:
            raise SpecError(source, key, f"'@{cell.reference}' names no cell; use @LABEL of a cell with "
                            f"save_weights = true ({', '.join(savers) or 'none yet'})")
        if target is cell:
            raise SpecError(source, key, f"cell {cell.label!r} cannot start from its own weights; "
                            "name an earlier cell")
        if not target.save_weights:
            raise SpecError(source, key, f"cell {target.label!r} does not save its weights; add "
                            "save_weights = true to it")

    runs: dict[str, str] = {}
    for cell in expanded:  # two cells that would run the very same thing (and share a cell id)
        what = json.dumps([cell.task, cell.overrides, cell.reference], sort_keys=True, default=str)
        if what in runs:
            raise SpecError(source, f"cells[{cell.index}]", f"cells {runs[what]!r} and {cell.label!r} run the same "
                            "task with the same settings; change one of them or drop it")
        runs[what] = cell.label

    for cell in expanded:  # validate every task with its overrides (a reference left out)
        raw_task = read_toml(cell.task_path)
        if task_family(raw_task, str(cell.task_path)) != "train":
            raise SpecError(source, f"cells[{cell.index}].task", f"task {cell.task!r} is a microbenchmark; "
                            "a study's cells must be training tasks")
        try:
            task = task_from_dict(raw_task, str(cell.task_path), cell.overrides, None, default_name=cell.task)
            _check_model(task, registry)
        except SpecError as exc:
            raise SpecError(source, f"cells[{cell.index}]", f"cell {cell.label!r} (task {cell.task}): "
                            f"[{exc.key}] {_spec_error_text(exc)}") from None

    return Study(path.stem, source, spec.study, tuple(_ordered(expanded, source)), profile)


def _check_model(task, registry) -> None:
    """Shape-check the model on its dataset's sample shape and classes (no data is loaded), so
    a head that does not fit the classes or a bad ``model.frozen`` fails before anything runs."""
    from ..model import analyze

    dataset = registry.datasets.get(task.dataset.name)
    if dataset is None:
        raise SpecError(task.source, "dataset.name", f"unknown dataset {task.dataset.name!r}; "
                        f"{suggest(task.dataset.name, registry.datasets)} (see `bench list datasets`)")
    synthetic_shape = task.dataset.name == "synthetic" and task.dataset.shape
    shape = tuple(task.dataset.shape) if synthetic_shape else tuple(dataset.input_shape)
    classes = len(task.dataset.classes) or dataset.num_classes
    analyze(task.model, shape, classes, task.source)


def _ordered(cells: list[StudyCell], source: str) -> list[StudyCell]:
    """Cells in file order, except that a cell comes after the cell whose weights it starts from."""
    done: list[StudyCell] = []
    placed: set[str] = set()
    pending = list(cells)
    while pending:
        ready = [c for c in pending if c.reference is None or c.reference in placed]
        if not ready:
            labels = ", ".join(repr(c.label) for c in pending)
            raise SpecError(source, "cells", f"cells {labels} start from each other's weights in a cycle; "
                            "break the cycle")
        first = ready[0]
        done.append(first)
        placed.add(first.label)
        pending.remove(first)
    return done


def list_rows(registry) -> list[tuple[str, str, str, str, str]]:
    """``bench list studies``: (name, kind, cells, title, file) per registered study."""
    rows = []
    for name, path in sorted(registry.study_files.items()):
        try:
            raw = read_toml(path)
            info = raw.get("study") or {}
            count = 0
            for cell in raw.get("cells") or []:
                grid = _flatten(cell.get("grid") or {}) if isinstance(cell, dict) else {}
                count += math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values())
            rows.append((name, str(info.get("kind", "sweep")), str(count), str(info.get("title", "")), str(path)))
        except SpecError as exc:
            rows.append((name, "?", "?", f"[red]broken: {exc}[/]", str(path)))
    return rows
